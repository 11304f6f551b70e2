"""Real-ESRGAN weight files: the U-Net SN discriminator (old spectral-norm keys) and RealESRGAN_x4plus G."""

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sr_gan.archs import RRDBNet, UNetDiscriminatorSN
from sr_gan.errors import UserError
from sr_gan.weights import load_generator
from sr_gan.weights.discriminator import load_discriminator_state, spectral_norm_to_parametrized


class ReferenceUNetDiscriminatorSN(nn.Module):
    """The reference's layout (Real-ESRGAN discriminator_arch.py), old-style spectral norm, for the test.

    conv0 plain; conv1-3 4x4 stride 2, conv4-8 3x3, all spectral-normed without bias; conv9 plain.
    """

    def __init__(self, num_feat: int, skip_connection: bool = True) -> None:
        super().__init__()
        with warnings.catch_warnings():  # torch deprecates the old spectral_norm; the reference still uses it
            warnings.simplefilter("ignore")
            norm = nn.utils.spectral_norm
            f = num_feat
            self.skip_connection = skip_connection
            self.conv0 = nn.Conv2d(3, f, 3, 1, 1)
            self.conv1 = norm(nn.Conv2d(f, f * 2, 4, 2, 1, bias=False))
            self.conv2 = norm(nn.Conv2d(f * 2, f * 4, 4, 2, 1, bias=False))
            self.conv3 = norm(nn.Conv2d(f * 4, f * 8, 4, 2, 1, bias=False))
            self.conv4 = norm(nn.Conv2d(f * 8, f * 4, 3, 1, 1, bias=False))
            self.conv5 = norm(nn.Conv2d(f * 4, f * 2, 3, 1, 1, bias=False))
            self.conv6 = norm(nn.Conv2d(f * 2, f, 3, 1, 1, bias=False))
            self.conv7 = norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
            self.conv8 = norm(nn.Conv2d(f, f, 3, 1, 1, bias=False))
            self.conv9 = nn.Conv2d(f, 1, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def act(t: torch.Tensor) -> torch.Tensor:
            return F.leaky_relu(t, 0.2)

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)

        x0 = act(self.conv0(x))
        x1 = act(self.conv1(x0))
        x2 = act(self.conv2(x1))
        x3 = act(self.conv3(x2))
        x4 = act(self.conv4(up(x3))) + (x2 if self.skip_connection else 0)
        x5 = act(self.conv5(up(x4))) + (x1 if self.skip_connection else 0)
        x6 = act(self.conv6(up(x5))) + (x0 if self.skip_connection else 0)
        return self.conv9(act(self.conv8(act(self.conv7(x6)))))


@pytest.mark.parametrize("skip_connection", [True, False])
def test_unet_discriminator_loads_reference_file_and_matches_in_eval(tmp_path: Path, skip_connection: bool) -> None:
    torch.manual_seed(0)
    reference = ReferenceUNetDiscriminatorSN(4, skip_connection)
    for _ in range(3):  # training-mode forwards run power iterations: u and v move off their start
        reference(torch.rand(2, 3, 16, 16))
    state = reference.state_dict()
    assert {"conv1.weight_orig", "conv1.weight_u", "conv1.weight_v", "conv0.weight"} <= state.keys()
    path = tmp_path / "RealESRGAN_x4plus_netD.pth"
    torch.save({"params": state}, path)  # BasicSR's file layout

    ours = UNetDiscriminatorSN(num_features=4, skip_connection=skip_connection)
    ours.load_state_dict(load_discriminator_state(path), strict=True)
    x = torch.rand(2, 3, 24, 32)
    with torch.no_grad():
        expected, got = reference.eval()(x), ours.eval()(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # Without the key conversion the reference file does not load at all.
    with pytest.raises(RuntimeError, match="weight_orig"):
        UNetDiscriminatorSN(num_features=4).load_state_dict(state, strict=True)


def test_spectral_norm_key_conversion_is_a_pure_rename() -> None:
    u, v, w, b = (torch.rand(2) for _ in range(4))
    converted = spectral_norm_to_parametrized({"c.weight_u": u, "c.weight_v": v, "c.weight_orig": w, "d.bias": b})
    assert converted.keys() == {
        "c.parametrizations.weight.0._u",
        "c.parametrizations.weight.0._v",
        "c.parametrizations.weight.original",
        "d.bias",
    }
    assert converted["c.parametrizations.weight.0._u"] is u and converted["d.bias"] is b


def test_discriminator_state_from_our_checkpoint_and_bad_files(tmp_path: Path) -> None:
    net = UNetDiscriminatorSN(num_features=4)
    state_dict = {f"discriminator.{k}": v for k, v in net.state_dict().items()} | {"generator.x": torch.ones(1)}
    torch.save({"state_dict": state_dict}, tmp_path / "last.ckpt")
    assert load_discriminator_state(tmp_path / "last.ckpt").keys() == net.state_dict().keys()
    torch.save({"state_dict": {"generator.x": torch.ones(1)}}, tmp_path / "psnr.ckpt")
    with pytest.raises(UserError, match="psnr.ckpt: the checkpoint has no discriminator"):
        load_discriminator_state(tmp_path / "psnr.ckpt")


def test_discriminator_state_from_a_plain_state_dict_or_safetensors_and_a_file_of_none(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    net = UNetDiscriminatorSN(num_features=4)
    torch.save(net.state_dict(), tmp_path / "plain.pth")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "d.safetensors")
    for name in ("plain.pth", "d.safetensors"):
        state = load_discriminator_state(tmp_path / name)
        assert state.keys() == net.state_dict().keys()
        assert all(torch.equal(state[key], value) for key, value in net.state_dict().items())
    torch.save({"optimizer": {"lr": 1e-4}, "epoch": 3}, tmp_path / "opt.pth")
    with pytest.raises(
        UserError, match=r"opt\.pth: no discriminator weights found \(top-level keys \['optimizer', 'epoch'\]\)"
    ):
        load_discriminator_state(tmp_path / "opt.pth")


def test_discriminator_file_with_params_and_params_ema_gives_params(tmp_path: Path) -> None:
    """BasicSR's `params` is the trained D; `params_ema` is read only when it is all the file holds."""
    torch.manual_seed(0)
    params, params_ema = UNetDiscriminatorSN(num_features=4), UNetDiscriminatorSN(num_features=4)
    path = tmp_path / "netD.pth"
    for stored, expected in (
        ({"params_ema": params_ema, "params": params}, params),
        ({"params_ema": params_ema}, params_ema),
    ):
        torch.save({key: net.state_dict() for key, net in stored.items()}, path)
        state = load_discriminator_state(path)
        assert state.keys() == expected.state_dict().keys()
        assert all(torch.equal(state[key], value) for key, value in expected.state_dict().items())


def test_realesrgan_x4plus_style_generator_file_loads(tmp_path: Path) -> None:
    """RealESRGAN_x4plus.pth holds {'params_ema': RRDBNet x4 with 23 RRDBs}: config inferred, EMA taken."""
    torch.manual_seed(0)
    ema, raw = (RRDBNet(num_features=4, num_blocks=23, growth_channels=2, scale=4).eval() for _ in range(2))
    assert any(key.startswith("body.22.rdb3.conv5") for key in ema.state_dict())
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": ema.state_dict(), "params": raw.state_dict()}, path)
    loaded, info = load_generator(path)
    assert info["config"]["num_blocks"] == 23 and info["scale"] == 4 and info["source"] == "basicsr" and info["ema"]
    x = torch.rand(1, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(loaded(x), ema(x))
    torch.save({"params_ema": ema.state_dict()}, path)  # the released file has params_ema only
    only_ema = load_generator(path, prefer_ema=False)[0].state_dict()
    assert all(torch.equal(only_ema[key], value) for key, value in ema.state_dict().items())
