"""Networks: shapes per scale, reference parameter counts and key names, injection, errors."""

import functools

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from sr_gan.archs import (
    RRDB,
    ResidualDenseBlock,
    RRDBNet,
    SRGANDiscriminator,
    SRResNet,
    UNetDiscriminatorSN,
    VGGStyleDiscriminator,
    count_parameters,
)
from sr_gan.errors import UserError

TINY_SRRESNET = {"num_features": 8, "num_blocks": 2}
TINY_RRDBNET = {"num_features": 8, "num_blocks": 1, "growth_channels": 4}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _assert_all_parameters_get_gradients(net: nn.Module, x: torch.Tensor) -> None:
    net(x).square().mean().backward()
    for name, param in net.named_parameters():
        assert param.grad is not None, f"no gradient reached {name}"
        assert torch.isfinite(param.grad).all(), f"non-finite gradient in {name}"
        assert param.grad.abs().sum() > 0, f"zero gradient in {name}"


# --- SRResNet -------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_srresnet_output_shape(scale: int) -> None:
    net = SRResNet(scale=scale, **TINY_SRRESNET)
    assert net(torch.rand(2, 3, 8, 6)).shape == (2, 3, 8 * scale, 6 * scale)


def test_srresnet_parameter_count_matches_paper() -> None:
    assert count_parameters(SRResNet()) == 1_549_462
    per_channel_prelu = functools.partial(nn.PReLU, num_parameters=64)
    assert count_parameters(SRResNet(act_layer=per_channel_prelu)) == 1_550_659


def test_srresnet_structure_at_x4() -> None:
    net = SRResNet()
    assert net.conv_first.kernel_size == (9, 9) and net.conv_last.kernel_size == (9, 9)
    assert len(net.body) == 16
    assert sum(isinstance(m, nn.PixelShuffle) and m.upscale_factor == 2 for m in net.modules()) == 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 2 * 16 + 1


def test_srresnet_x3_uses_one_pixel_shuffle_of_3() -> None:
    shuffles = [m for m in SRResNet(scale=3, **TINY_SRRESNET).modules() if isinstance(m, nn.PixelShuffle)]
    assert [m.upscale_factor for m in shuffles] == [3]


def test_srresnet_without_norm_has_no_batchnorm() -> None:
    net = SRResNet(norm_layer=None, **TINY_SRRESNET)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert all(m.bias is not None for m in net.modules() if isinstance(m, nn.Conv2d))
    # Without BN the network is the same function in train and eval mode.
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(net.train()(x), net.eval()(x))


def test_srresnet_norm_layer_accepts_partial() -> None:
    net = SRResNet(norm_layer=functools.partial(nn.BatchNorm2d, momentum=0.5), **TINY_SRRESNET)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2 * 2 + 1 and all(m.momentum == 0.5 for m in norms)


def test_srresnet_act_layer_injection() -> None:
    net = SRResNet(act_layer=functools.partial(nn.LeakyReLU, 0.2), **TINY_SRRESNET)
    assert not any(isinstance(m, nn.PReLU) for m in net.modules())
    slopes = [m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(slopes) == 1 + 2 + 2 and set(slopes) == {0.2}  # head, one per block, two upsamplers


def test_srresnet_long_skip_carries_head_features() -> None:
    net = SRResNet(norm_layer=None, **TINY_SRRESNET)
    with torch.no_grad():  # silence body + conv_body: only the long skip from the head remains
        net.conv_body.weight.zero_()
        net.conv_body.bias.zero_()
    out = net(torch.rand(2, 3, 8, 8))
    assert not torch.allclose(out[0], out[1])


def test_srresnet_residual_convs_use_scaled_init() -> None:
    net = SRResNet()
    expected_std = 0.1 * (2 / (64 * 9)) ** 0.5  # kaiming normal x 0.1
    assert net.body[0].conv1.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert net.conv_body.weight.std().item() > 3 * expected_std  # PyTorch default init


def test_srresnet_rejects_unsupported_scale() -> None:
    with pytest.raises(UserError, match=r"scale=5.*data\.scale"):
        SRResNet(scale=5)


def test_srresnet_gradients_flow() -> None:
    _assert_all_parameters_get_gradients(SRResNet(**TINY_SRRESNET), torch.rand(2, 3, 8, 8))


# --- RRDBNet --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("scale", "first_in"), [(1, 48), (2, 12), (4, 3), (8, 3)])
def test_rrdbnet_output_shape(scale: int, first_in: int) -> None:
    net = RRDBNet(scale=scale, **TINY_RRDBNET)
    assert net.conv_first.in_channels == first_in
    assert net(torch.rand(2, 3, 8, 12)).shape == (2, 3, 8 * scale, 12 * scale)


def test_rrdbnet_parameter_count_matches_reference() -> None:
    assert count_parameters(RRDBNet()) == 16_697_987


def test_rrdbnet_state_dict_keys_match_reference() -> None:
    convs = ["conv_first"]
    convs += [f"body.0.rdb{k}.conv{j}" for k in (1, 2, 3) for j in range(1, 6)]
    convs += ["conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"]
    expected = [f"{conv}.{p}" for conv in convs for p in ("weight", "bias")]
    assert list(RRDBNet(num_blocks=1).state_dict()) == expected


def test_rrdbnet_x8_adds_conv_up3_only() -> None:
    extra = set(RRDBNet(scale=8, **TINY_RRDBNET).state_dict()) - set(RRDBNet(**TINY_RRDBNET).state_dict())
    assert extra == {"conv_up3.weight", "conv_up3.bias"}


@pytest.mark.parametrize("scale", [3, 16])
def test_rrdbnet_rejects_unsupported_scale(scale: int) -> None:
    with pytest.raises(UserError, match=rf"scale={scale}.*data\.scale"):
        RRDBNet(scale=scale)


def test_rdb_residual_scaling_is_0_2() -> None:
    rdb = ResidualDenseBlock(num_features=8, growth_channels=4)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        rdb.conv5.weight.zero_()
        torch.testing.assert_close(rdb(x), x)  # zero last conv: identity
        rdb.conv5.bias.fill_(1.0)
    torch.testing.assert_close(rdb(x), x + 0.2)  # the residual x5 = 1 enters scaled by 0.2


def test_rrdb_residual_scaling_is_0_2() -> None:
    rrdb = RRDB(num_features=8, growth_channels=4)
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        for rdb in (rrdb.rdb1, rrdb.rdb2, rrdb.rdb3):
            rdb.conv5.weight.zero_()
    torch.testing.assert_close(rrdb(x), x * 0.2 + x)  # identity RDBs: x · beta + x


def test_rrdbnet_init_scales_only_rdb_convs() -> None:
    net = RRDBNet(num_blocks=1)
    expected_std = 0.1 * (2 / (64 * 9)) ** 0.5  # kaiming normal (fan_in 64·3·3) x 0.1
    assert net.body[0].rdb1.conv1.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert net.body[0].rdb1.conv1.bias.abs().sum() == 0
    assert net.conv_body.weight.std().item() > 3 * expected_std  # PyTorch default init


def test_rrdbnet_output_is_not_clamped() -> None:
    net = RRDBNet(**TINY_RRDBNET)
    with torch.no_grad():
        net.conv_last.bias.fill_(5.0)
    assert net(torch.rand(1, 3, 4, 4)).min() > 1


def test_rrdbnet_gradients_flow() -> None:
    _assert_all_parameters_get_gradients(RRDBNet(**TINY_RRDBNET), torch.rand(2, 3, 8, 8))


# --- Discriminators -------------------------------------------------------------------------------


def test_srgan_discriminator_shape_and_structure() -> None:
    net = SRGANDiscriminator(num_features=4, input_size=32)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 1)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.out_channels, c.stride[0]) for c in convs] == [
        (4, 1), (4, 2), (8, 1), (8, 2), (16, 1), (16, 2), (32, 1), (32, 2)
    ]  # fmt: skip
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 7
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(32 * 2 * 2, 1024), (1024, 1)]


def test_srgan_discriminator_outputs_raw_logits() -> None:
    net = SRGANDiscriminator(num_features=4, input_size=32)
    with torch.no_grad():
        net.classifier[-1].bias.fill_(10.0)
    assert net(torch.rand(2, 3, 32, 32)).min() > 1  # no sigmoid


def test_vgg_discriminator_parameter_count_and_keys() -> None:
    net = VGGStyleDiscriminator()
    assert count_parameters(net) == 14_499_401
    expected = {"conv0_0", "conv0_1", "bn0_1", "linear1", "linear2"}
    expected |= {f"{kind}{k}_{j}" for kind in ("conv", "bn") for k in range(1, 5) for j in (0, 1)}
    assert {key.rsplit(".", 1)[0] for key in net.state_dict()} == expected
    assert net.conv0_0.bias is not None and net.conv0_1.bias is None and net.conv4_1.bias is None


def _reference_vgg_shapes(num_feat: int, input_size: int) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of BasicSR's VGGStyleDiscriminator (128 or 256 px), written from its layout."""
    channels = [num_feat, num_feat * 2, num_feat * 4, num_feat * 8, num_feat * 8, num_feat * 8]
    stages = 6 if input_size == 256 else 5  # conv5_*/bn5_* exist at 256 px only
    shapes = {
        "conv0_0.weight": (num_feat, 3, 3, 3),
        "conv0_0.bias": (num_feat,),
        "conv0_1.weight": (num_feat,) * 2 + (4, 4),
    }
    shapes |= {f"bn0_1.{p}": (num_feat,) for p in ("weight", "bias", "running_mean", "running_var")}
    for k in range(1, stages):
        c_in, c_out = channels[k - 1], channels[k]
        shapes |= {f"conv{k}_0.weight": (c_out, c_in, 3, 3), f"conv{k}_1.weight": (c_out, c_out, 4, 4)}
        for bn in (f"bn{k}_0", f"bn{k}_1"):
            shapes |= {f"{bn}.{p}": (c_out,) for p in ("weight", "bias", "running_mean", "running_var")}
    shapes |= {"linear1.weight": (100, num_feat * 8 * 4 * 4), "linear1.bias": (100,)}
    return shapes | {"linear2.weight": (1, 100), "linear2.bias": (1,)}


@pytest.mark.parametrize(("input_size", "parameters"), [(128, 14_499_401), (256, 21_055_049)])
def test_vgg_discriminator_has_the_reference_layout(input_size: int, parameters: int) -> None:
    """128 px is unchanged; 256 px adds stage 5 and keeps 4x4 features, so reference weights load."""
    net = VGGStyleDiscriminator(input_size=input_size)
    # 256 px: 14,499,401 + conv5_0 (512·512·9) + conv5_1 (512·512·16) + 2 BN (2·512 each) = 21,055,049
    assert count_parameters(net) == parameters
    shapes = {key: tuple(value.shape) for key, value in net.state_dict().items() if "num_batches" not in key}
    assert shapes == _reference_vgg_shapes(64, input_size)
    reference = {key: torch.randn(shape) for key, shape in _reference_vgg_shapes(4, input_size).items()}
    tiny = VGGStyleDiscriminator(num_features=4, input_size=input_size)
    loaded = tiny.load_state_dict(reference, strict=False)
    assert not loaded.unexpected_keys and all(key.endswith("num_batches_tracked") for key in loaded.missing_keys)
    assert tiny.eval()(torch.rand(2, 3, input_size, input_size)).shape == (2, 1)


@pytest.mark.parametrize("input_size", [32, 64, 128, 256])
def test_vgg_discriminator_output_shape(input_size: int) -> None:
    net = VGGStyleDiscriminator(num_features=4, input_size=input_size)
    assert net(torch.rand(2, 3, input_size, input_size)).shape == (2, 1)


@pytest.mark.parametrize(
    ("network", "built", "got"),
    [(VGGStyleDiscriminator, 128, 64), (SRGANDiscriminator, 96, 128)],
)
def test_fixed_size_discriminators_reject_other_sizes(network: type[nn.Module], built: int, got: int) -> None:
    net = network(num_features=4, input_size=built)
    message = (
        f"{network.__name__} was built for {built}x{built} inputs but got {got}x{got}: "
        f"set discriminator.input_size to data.patch_size ({got})"
    )
    with pytest.raises(UserError) as error:
        net(torch.rand(1, 3, got, got))
    assert str(error.value) == message


@pytest.mark.parametrize(("network", "bad_size"), [(VGGStyleDiscriminator, 48), (SRGANDiscriminator, 40)])
def test_fixed_size_discriminators_reject_bad_input_size(network: type[nn.Module], bad_size: int) -> None:
    with pytest.raises(UserError, match=rf"input_size={bad_size}.*data\.patch_size"):
        network(input_size=bad_size)


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
@pytest.mark.parametrize("skip_connection", [True, False])
def test_unet_discriminator_per_pixel_logits(size: tuple[int, int], skip_connection: bool) -> None:
    net = UNetDiscriminatorSN(num_features=4, skip_connection=skip_connection)
    assert net(torch.rand(2, 3, *size)).shape == (2, 1, *size)


def test_unet_discriminator_uses_spectral_norm() -> None:
    net = UNetDiscriminatorSN(num_features=4)
    normed = [k for k in range(10) if parametrize.is_parametrized(getattr(net, f"conv{k}"), "weight")]
    assert normed == list(range(1, 9))  # not the first and last convs


def test_unet_discriminator_skip_connection_changes_output() -> None:
    net = UNetDiscriminatorSN(num_features=4).eval()
    x = torch.rand(1, 3, 16, 16)
    with_skip = net(x)
    net.skip_connection = False
    assert not torch.allclose(with_skip, net(x))


def test_unet_discriminator_rejects_size_not_multiple_of_8() -> None:
    with pytest.raises(UserError, match=r"36x32.*data\.patch_size"):
        UNetDiscriminatorSN(num_features=4)(torch.rand(1, 3, 36, 32))


@pytest.mark.parametrize(
    ("net", "size"),
    [
        (SRGANDiscriminator(num_features=4, input_size=32), 32),
        (VGGStyleDiscriminator(num_features=4, input_size=32), 32),
        (UNetDiscriminatorSN(num_features=4), 16),
    ],
    ids=["srgan", "vgg", "unet"],
)
def test_discriminator_gradients_flow(net: nn.Module, size: int) -> None:
    _assert_all_parameters_get_gradients(net, torch.rand(2, 3, size, size))
