"""Loss terms: VGG19 perceptual loss (layer mapping, value, weights, freezing, AMP, errors) and the
adversarial losses (values against the written-out formulas, gradients, per-pixel logits).

No network here: the VGG weights are a random torchvision vgg19 saved by the tests, and the
torchvision download is monkeypatched.
"""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torchvision.models.vgg import cfgs, make_layers
from torchvision.transforms.functional import normalize

from sr_gan.errors import UserError
from sr_gan.losses import (
    VGG19_LAYER_INDEX,
    AdversarialLoss,
    HingeGANLoss,
    LSGANLoss,
    PerceptualLoss,
    RelativisticGANLoss,
    VanillaGANLoss,
)

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


# ---------------------------------------------------------------------------------- perceptual
@pytest.fixture(scope="module")
def reference_vgg() -> nn.Sequential:
    """torchvision's ``vgg19().features``, built by torchvision's own builder and initialised as
    ``VGG.__init__`` does (the classifier, 4 s to build, is never needed here)."""
    torch.manual_seed(0)
    features = make_layers(cfgs["E"])
    for layer in features:
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return features.eval()


@pytest.fixture(scope="module")
def vgg_file(reference_vgg: nn.Sequential, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A .pth laid out like a torchvision vgg19 state_dict (``features.*`` + ``classifier.*``)."""
    state = {f"features.{k}": v for k, v in reference_vgg.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)  # stand-in: the 400 MB classifier is ignored anyway
    path = tmp_path_factory.mktemp("vgg") / "vgg19.pth"
    torch.save(state, path)
    return str(path)


@pytest.fixture
def images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)


def _reference_maps(vgg: nn.Sequential, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Each map by slicing torchvision's features by hand: ``features[: index + 1](normalize(x))``."""
    with torch.no_grad():
        return {n: vgg[: VGG19_LAYER_INDEX[n] + 1](normalize(x, MEAN, STD)) for n in names}


def test_layer_index_names_torchvision_layers(reference_vgg: nn.Sequential) -> None:
    assert len(VGG19_LAYER_INDEX) == len(reference_vgg) == 37
    kinds = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}
    for name, index in VGG19_LAYER_INDEX.items():
        assert isinstance(reference_vgg[index], kinds[name[:4]]), name
    assert (VGG19_LAYER_INDEX["relu2_2"], VGG19_LAYER_INDEX["conv5_4"]) == (8, 34)
    assert (VGG19_LAYER_INDEX["relu5_4"], VGG19_LAYER_INDEX["pool5"]) == (35, 36)
    assert reference_vgg[VGG19_LAYER_INDEX["conv2_1"]].in_channels == 64  # block 2 starts after pool1


def test_features_equal_manual_torchvision_slices(reference_vgg, vgg_file, images) -> None:
    names = ["relu2_2", "conv4_4", "conv5_4", "relu5_4"]
    loss = PerceptualLoss(layers=names, weights=vgg_file)
    assert len(loss.vgg) == 36  # truncated after relu5_4
    sr, _ = images
    maps = loss.features(sr)
    expected = _reference_maps(reference_vgg, sr, names)
    for name in names:
        torch.testing.assert_close(maps[name], expected[name], rtol=1e-5, atol=1e-5)
    assert maps["conv5_4"].min() < 0 and maps["conv4_4"].min() < 0  # before activation
    assert maps["relu5_4"].min() >= 0
    torch.testing.assert_close(maps["relu5_4"], maps["conv5_4"].relu())


def test_esrgan_default_truncates_at_conv5_4(vgg_file) -> None:
    loss = PerceptualLoss(weights=vgg_file)
    assert loss.layer_weights == {"conv5_4": 1.0}
    assert isinstance(loss.criterion, nn.L1Loss)
    assert len(loss.vgg) == 35 and isinstance(loss.vgg[-1], nn.Conv2d)


@pytest.mark.parametrize("criterion", [nn.L1Loss(), nn.MSELoss()], ids=["l1", "mse"])
def test_loss_value_equals_hand_computation(reference_vgg, vgg_file, images, criterion) -> None:
    layer_weights = {"relu2_2": 0.5, "conv3_1": 2.0}
    scale = 1 / 12.75
    loss = PerceptualLoss(
        layers=list(layer_weights),
        layer_weights=list(layer_weights.values()),
        criterion=criterion,
        feature_scale=scale,
        weights=vgg_file,
    )
    sr, hr = images
    sr_maps = _reference_maps(reference_vgg, sr, list(layer_weights))
    hr_maps = _reference_maps(reference_vgg, hr, list(layer_weights))
    expected = 0.0
    for name, w in layer_weights.items():
        diff = (sr_maps[name] - hr_maps[name]).double().numpy()
        if isinstance(criterion, nn.L1Loss):
            expected += w * scale * np.abs(diff).mean()
        else:
            expected += w * scale**2 * (diff**2).mean()  # SRGAN: 1/12.75^2 ~ 0.006
    assert loss(sr, hr).item() == pytest.approx(expected, rel=1e-5)
    assert loss(hr, hr).item() == 0.0


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("prefix", ["features.", ""], ids=["whole-model", "features-only"])
def test_weights_file_round_trip(reference_vgg, images, tmp_path, suffix, prefix) -> None:
    state = {f"{prefix}{k}": v.contiguous() for k, v in reference_vgg.state_dict().items()}
    path = tmp_path / f"vgg19{suffix}"
    if suffix == ".safetensors":
        save_file(state, path)
    else:
        torch.save(state, path)
    loss = PerceptualLoss(layers=["conv5_4"], weights=str(path))
    for key, value in loss.vgg.state_dict().items():
        assert torch.equal(value, reference_vgg.state_dict()[key]), key
    sr, _ = images
    torch.testing.assert_close(loss.features(sr)["conv5_4"], _reference_maps(reference_vgg, sr, ["conv5_4"])["conv5_4"])


def test_pretrained_takes_torchvision_imagenet_weights(reference_vgg, monkeypatch) -> None:
    state = {f"features.{k}": v for k, v in reference_vgg.state_dict().items()}
    requested: list[str] = []

    def fake_download(url: str, *args, **kwargs) -> dict[str, torch.Tensor]:
        requested.append(url)
        with torch.device("meta"):  # classifier keys and shapes included, without building its weights
            model_state = torchvision.models.vgg19().state_dict()
        return model_state | state

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", fake_download)
    loss = PerceptualLoss(layers=["relu2_2"])
    assert requested == [torchvision.models.VGG19_Weights.IMAGENET1K_V1.url]
    assert torch.equal(loss.vgg[0].weight, reference_vgg[0].weight)


def test_frozen_eval_and_gradient_only_to_sr(vgg_file, images) -> None:
    loss = PerceptualLoss(layers=["conv3_1"], weights=vgg_file)
    parent = nn.ModuleDict({"perceptual": loss}).train()
    assert parent.training and not any(m.training for m in loss.modules())
    assert not any(p.requires_grad for p in loss.parameters())
    sr, hr = (t.clone().requires_grad_() for t in images)
    loss(sr, hr).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert hr.grad is None  # HR features are computed without grad
    assert all(p.grad is None for p in loss.parameters())


def test_float32_under_bf16_autocast(vgg_file, images) -> None:
    loss = PerceptualLoss(layers=["relu2_2", "conv3_1"], weights=vgg_file)
    sr, hr = (t.bfloat16() for t in images)
    reference = loss(sr.float(), hr.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = loss.features(sr)
        value = loss(sr, hr)
    assert all(m.dtype == torch.float32 for m in maps.values())
    assert value.dtype == torch.float32
    assert torch.equal(value, reference)


def test_unknown_layer_lists_valid_names(vgg_file) -> None:
    with pytest.raises(ValueError, match=r"'conv5_5'.*valid names: conv1_1, relu1_1.*relu5_4, pool5"):
        PerceptualLoss(layers=["conv5_5"], weights=vgg_file)
    with pytest.raises(ValueError, match="loss.perceptual.layers is empty"):
        PerceptualLoss(layers=[], weights=vgg_file)
    with pytest.raises(ValueError, match="2 values for 1 loss.perceptual.layers"):
        PerceptualLoss(layers=["conv5_4"], layer_weights=[1.0, 2.0], weights=vgg_file)


def test_missing_weights_file_names_path_and_key(tmp_path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=rf"{missing}.*loss\.perceptual\.weights"):
        PerceptualLoss(weights=str(missing))


def test_wrong_weights_file_names_key(tmp_path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(UserError, match=r"loss\.perceptual\.weights=.*not a torchvision vgg19"):
        PerceptualLoss(weights=str(path))


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_internet(*args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_internet)


def test_offline_without_fallback_raises_with_fix(offline) -> None:
    with pytest.raises(UserError, match=r"loss\.perceptual\.weights=/path/vgg19\.pth") as info:
        PerceptualLoss(layers=["relu1_1"])
    assert "\n" not in str(info.value)
    assert "allow_random_vgg=true" in str(info.value)  # the key train.yaml has (and schema checks)


@pytest.mark.parametrize(
    "kwargs", [{"allow_random": True}, {"pretrained": False}], ids=["offline-allow-random", "random"]
)
def test_random_vgg_warns_loudly(offline, kwargs) -> None:
    with pytest.warns(UserWarning, match="RANDOM VGG19") as caught:
        loss = PerceptualLoss(layers=["relu1_1"], **kwargs)
    (warning,) = [w for w in caught if "RANDOM VGG19" in str(w.message)]  # once (the CLI logs it to train.log)
    assert "loss.perceptual.weights=" in str(warning.message)
    assert len(loss.vgg) == 2 and loss.random_weights


def test_random_vgg_has_torchvisions_layout_and_conv_init(reference_vgg, offline) -> None:
    """Built without the classifier, yet torchvision's VGG19 features: same layers, Kaiming-normal
    (fan_out, ReLU) conv weights, zero biases."""
    with pytest.warns(UserWarning, match="RANDOM VGG19"):
        loss = PerceptualLoss(layers=["relu5_4"], pretrained=False)
    assert str(loss.vgg) == str(reference_vgg[:36]).replace("ReLU(inplace=True)", "ReLU()")
    for ours in loss.vgg:
        if isinstance(ours, nn.Conv2d):
            fan_out = ours.out_channels * ours.kernel_size[0] * ours.kernel_size[1]
            assert ours.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
            assert abs(ours.weight.mean().item()) < 0.1 * (2 / fan_out) ** 0.5
            assert not ours.bias.any()


# ---------------------------------------------------------------------------------- adversarial
# Hand formulas, written out with numpy: sigma(x) = 1 / (1 + e^-x).
REAL = np.array([1.5, -0.3, 0.2, 2.0])
FAKE = np.array([-1.0, 0.4, -2.5, 0.1])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _hand(loss: str, r: np.ndarray, f: np.ndarray) -> tuple[float, float, float]:
    """(l_d_real, l_d_fake, l_g) from the papers' equations."""
    if loss == "vanilla":
        return (-np.log(_sigmoid(r))).mean(), (-np.log(1 - _sigmoid(f))).mean(), (-np.log(_sigmoid(f))).mean()
    if loss == "ragan":  # ESRGAN Eq. 1-2, each averaged over its two terms as in the authors' code
        d_rf, d_fr = _sigmoid(r - f.mean()), _sigmoid(f - r.mean())
        l_g = 0.5 * ((-np.log(1 - d_rf)).mean() + (-np.log(d_fr)).mean())
        return 0.5 * (-np.log(d_rf)).mean(), 0.5 * (-np.log(1 - d_fr)).mean(), l_g
    if loss == "lsgan":
        return 0.5 * ((r - 1) ** 2).mean(), 0.5 * (f**2).mean(), 0.5 * ((f - 1) ** 2).mean()
    return np.maximum(0, 1 - r).mean(), np.maximum(0, 1 + f).mean(), -f.mean()  # hinge


LOSSES = {
    "vanilla": VanillaGANLoss,
    "ragan": RelativisticGANLoss,
    "lsgan": LSGANLoss,
    "hinge": HingeGANLoss,
}


@pytest.mark.parametrize("shape", [(4, 1), (1, 1, 2, 2)], ids=["per-image", "per-pixel"])
@pytest.mark.parametrize("name", list(LOSSES))
def test_adversarial_values_match_equations(name, shape) -> None:
    loss = LOSSES[name]()
    assert isinstance(loss, AdversarialLoss)
    real = torch.tensor(REAL, dtype=torch.float32).view(shape)
    fake = torch.tensor(FAKE, dtype=torch.float32).view(shape)
    l_d_real, l_d_fake = loss.discriminator_loss(real, fake)
    l_g = loss.generator_loss(real, fake)
    expected = _hand(name, REAL, FAKE)
    for value, want in zip((l_d_real, l_d_fake, l_g), expected, strict=True):
        assert value.shape == ()
        assert value.item() == pytest.approx(want, rel=1e-6)


def test_only_relativistic_needs_real_logits_for_generator() -> None:
    flags = {name: cls.needs_real_logits_for_generator for name, cls in LOSSES.items()}
    assert flags == {"vanilla": False, "ragan": True, "lsgan": False, "hinge": False}
    with pytest.raises(ValueError, match="needs real_logits"):
        RelativisticGANLoss().generator_loss(None, torch.zeros(2, 1))


def test_ragan_generator_gradient_from_both_terms() -> None:
    real = torch.tensor(REAL, requires_grad=True)
    fake = torch.tensor(FAKE, requires_grad=True)
    RelativisticGANLoss().generator_loss(real, fake).backward()
    # d/df_j of 0.5 * [mean_i softplus(r_i - mean f) + mean_j softplus(mean r - f_j)]
    n = len(FAKE)
    from_real_term = -_sigmoid(REAL - FAKE.mean()).mean() / n  # through E[C(x_f)]
    from_fake_term = -(1 - _sigmoid(FAKE - REAL.mean())) / n
    np.testing.assert_allclose(fake.grad.numpy(), 0.5 * (from_real_term + from_fake_term), rtol=1e-6)
    assert abs(from_real_term) > 0.01
    assert real.grad is None  # the real logits are detached in the G loss


def test_ragan_discriminator_mean_is_not_detached() -> None:
    real = torch.tensor(REAL, requires_grad=True)
    fake = torch.tensor(FAKE, requires_grad=True)
    l_d_real, _ = RelativisticGANLoss().discriminator_loss(real, fake)
    l_d_real.backward()
    # d/df_j of 0.5 * mean_i softplus(-(r_i - mean f)) = 0.5 * mean_i (1 - sigma(r_i - mean f)) / n
    want = 0.5 * (1 - _sigmoid(REAL - FAKE.mean())).mean() / len(FAKE)
    np.testing.assert_allclose(fake.grad.numpy(), np.full(len(FAKE), want), rtol=1e-6)


def test_vanilla_generator_is_non_saturating_and_stable() -> None:
    fake = torch.tensor([-30.0, -20.0], requires_grad=True)  # D confidently rejects G(z)
    loss = VanillaGANLoss()
    l_g = loss.generator_loss(None, fake)
    l_g.backward()
    # -log sigma(f) has slope -(1 - sigma(f)) ~ -1; log(1 - sigma(f)) would have ~1e-9.
    np.testing.assert_allclose(fake.grad.numpy(), [-0.5, -0.5], rtol=1e-6)
    assert l_g.item() == pytest.approx(25.0, rel=1e-6)
    big = torch.tensor([100.0, -100.0])
    assert all(torch.isfinite(v) for v in loss.discriminator_loss(big, -big))
