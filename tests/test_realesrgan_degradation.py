"""The degradation modules as the data module calls them: ``lr, hr = degradation(hr, generator=g)``."""

import math
import random
import weakref
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from kornia.enhance import jpeg_codec_differentiable
from omegaconf import OmegaConf
from torch.utils._python_dispatch import TorchDispatchMode

from sr_gan.errors import UserError, exit_on_user_error
from sr_gan.ops import BicubicDegradation, DegradationStage, RealESRGANDegradation, bicubic_degrade
from sr_gan.ops import realesrgan as realesrgan_module
from sr_gan.ops.draws import host_rng
from sr_gan.ops.kernels import GRID, sinc_kernels
from sr_gan.ops.realesrgan import KERNEL_FAMILIES
from sr_gan.ops.resize import RESIZE_MODES
from tests.helpers import reference_kernel, reference_sinc

CONF = Path(__file__).resolve().parents[1] / "conf" / "degradation"


def from_config(name: str, scale: int = 4) -> torch.nn.Module:
    """Build conf/degradation/<name>.yaml as Hydra does, with data.scale = `scale`."""
    cfg = OmegaConf.merge({"data": {"scale": scale}}, {"degradation": OmegaConf.load(CONF / f"{name}.yaml")})
    return instantiate(cfg.degradation)


@pytest.fixture(scope="module")
def realesrgan() -> RealESRGANDegradation:
    return from_config("realesrgan")


def quiet_stage(**overrides: object) -> DegradationStage:
    """A stage with no blur, no noise and JPEG at quality 100; the random resize stays."""
    values = dict(
        blur_prob=0, kernel_prob=[1, 0, 0, 0, 0, 0], sinc_prob=0, blur_sigma=[1, 1], betag_range=[1, 1],
        betap_range=[1, 1], resize_prob=[1, 1, 1], resize_range=[0.15, 1.5], gaussian_noise_prob=1,
        noise_range=[0, 0], poisson_scale_range=[0, 0], gray_noise_prob=0, jpeg_range=[100, 100],
    )  # fmt: skip
    return DegradationStage(**(values | overrides))


def batch(n: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def assert_rate(mask: torch.Tensor, p: float) -> None:
    """The share of True in `mask` is p within 4 standard errors (the draws are seeded: no flake)."""
    n = mask.numel()
    assert abs(mask.float().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n), (mask.float().mean().item(), p)


# --- the papers' protocol ------------------------------------------------------------------------


def test_bicubic_config_gives_todays_lr_bitwise() -> None:
    hr = batch(3, 48)
    degradation = from_config("bicubic")
    assert isinstance(degradation, BicubicDegradation)
    lr, target = degradation(hr, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lr, bicubic_degrade(hr, 4, to_8bit=True)) and target is hr
    assert torch.equal(lr * 255, (lr * 255).round())  # 8-bit levels
    lr_x2, _, params = from_config("bicubic", scale=2)(hr, return_params=True)
    assert lr_x2.shape == (3, 3, 24, 24) and params == {}


# --- Real-ESRGAN ---------------------------------------------------------------------------------


# The reference's values (xinntao/Real-ESRGAN options/train_realesrgan_x4plus.yml, the same in
# train_realesrnet_x4plus.yml): the yml key of each stage's field; the second stage's carry a "2".
REFERENCE_STAGES = {
    "first": dict(
        blur_prob=1.0,  # realesrgan_model.py feed_data: the first blur is unconditional
        kernel_prob=(0.45, 0.25, 0.12, 0.03, 0.12, 0.03), sinc_prob=0.1, blur_sigma=(0.2, 3.0),
        betag_range=(0.5, 4.0), betap_range=(1.0, 2.0), resize_prob=(0.2, 0.7, 0.1), resize_range=(0.15, 1.5),
        gaussian_noise_prob=0.5, noise_range=(1.0, 30.0), poisson_scale_range=(0.05, 3.0), gray_noise_prob=0.4,
        jpeg_range=(30.0, 95.0),
    ),
    "second": dict(
        blur_prob=0.8,  # second_blur_prob
        kernel_prob=(0.45, 0.25, 0.12, 0.03, 0.12, 0.03), sinc_prob=0.1, blur_sigma=(0.2, 1.5),
        betag_range=(0.5, 4.0), betap_range=(1.0, 2.0), resize_prob=(0.3, 0.4, 0.3), resize_range=(0.3, 1.2),
        gaussian_noise_prob=0.5, noise_range=(1.0, 25.0), poisson_scale_range=(0.05, 2.5), gray_noise_prob=0.4,
        jpeg_range=(30.0, 95.0),  # jpeg_range2: the final JPEG
    ),
}  # fmt: skip


def test_config_carries_the_reference_values(realesrgan: RealESRGANDegradation) -> None:
    for name, expected in REFERENCE_STAGES.items():
        stage = getattr(realesrgan, name)
        assert {key: getattr(stage, key) for key in expected} == expected, name
    assert realesrgan.final_sinc_prob == 0.8  # final_sinc_prob
    assert realesrgan.kernel_size_range == (7, 21)  # realesrgan_dataset.py: kernel_range = 7, 9, ..., 21
    assert realesrgan.usm_sharpen is True  # l1_gt_usm / percep_gt_usm: True (realesrnet: gt_usm: True)
    assert realesrgan.scale == 4


def test_shapes_ranges_and_usm_target(realesrgan: RealESRGANDegradation) -> None:
    hr = batch()
    lr, target = realesrgan(hr, generator=torch.Generator().manual_seed(0))
    assert lr.shape == (4, 3, 16, 16) and lr.dtype == torch.float32
    assert lr.min() >= 0 and lr.max() <= 1 and torch.equal(lr * 255, (lr * 255).round())  # stored as 8 bits
    assert target.shape == hr.shape and not torch.equal(target, hr)  # USM-sharpened
    assert (target - hr).abs().max() < 0.5 * (hr - hr.mean()).abs().max()  # ... mildly (weight 0.5)


def test_same_seed_same_batch_other_seed_other_batch(realesrgan: RealESRGANDegradation) -> None:
    hr = batch()
    runs = [realesrgan(hr, generator=torch.Generator().manual_seed(seed), return_params=True) for seed in (5, 5, 6)]
    (lr_a, hr_a, p_a), (lr_b, hr_b, p_b), (lr_c, _, p_c) = runs
    assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_b)
    assert p_a.keys() == p_b.keys() and all(torch.equal(p_a[k], p_b[k]) for k in p_a)
    assert not torch.equal(lr_a, lr_c) and not torch.equal(p_a["first/sigma_x"], p_c["first/sigma_x"])


def test_one_generator_gives_a_new_degradation_every_batch(realesrgan: RealESRGANDegradation) -> None:
    hr, g = batch(), torch.Generator().manual_seed(0)
    factors = set()
    for _ in range(4):  # the generator is not re-seeded: the host stream must still move on
        _, _, params = realesrgan(hr, generator=g, return_params=True)
        factors.add(round(params["first/resize_factor"][0].item(), 6))
    assert len(factors) >= 3  # 'keep' (factor 1) has probability 0.1 per batch


def test_samples_of_a_batch_get_different_parameters(realesrgan: RealESRGANDegradation) -> None:
    n = 16
    lr, _, params = realesrgan(batch(n, 32), generator=torch.Generator().manual_seed(1), return_params=True)
    assert all(v.shape == (n,) for v in params.values())
    for key in ("first/sigma_x", "first/jpeg_quality", "second/sigma", "second/poisson", "final/jpeg_quality"):
        assert params[key].unique().numel() == n, key  # continuous draws: all distinct
    for key in ("first/kernel_family", "first/resize_mode", "first/gaussian", "first/grey", "final/jpeg_first"):
        assert params[key].unique().numel() > 1, key  # categorical draws: not all alike
    # the batch's resize factor is one per batch
    assert params["first/resize_factor"].unique().numel() == 1
    same_input = realesrgan(batch(1, 32).expand(n, -1, -1, -1), generator=torch.Generator().manual_seed(1))[0]
    assert len({tuple(sample.flatten()[:64].tolist()) for sample in same_input}) == n  # n different LRs


def test_drawn_parameters_follow_the_configured_distributions(realesrgan: RealESRGANDegradation) -> None:
    n, g, params = 4000, torch.Generator().manual_seed(0), {}
    kernels = realesrgan._blur(realesrgan.first, n, g, torch.device("cpu"), params, "first")
    torch.testing.assert_close(kernels.sum(dim=(-2, -1)), torch.ones(n))
    frequencies = torch.bincount(params["first/kernel_family"], minlength=len(KERNEL_FAMILIES)) / n
    torch.testing.assert_close(frequencies, torch.tensor(realesrgan.first.kernel_prob), atol=0.025, rtol=0)
    assert params["first/sinc"].float().mean() == pytest.approx(realesrgan.first.sinc_prob, abs=0.02)
    sizes = params["first/kernel_size"]
    assert set(sizes.unique().tolist()) == set(range(7, 22, 2))
    sigma = params["first/sigma_x"]
    assert sigma.min() >= 0.2 and sigma.max() <= 3 and sigma.mean() == pytest.approx(1.6, abs=0.05)
    iso = params["first/kernel_family"] % 2 == 0
    assert torch.equal(params["first/sigma_y"][iso], sigma[iso]) and (params["first/theta"][iso] == 0).all()
    cutoff = params["first/cutoff"]  # sinc cut-off: [pi/3, pi] below size 13, [pi/5, pi] from 13 on
    assert cutoff[sizes < 13].min() >= torch.pi / 3 - 1e-6
    assert all(cutoff[sizes == size].min() < torch.pi / 3 for size in range(13, 22, 2))  # 13 included


def test_each_drawn_kernel_is_its_familys_formula_with_its_drawn_beta(realesrgan: RealESRGANDegradation) -> None:
    """Second order: each sample's kernel is BasicSR's formula of its family with the drawn values (the
    sinc's with its cut-off, none when the blur is skipped), and beta is 1 for the Gaussians, U(0.5, 1)
    or U(1, 4) half the time each for the generalised ones, 1 or U(1, 2) for the plateaus."""
    n, g, params = 2000, torch.Generator().manual_seed(0), {}
    kernels = realesrgan._blur(realesrgan.second, n, g, torch.device("cpu"), params, "second")
    p = {key.removeprefix("second/"): value.tolist() for key, value in params.items()}
    for i in range(n):
        k = p["kernel_size"][i]
        if not p["blur"][i]:
            expected = np.pad(np.ones((1, 1)), GRID // 2)
        elif p["sinc"][i]:
            expected = reference_sinc(p["cutoff"][i], k)
        else:
            kind = ("gaussian", "gaussian", "generalized", "generalized", "plateau", "plateau")[p["kernel_family"][i]]
            values = (p[key][i] for key in ("sigma_x", "sigma_y", "theta", "beta"))
            expected = reference_kernel(kind, k, *values)
        np.testing.assert_allclose(kernels[i].numpy(), expected, rtol=0, atol=2e-6, err_msg=str(i))
    assert_rate(params["second/blur"], 0.8)  # second_blur_prob
    assert params["second/sigma_x"].max() <= 1.5  # blur_sigma2
    family, beta = params["second/kernel_family"], params["second/beta"]
    assert (beta[family < 2] == 1).all()
    generalised, plateau = beta[(family == 2) | (family == 3)], beta[family >= 4]
    assert generalised.min() >= 0.5 and generalised.max() <= 4 and generalised.max() > 3
    assert_rate(generalised < 1, 0.5)
    assert plateau.min() == 1 and plateau.max() <= 2
    assert_rate(plateau == 1, 0.5)  # U(1, 1): the reference's betap_range [1, 2] gives 1 half the time


def test_each_order_draws_from_its_own_ranges(realesrgan: RealESRGANDegradation) -> None:
    """Through the whole pipeline: the second order's blur, noise and the final stage use the second
    stage's values (and the final sinc its own), the first order the first's; jpeg_range differs
    between the two stages here so that each JPEG shows which it used."""
    first = replace(realesrgan.first, jpeg_range=(30, 60))
    second = replace(realesrgan.second, jpeg_range=(70, 95))
    degradation = RealESRGANDegradation(scale=4, first=first, second=second)
    n = 200
    _, _, params = degradation(batch(n, 16), generator=torch.Generator().manual_seed(0), return_params=True)
    assert params["first/blur"].all()
    assert_rate(params["second/blur"], 0.8)
    assert 1.5 < params["first/sigma_x"].max() <= 3 and params["second/sigma_x"].max() <= 1.5
    for stage, sigma, poisson in (("first", 30, 3), ("second", 25, 2.5)):  # noise_range(2), poisson_scale_range(2)
        assert_rate(params[f"{stage}/gaussian"], 0.5)
        assert_rate(params[f"{stage}/grey"], 0.4)
        assert 0.9 * sigma < params[f"{stage}/sigma"].max() <= sigma and params[f"{stage}/sigma"].min() >= 1
        assert 0.9 * poisson < params[f"{stage}/poisson"].max() <= poisson
    quality = params["first/jpeg_quality"]
    assert quality.min() >= 30 and quality.max() <= 60
    quality = params["final/jpeg_quality"]
    assert quality.min() >= 70 and quality.max() <= 95
    assert_rate(params["final/sinc"], 0.8)
    assert_rate(params["final/jpeg_first"], 0.5)
    assert params["final/cutoff"].min() >= torch.pi / 3 - 1e-6  # the final sinc: [pi/3, pi] at every size
    assert set(params["final/kernel_size"].tolist()) == set(range(7, 22, 2))


def test_each_sample_gets_the_noise_its_parameters_name(realesrgan: RealESRGANDegradation) -> None:
    """Gaussian of std sigma/255, or Poisson of variance scale^2 * mean(x) / L (L = 128: the image has
    128 distinct 8-bit levels), one field on all channels when grey; the sum is clipped to [0, 1]."""
    stage = replace(realesrgan.first, noise_range=(4, 8), poisson_scale_range=(0.5, 1))  # no clipping on the ramp
    n, g, params = 32, torch.Generator().manual_seed(0), {}
    x = ((64 + torch.arange(128.0)) / 255).repeat(n, 3, 128, 1)  # (n, 3, 128, 128): levels 64 ... 191
    noise = realesrgan._noise(x, stage, g, params, "t") - x
    gaussian = params["t/gaussian"]
    assert 0 < gaussian.sum() < n and 0 < params["t/grey"].sum() < n
    shot = params["t/poisson"] * math.sqrt(x.mean() / 128)
    expected = torch.where(gaussian, params["t/sigma"] / 255, shot)
    torch.testing.assert_close(noise.std(dim=(1, 2, 3)), expected, rtol=0.05, atol=0)
    same_channels = (noise[:, 0] == noise[:, 1]).all(-1).all(-1) & (noise[:, 1] == noise[:, 2]).all(-1).all(-1)
    assert torch.equal(same_channels, params["t/grey"])
    strong = replace(stage, noise_range=(100, 100), poisson_scale_range=(3, 3))
    noisy = realesrgan._noise(x, strong, g, {}, "t")
    assert noisy.min() == 0 and noisy.max() == 1  # clipped (unclipped, 2-3% of it lies outside)


def test_the_final_stage_applies_its_steps_in_the_drawn_order(realesrgan: RealESRGANDegradation) -> None:
    """Each sample: JPEG(clip(sinc(resize(x)))), or sinc(resize(JPEG(clip(x)))) where final/jpeg_first, as the
    reference's feed_data; resize with its mode, sinc with its size and cut-off (or none)."""
    n, g, params = 12, torch.Generator().manual_seed(4), {}
    x = batch(n, 40) * 1.2 - 0.1  # noise leaves values in [0, 1], resizes and the sinc overshoot
    out = realesrgan._final(x, (12, 16), g, params)
    p = {key.removeprefix("final/"): value for key, value in params.items()}
    assert 0 < p["jpeg_first"].sum() < n and 0 < p["sinc"].sum() < n and p["resize_mode"].unique().numel() == 3

    def resize_sinc(t: torch.Tensor, mode: str, kernel: torch.Tensor | None) -> torch.Tensor:
        t = F.interpolate(t, size=(12, 16), mode=mode, **({} if mode == "area" else {"align_corners": False}))
        if kernel is None:
            return t
        return F.conv2d(F.pad(t, (GRID // 2,) * 4, mode="reflect"), kernel.expand(3, 1, GRID, GRID), groups=3)

    for i in range(n):
        kernel = sinc_kernels(p["kernel_size"][i : i + 1], p["cutoff"][i : i + 1])[0] if p["sinc"][i] else None
        mode, quality = RESIZE_MODES[p["resize_mode"][i]], p["jpeg_quality"][i : i + 1]
        sample = x[i : i + 1]
        if p["jpeg_first"][i]:
            expected = resize_sinc(jpeg_codec_differentiable(sample.clamp(0, 1), quality), mode, kernel)
        else:
            expected = jpeg_codec_differentiable(resize_sinc(sample, mode, kernel).clamp(0, 1), quality)
        torch.testing.assert_close(out[i : i + 1], expected, atol=1e-5, rtol=0, msg=str(i))


def test_the_random_resizes_go_to_the_references_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """First resize to int(H * f1), second to int(H / s * f2) (of the LR size, as the reference's
    feed_data), then back to H / s; f1, f2 the batch's host draws."""
    degradation = from_config("realesrgan")
    seen = []
    resize = realesrgan_module.resize_per_sample_mode

    def spy(img: torch.Tensor, size: tuple[int, int], mode: torch.Tensor) -> torch.Tensor:
        seen.append((tuple(img.shape[-2:]), tuple(size)))
        return resize(img, size, mode)

    monkeypatch.setattr(realesrgan_module, "resize_per_sample_mode", spy)
    fractions = set()
    for seed in range(6):
        seen.clear()
        hr = torch.rand(1, 3, 60, 44, generator=torch.Generator().manual_seed(seed))
        degradation(hr, generator=torch.Generator().manual_seed(seed))
        host = host_rng(torch.Generator().manual_seed(seed))
        f1, f2 = (RealESRGANDegradation._resize_factor(s, host) for s in (degradation.first, degradation.second))
        first = (int(60 * f1), int(44 * f1))
        second = (int(15 * f2), int(11 * f2))
        assert seen == [((60, 44), first), (first, second), (second, (15, 11)), (second, (15, 11))], seed
        fractions |= {60 * f1 % 1 >= 0.5, 15 * f2 % 1 >= 0.5}
    assert fractions == {False, True}  # some sizes would round up: int() is the floor


def test_resize_factors_follow_the_up_down_keep_probabilities(realesrgan: RealESRGANDegradation) -> None:
    """Up U(1, max), down U(min, 1), keep 1, with resize_prob (up, down, keep) in that order."""
    host, n = random.Random(0), 20000
    for stage in (realesrgan.first, realesrgan.second):
        factors = torch.tensor([RealESRGANDegradation._resize_factor(stage, host) for _ in range(n)])
        up, down = factors[factors > 1], factors[factors < 1]
        for mask, p in zip((factors > 1, factors < 1, factors == 1), stage.resize_prob):
            assert_rate(mask, p)
        low, high = stage.resize_range
        assert up.max() <= high and up.mean().item() == pytest.approx((1 + high) / 2, abs=0.01)
        assert down.min() >= low and down.mean().item() == pytest.approx((1 + low) / 2, abs=0.01)


def test_the_lr_is_made_from_the_sharpened_target(realesrgan: RealESRGANDegradation) -> None:
    """usm_sharpen=true degrades the USM target (the reference's gt_usm), exactly what usm_sharpen=false
    makes of that target given as the HR; false leaves the HR as it is."""
    hr = batch(2, 32)
    lr, target = realesrgan(hr, generator=torch.Generator().manual_seed(0))
    plain = RealESRGANDegradation(scale=4, first=realesrgan.first, second=realesrgan.second, usm_sharpen=False)
    lr_plain, target_plain = plain(target, generator=torch.Generator().manual_seed(0))
    assert torch.equal(lr_plain, lr) and torch.equal(target_plain, target)
    assert not torch.equal(target, hr)


def test_lr_stays_aligned_with_hr() -> None:
    """A bright spot at HR (y, x) lands at LR ((y + 0.5) / s - 0.5, ...), through every random resize.

    Blur and noise off, JPEG at 100. Measured worst error over 12 seeds: 0.14 LR px (area resizing
    at non-integer factors); a half-pixel misalignment would give 0.5.
    """
    degradation = RealESRGANDegradation(
        scale=4, first=quiet_stage(), second=quiet_stage(resize_range=[0.3, 1.2]), final_sinc_prob=0, usm_sharpen=False
    )
    n, size = 8, 128
    centres = torch.tensor([[30 + 9.3 * i, 45 + 6.1 * i] for i in range(n)])  # (n, 2) HR (y, x)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    spots = (yy - centres[:, 0, None, None]) ** 2 + (xx - centres[:, 1, None, None]) ** 2  # (n, H, W)
    hr = torch.exp(-spots / (2 * 8.0**2))[:, None].expand(n, 3, size, size)
    factors = set()
    for seed in range(6):
        lr, _, params = degradation(hr, generator=torch.Generator().manual_seed(seed), return_params=True)
        factors |= {round(params[f"{k}/resize_factor"][0].item(), 3) for k in ("first", "second")}
        weight = lr[:, 0] - lr[:, 0].amin(dim=(1, 2), keepdim=True)  # (n, h, w)
        ly, lx = torch.meshgrid(torch.arange(lr.shape[-2]), torch.arange(lr.shape[-1]), indexing="ij")
        found = torch.stack([(weight * ly).sum((1, 2)), (weight * lx).sum((1, 2))], 1) / weight.sum((1, 2))[:, None]
        torch.testing.assert_close(found, (centres + 0.5) / 4 - 0.5, atol=0.2, rtol=0)
    assert len(factors) > 4  # up, down and keep were all exercised


class _NoHostReads(TorchDispatchMode):
    """Fails when the host reads a value computed from the batch or drawn from the generator.

    Such tensors are tracked from the input on (any op with one as input, or with a generator,
    makes its outputs "device values"); reading one (`.item()`, `bool()`, `nonzero`, `unique` ...)
    would make a CUDA step wait. Host literals (Python numbers made into CPU tensors, which libraries
    check on the host on purpose) are not device values.
    """

    READS = {
        "_local_scalar_dense", "item", "is_nonzero", "nonzero", "masked_select", "unique", "_unique", "_unique2",
        "unique_dim", "unique_consecutive", "bincount", "repeat_interleave", "equal", "allclose",
    }  # fmt: skip

    def __init__(self, *inputs: torch.Tensor) -> None:
        super().__init__()
        self.device_values: dict[int, weakref.ref] = {}
        self.reads: list[str] = []
        for tensor in inputs:
            self._track(tensor)

    def _track(self, tensor: torch.Tensor) -> None:
        key = id(tensor)
        self.device_values[key] = weakref.ref(tensor, lambda _, key=key: self.device_values.pop(key, None))

    def _is_device_value(self, value: object) -> bool:
        return isinstance(value, torch.Tensor) and id(value) in self.device_values

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        flat = [*args, *kwargs.values()]
        flat += [item for value in flat if isinstance(value, list | tuple) for item in value]
        from_device = any(self._is_device_value(v) for v in flat) or isinstance(
            kwargs.get("generator"), torch.Generator
        )
        if from_device and func.overloadpacket.__name__ in self.READS:
            self.reads.append(str(func))
        out = func(*args, **kwargs)
        if from_device:
            for value in out if isinstance(out, list | tuple) else [out]:
                if isinstance(value, torch.Tensor):
                    self._track(value)
        return out


def test_pipeline_never_reads_device_values_on_the_host(realesrgan: RealESRGANDegradation) -> None:
    hr = batch(4, 64)
    realesrgan(hr, generator=torch.Generator().manual_seed(0))  # warm the caches (kernels, JPEG tables)
    with _NoHostReads(hr) as mode:
        lr, _ = realesrgan(hr, generator=torch.Generator().manual_seed(0))
    assert mode.reads == []
    with _NoHostReads(lr) as control:  # the check sees a read when there is one
        assert float(lr.mean()) > 0 and lr.nonzero().numel() > 0
    assert control.reads == ["aten._local_scalar_dense.default", "aten.nonzero.default"]


def test_small_patches_and_bad_inputs() -> None:
    degradation = from_config("realesrgan")
    lr, target = degradation(batch(2, 16), generator=torch.Generator().manual_seed(0))  # smaller than the kernels
    assert lr.shape == (2, 3, 4, 4) and torch.isfinite(lr).all() and torch.isfinite(target).all()
    with pytest.raises(UserError, match=r"multiples of scale=4.*data\.patch_size"):
        degradation(batch(2, 18))
    with pytest.raises(UserError, match=r"^degradation\.second\.jpeg_range=\[20.0, 120.0\] must be"):
        RealESRGANDegradation(first=quiet_stage(), second=quiet_stage(jpeg_range=[20, 120]))
    with pytest.raises(UserError, match=r"^degradation\.first\.kernel_prob=.*6 non-negative"):
        RealESRGANDegradation(first=quiet_stage(kernel_prob=[1, 0]), second=quiet_stage())
    with pytest.raises(UserError, match=r"^degradation\.kernel_size_range=\[6, 21\]"):
        RealESRGANDegradation(first=quiet_stage(), second=quiet_stage(), kernel_size_range=(6, 21))
    with pytest.raises(
        UserError, match=r"^degradation\.first\.resize_range=\[1\.2, 1\.5\] must be \[down <= 1, up >= 1\]$"
    ):
        RealESRGANDegradation(first=quiet_stage(resize_range=[1.2, 1.5]), second=quiet_stage())
    with pytest.raises(
        UserError, match=r"^degradation\.second\.resize_range=\[0\.5, 0\.8\] must be \[down <= 1, up >= 1\]$"
    ):
        RealESRGANDegradation(first=quiet_stage(), second=quiet_stage(resize_range=[0.5, 0.8]))
    with pytest.raises(TypeError, match=r"HR batch is torch\.uint8; pass floats in \[0, 1\] \(uint8 / 255\)"):
        degradation((batch(2, 16) * 255).to(torch.uint8))


def test_an_out_of_range_value_is_named_by_its_config_key(make_cfg, capsys: pytest.CaptureFixture) -> None:
    """The two orders share their keys (blur_prob, ...): the command's line says which order's value
    is out of range, as the user typed it (it said `degradation: blur_prob=2` for either)."""
    for stage in ("first", "second"):
        cfg = make_cfg("degradation=realesrgan", f"degradation.{stage}.blur_prob=2")
        with pytest.raises(SystemExit):
            exit_on_user_error(instantiate)(cfg.degradation)
        assert (
            capsys.readouterr().err
            == f"error: degradation.{stage}.blur_prob=2 is a probability: use a value in [0, 1]\n"
        )


def test_trainer_precision_does_not_change_the_degradation(realesrgan: RealESRGANDegradation) -> None:
    hr = batch(2, 32)
    expected, _ = realesrgan(hr, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as under trainer=gpu (bf16-mixed)
        got, target = realesrgan(hr, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, expected) and target.dtype == torch.float32


@pytest.mark.parametrize("name", ["realesrgan", "bicubic"])
def test_the_batch_path_makes_no_tensor_off_the_batchs_device(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU every tensor of the on-device batch path must be made on the batch's device: one
    made on the CPU beside CUDA ones fails there, and no CUDA device is here. The meta device
    refuses it the same way (a CPU tensor beside a meta one: "not on the expected device"; a 0-dim
    one passes, as on CUDA), so the path runs here on a meta batch: flips on uint8, the float
    conversion and each degradation of the training configs, every drawn kernel, mask and
    parameter included. Shims: meta has no random generator (draws use the device's default) and
    no autocast, and the per-batch resize factors come from a fixed host stream."""
    from torchvision.transforms.v2.functional import to_dtype

    from sr_gan.data.augment import paired_augment

    degradation = from_config(name)
    if name == "realesrgan":
        monkeypatch.setattr(realesrgan_module, "resolve_generator", lambda generator, device: None)
        monkeypatch.setattr(realesrgan_module, "host_rng", lambda generator: random.Random(0))
        autocast = torch.autocast
        monkeypatch.setattr(
            torch,
            "autocast",
            lambda device_type, **kw: nullcontext() if device_type == "meta" else autocast(device_type, **kw),
        )
    meta = torch.device("meta")
    hr = torch.empty(4, 3, 64, 64, dtype=torch.uint8, device=meta)
    flips = torch.empty(4, 3, dtype=torch.bool, device=meta)
    hr, _ = paired_augment(hr, None, flips)
    hr = to_dtype(hr, torch.float32, scale=True)
    lr, target, params = degradation(hr, return_params=True)
    assert lr.shape == (4, 3, 16, 16) and target.shape == (4, 3, 64, 64)
    assert {t.device for t in (lr, target, *params.values())} == {meta}
