"""Real-ESRGAN's second-order degradation (Wang et al. 2021, ICCVW, Sec. 3, Fig. 2), batched on the device.

    HR ─USM─▶ target ─▶ [blur → resize → noise → JPEG]  first order
                      ─▶ [blur? → resize → noise]      second order (blur with probability)
                      ─▶ [resize to H/s + sinc? → JPEG] or [JPEG → resize to H/s + sinc?]  → round to 8 bits = LR

Every parameter is drawn per sample on the batch's device from the caller's generator (blur
kernel family, size, sigmas, angle, shape, sinc cut-off; interpolation mode; noise type, strength,
grey or colour; JPEG quality; whether the second blur, the final sinc and which final order apply);
choices are masks applied with `torch.where`, so a batch holds every kind of degradation at once
and nothing is read back to the host. The one exception is the size of the two random resizes,
which must be one per batch (a batch is one tensor): as in the reference, one factor per stage is
drawn per batch, on the host, from a stream seeded by the generator's state (`ops/draws.py`: no
device sync). The reference draws the interpolation mode, the noise type, whether the second blur
applies and the final order once per batch too; we draw them per sample, which costs computing
each alternative for the whole batch (three resizes, two noises, two final orders) and gives
every batch the diversity the reference gets from its pool of 180 past samples.

What Kornia does: per-sample kernel filtering (`kornia.filters.filter2d`, reflect padding, as the
reference's filter2D), resizing (`kornia.geometry.transform.resize`), JPEG (its differentiable codec,
`ops/jpeg.py`), the Gaussian blur inside USM and the grey image of grey noise. Hand-written: the
kernel families (`ops/kernels.py`), the noises (`ops/noise.py`), the USM mask (`ops/sharpen.py`).
The values of every range are config values (conf/degradation/realesrgan.yaml, with their sources).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields

import torch
from kornia.filters import filter2d
from torch import Tensor, nn

from sr_gan.errors import UserError
from sr_gan.ops.draws import categorical, chance, host_rng, resolve_generator, uniform
from sr_gan.ops.jpeg import jpeg_compress
from sr_gan.ops.kernels import GRID, anisotropic_kernels, pulse_kernels, sinc_kernels
from sr_gan.ops.noise import gaussian_noise, poisson_noise
from sr_gan.ops.resize import RESIZE_MODES, resize_per_sample_mode
from sr_gan.ops.sharpen import usm_sharpen

# The reference's kernel_list, in this order; kernel_prob gives one probability per family.
KERNEL_FAMILIES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
UPDOWN = ("up", "down", "keep")  # resize_prob order
# Sinc cut-offs, hard-coded in the reference dataset (realesrgan_dataset.py __getitem__): omega_c in
# [pi/3, pi] for kernels smaller than 13, [pi/5, pi] otherwise; the final sinc always [pi/3, pi].
SINC_SMALL_KERNEL = 13
SINC_CUTOFF_SMALL = (math.pi / 3, math.pi)
SINC_CUTOFF_LARGE = (math.pi / 5, math.pi)

Params = dict[str, Tensor]


def _check_range(key: str, value: tuple[float, float], low: float, high: float) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1] <= high:
        raise UserError(f"{key}={list(value)} must be [min, max] within [{low}, {high}]")


def _check_probs(key: str, value: tuple[float, ...], count: int) -> None:
    if len(value) != count or min(value) < 0 or sum(value) <= 0:
        raise UserError(f"{key}={list(value)} needs {count} non-negative weights, not all 0")


def _check_probability(key: str, value: float) -> None:
    if not 0 <= value <= 1:
        raise UserError(f"{key}={value} is a probability: use a value in [0, 1]")


@dataclass(frozen=True)
class DegradationStage:
    """One order of the degradation: blur, random resize, noise, JPEG (options of the reference).

    Names follow the reference's options (train_realesrgan_x4plus.yml; the second stage's carry
    a '2' there). `blur_prob` is the reference's second_blur_prob (the first stage always blurs);
    the second stage's `jpeg_range` is used by the final JPEG (the second order has no other).
    """

    blur_prob: float
    kernel_prob: tuple[float, ...]
    sinc_prob: float
    blur_sigma: tuple[float, float]
    betag_range: tuple[float, float]
    betap_range: tuple[float, float]
    resize_prob: tuple[float, float, float]
    resize_range: tuple[float, float]
    gaussian_noise_prob: float
    noise_range: tuple[float, float]
    poisson_scale_range: tuple[float, float]
    gray_noise_prob: float
    jpeg_range: tuple[float, float]

    def __post_init__(self) -> None:
        for field in fields(self):  # Hydra passes lists: store tuples (frozen, hashable)
            value = getattr(self, field.name)
            if isinstance(value, list | tuple):
                object.__setattr__(self, field.name, tuple(float(v) for v in value))

    def check(self, key: str) -> None:
        """A one-line UserError naming the config key (`key`.<name>, e.g. ``degradation.second.blur_prob``)
        of the first range or probability out of bounds (the stage does not know its key itself)."""
        for name in ("blur_prob", "sinc_prob", "gaussian_noise_prob", "gray_noise_prob"):
            _check_probability(f"{key}.{name}", getattr(self, name))
        _check_probs(f"{key}.kernel_prob", self.kernel_prob, len(KERNEL_FAMILIES))
        _check_probs(f"{key}.resize_prob", self.resize_prob, len(UPDOWN))
        _check_range(f"{key}.blur_sigma", self.blur_sigma, 1e-3, math.inf)
        _check_range(f"{key}.betag_range", self.betag_range, 1e-3, math.inf)
        _check_range(f"{key}.betap_range", self.betap_range, 1e-3, math.inf)
        if not self.resize_range[0] <= 1 <= self.resize_range[1]:
            raise UserError(f"{key}.resize_range={list(self.resize_range)} must be [down <= 1, up >= 1]")
        _check_range(f"{key}.resize_range", self.resize_range, 1e-3, math.inf)
        _check_range(f"{key}.noise_range", self.noise_range, 0, 255)
        _check_range(f"{key}.poisson_scale_range", self.poisson_scale_range, 0, math.inf)
        _check_range(f"{key}.jpeg_range", self.jpeg_range, 1, 100)


def _two_sided_beta(low: float, high: float, n: int, *, generator: torch.Generator, device: torch.device) -> Tensor:
    """Shape exponent beta: U(low, 1) or U(1, high) with equal chance, as the reference draws it.

    (For plateau kernels the reference's betap_range [1, 2] thus gives beta = 1 half of the time.)
    """
    below = uniform(low, 1.0, n, generator=generator, device=device)
    above = uniform(1.0, high, n, generator=generator, device=device)
    return torch.where(chance(0.5, n, generator=generator, device=device), below, above)


class RealESRGANDegradation(nn.Module):
    """``lr, hr = degradation(hr, generator=g)``: Real-ESRGAN LR (B, 3, H/s, W/s) and the HR target.

    Args:
        scale: SR factor s; H and W of the HR batch must be multiples of it.
        first, second: the two orders' parameter ranges (`DegradationStage`).
        final_sinc_prob: probability of the sinc filter after the final resize.
        kernel_size_range: odd blur/sinc kernel sizes drawn uniformly from this range (<= 21).
        usm_sharpen: the HR target is USM-sharpened (and the LR made from it), as the reference's
            `gt_usm` / `l1_gt_usm` + `percep_gt_usm` (its discriminator sees the un-sharpened HR,
            `gan_gt_usm: False`; docs/degradations.md).
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        first: DegradationStage,
        second: DegradationStage,
        final_sinc_prob: float = 0.8,
        kernel_size_range: tuple[int, int] = (7, 21),
        usm_sharpen: bool = True,
    ) -> None:
        super().__init__()
        low, high = kernel_size_range
        if not (low % 2 == 1 and high % 2 == 1 and 1 <= low <= high <= GRID):
            raise UserError(f"degradation.kernel_size_range={list(kernel_size_range)} must be odd sizes in [1, {GRID}]")
        _check_probability("degradation.final_sinc_prob", final_sinc_prob)
        first.check("degradation.first")
        second.check("degradation.second")
        self.scale, self.first, self.second = scale, first, second
        self.final_sinc_prob, self.kernel_size_range, self.usm_sharpen = final_sinc_prob, (low, high), usm_sharpen

    # --- draws -------------------------------------------------------------------------------

    def _kernel_sizes(self, n: int, generator: torch.Generator, device: torch.device) -> Tensor:
        low, high = self.kernel_size_range  # odd sizes 2k + 1, k uniform (reference: random.choice)
        return 2 * torch.randint(low // 2, high // 2 + 1, (n,), generator=generator, device=device) + 1

    @staticmethod
    def _sinc(
        size: Tensor, cutoff_small: tuple[float, float], cutoff_large: tuple[float, float], g: torch.Generator
    ) -> tuple[Tensor, Tensor]:
        """(kernels (B, G, G), cut-offs (B,)) for the sizes; the cut-off range depends on the size."""
        n, device = size.shape[0], size.device
        small = uniform(*cutoff_small, n, generator=g, device=device)
        large = uniform(*cutoff_large, n, generator=g, device=device)
        cutoff = torch.where(size < SINC_SMALL_KERNEL, small, large)
        return sinc_kernels(size, cutoff), cutoff

    def _blur(
        self, stage: DegradationStage, n: int, g: torch.Generator, device: torch.device, params: Params, tag: str
    ) -> Tensor:
        """Per-sample blur kernels (B, G, G) of one stage, with what was drawn recorded in `params`."""
        size = self._kernel_sizes(n, g, device)
        family = categorical(stage.kernel_prob, n, generator=g, device=device)  # index into KERNEL_FAMILIES
        isotropic = family % 2 == 0  # iso, generalized_iso, plateau_iso
        sigma_x = uniform(*stage.blur_sigma, n, generator=g, device=device)
        sigma_y = torch.where(isotropic, sigma_x, uniform(*stage.blur_sigma, n, generator=g, device=device))
        theta = torch.where(isotropic, 0.0, uniform(-math.pi, math.pi, n, generator=g, device=device))
        beta_g = _two_sided_beta(*stage.betag_range, n, generator=g, device=device)
        beta_p = _two_sided_beta(*stage.betap_range, n, generator=g, device=device)
        beta = torch.where(family < 2, 1.0, torch.where(family < 4, beta_g, beta_p))
        kernel = anisotropic_kernels(size, sigma_x, sigma_y, theta, beta, plateau=family >= 4)
        sinc, cutoff = self._sinc(size, SINC_CUTOFF_SMALL, SINC_CUTOFF_LARGE, g)
        use_sinc = chance(stage.sinc_prob, n, generator=g, device=device)
        applied = chance(stage.blur_prob, n, generator=g, device=device)
        kernel = torch.where(use_sinc[:, None, None], sinc, kernel)
        kernel = torch.where(applied[:, None, None], kernel, pulse_kernels(n, device=device))
        params |= {
            f"{tag}/blur": applied, f"{tag}/sinc": use_sinc, f"{tag}/kernel_family": family,
            f"{tag}/kernel_size": size, f"{tag}/sigma_x": sigma_x, f"{tag}/sigma_y": sigma_y,
            f"{tag}/theta": theta, f"{tag}/beta": beta, f"{tag}/cutoff": cutoff,
        }  # fmt: skip
        return kernel

    @staticmethod
    def _resize_factor(stage: DegradationStage, host: random.Random) -> float:
        """One factor per batch (it sets the batch's size): up U(1, max), down U(min, 1) or keep."""
        updown = host.choices(UPDOWN, weights=stage.resize_prob)[0]
        if updown == "up":
            return host.uniform(1, stage.resize_range[1])
        return host.uniform(stage.resize_range[0], 1) if updown == "down" else 1.0

    # --- stages ------------------------------------------------------------------------------

    @staticmethod
    def _filter(x: Tensor, kernel: Tensor) -> Tensor:
        """Filter each sample with its own kernel (B, G, G), reflect padding as the reference's filter2D
        (replicate when the image is too small to reflect GRID // 2 pixels)."""
        border = "reflect" if min(x.shape[-2:]) > GRID // 2 else "replicate"
        return filter2d(x, kernel, border_type=border)

    def _noise(self, x: Tensor, stage: DegradationStage, g: torch.Generator, params: Params, tag: str) -> Tensor:
        n, device = x.shape[0], x.device
        use_gaussian = chance(stage.gaussian_noise_prob, n, generator=g, device=device)
        sigma = uniform(*stage.noise_range, n, generator=g, device=device)  # on the 0-255 scale
        poisson_scale = uniform(*stage.poisson_scale_range, n, generator=g, device=device)
        grey = chance(stage.gray_noise_prob, n, generator=g, device=device)
        noise = torch.where(
            use_gaussian[:, None, None, None],
            gaussian_noise(x, sigma / 255, grey, generator=g),
            poisson_noise(x, poisson_scale, grey, generator=g),
        )
        params |= {f"{tag}/gaussian": use_gaussian, f"{tag}/sigma": sigma, f"{tag}/poisson": poisson_scale}
        params[f"{tag}/grey"] = grey
        return (x + noise).clamp(0, 1)

    def _jpeg(self, x: Tensor, quality: Tensor) -> Tensor:
        return jpeg_compress(x.clamp(0, 1), quality)  # the reference clamps first (JPEG of >1 rings)

    def _order(
        self, x: Tensor, stage: DegradationStage, size: tuple[int, int], g: torch.Generator, params: Params, tag: str
    ) -> Tensor:
        """Blur, resize to `size`, noise: the common part of both orders."""
        n, device = x.shape[0], x.device
        x = self._filter(x, self._blur(stage, n, g, device, params, tag))
        mode = categorical([1] * len(RESIZE_MODES), n, generator=g, device=device)
        params[f"{tag}/resize_mode"] = mode
        x = resize_per_sample_mode(x, size, mode)
        return self._noise(x, stage, g, params, tag)

    def _final(self, x: Tensor, size: tuple[int, int], g: torch.Generator, params: Params) -> Tensor:
        """[resize to LR + sinc] then JPEG, or JPEG then [resize + sinc], chosen per sample."""
        n, device = x.shape[0], x.device
        sinc_size = self._kernel_sizes(n, g, device)
        sinc, cutoff = self._sinc(sinc_size, SINC_CUTOFF_SMALL, SINC_CUTOFF_SMALL, g)
        use_sinc = chance(self.final_sinc_prob, n, generator=g, device=device)
        kernel = torch.where(use_sinc[:, None, None], sinc, pulse_kernels(n, device=device))
        mode = categorical([1] * len(RESIZE_MODES), n, generator=g, device=device)
        quality = uniform(*self.second.jpeg_range, n, generator=g, device=device)
        jpeg_first = chance(0.5, n, generator=g, device=device)  # realesrgan_model.py: np.random.uniform() < 0.5

        def resize_sinc(t: Tensor) -> Tensor:
            return self._filter(resize_per_sample_mode(t, size, mode), kernel)

        resized_first = self._jpeg(resize_sinc(x), quality)
        compressed_first = resize_sinc(self._jpeg(x, quality))
        params |= {"final/sinc": use_sinc, "final/kernel_size": sinc_size, "final/cutoff": cutoff}
        params |= {"final/resize_mode": mode, "final/jpeg_quality": quality, "final/jpeg_first": jpeg_first}
        return torch.where(jpeg_first[:, None, None, None], compressed_first, resized_first)

    def _degrade(
        self, hr: Tensor, factors: tuple[float, float], g: torch.Generator, params: Params
    ) -> tuple[Tensor, Tensor]:
        """USM, the two orders and the final stage; `factors` are the two random resizes of this batch."""
        n, device = hr.shape[0], hr.device
        height, width = hr.shape[-2:]
        lr_size = (height // self.scale, width // self.scale)
        target = usm_sharpen(hr) if self.usm_sharpen else hr
        size = (max(1, int(height * factors[0])), max(1, int(width * factors[0])))  # F.interpolate's floor
        out = self._order(target, self.first, size, g, params, "first")
        quality = uniform(*self.first.jpeg_range, n, generator=g, device=device)
        out = self._jpeg(out, quality)
        params["first/jpeg_quality"] = quality

        # reference: the second resize is relative to the LR size, int(H / s * factor)
        size = (max(1, int(lr_size[0] * factors[1])), max(1, int(lr_size[1] * factors[1])))
        out = self._order(out, self.second, size, g, params, "second")
        out = self._final(out, lr_size, g, params)
        params["first/resize_factor"] = torch.full((n,), factors[0], device=device)
        params["second/resize_factor"] = torch.full((n,), factors[1], device=device)
        return (out * 255).round().clamp(0, 255) / 255, target  # the LR is 8-bit, as a saved image

    @torch.no_grad()
    def forward(
        self, hr: Tensor, generator: torch.Generator | None = None, return_params: bool = False
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Params]:
        """Degrade an HR batch (B, 3, H, W) in [0, 1]; returns (LR, HR target[, drawn parameters]).

        `generator` lives on hr's device (default: the device's default generator). The parameters
        are (B,) tensors keyed "<stage>/<name>" (stage: first, second, final).
        """
        if hr.ndim != 4 or hr.shape[1] != 3 or hr.shape[-2] % self.scale or hr.shape[-1] % self.scale:
            raise UserError(
                f"degradation: HR batch {tuple(hr.shape)} must be (B, 3, H, W) with H and W multiples of "
                f"scale={self.scale}: make data.patch_size a multiple of data.scale"
            )
        if not hr.is_floating_point():
            raise TypeError(f"degradation: HR batch is {hr.dtype}; pass floats in [0, 1] (uint8 / 255)")
        g = resolve_generator(generator, hr.device)
        host = host_rng(g)  # the per-batch resize factors: from the state at entry, before any device draw
        factors = (self._resize_factor(self.first, host), self._resize_factor(self.second, host))
        params: Params = {}
        with torch.autocast(hr.device.type, enabled=False):  # float32 throughout, whatever the trainer's precision
            lr, target = self._degrade(hr.float(), factors, g, params)
        return (lr, target, params) if return_params else (lr, target)
