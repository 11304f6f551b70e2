"""Camera noise of Real-ESRGAN (Wang et al. 2021, Sec. 3.1): additive Gaussian and Poisson, colour or grey.

Per-sample parameters, one batch, no host sync. Kornia has Gaussian noise only as an augmentation
class with one std per call and its own random state (`RandomGaussianNoise`) and no Poisson noise,
so both are written here with `torch.randn` / `torch.poisson` on the caller's generator; the grey
image is Kornia's (`kornia.color.rgb_to_grayscale`, BT.601 weights as the reference's torchvision).
Each function returns the noise, (B, C, H, W); the caller adds it and clips to [0, 1].
"""

from __future__ import annotations

import torch
from kornia.color import rgb_to_grayscale
from torch import Tensor

_LEVELS = 256  # 8-bit values


def _per_sample(values: Tensor) -> Tensor:
    return values[:, None, None, None]  # (B,) → (B, 1, 1, 1)


def gaussian_noise(img: Tensor, sigma: Tensor, grey: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """White Gaussian noise of standard deviation `sigma` (B,) in image units ([0, 1] scale).

    `grey` (B,) bool: one noise field shared by the three channels instead of one per channel (the
    reference's gray_noise). Both fields are drawn for every sample, so the random stream does not
    depend on the draws.
    """
    b, c, h, w = img.shape
    colour = torch.randn(b, c, h, w, generator=generator, device=img.device, dtype=img.dtype)
    mono = torch.randn(b, 1, h, w, generator=generator, device=img.device, dtype=img.dtype)
    return torch.where(_per_sample(grey), mono, colour) * _per_sample(sigma)


def _shot_noise(img: Tensor, generator: torch.Generator | None) -> Tensor:
    """Poisson(img · L) / L - img on the image rounded to 8 bits, L = 2^ceil(log2(#distinct values)).

    As the reference (skimage's `random_noise(mode='poisson')`): the number of distinct 8-bit values
    of each sample, rounded up to a power of 2, plays the photon count of a full-scale pixel. The
    count comes from a per-sample histogram (scatter-add), not `torch.unique`, whose output size
    depends on the data and would need a host sync per sample.
    """
    levels = (img * 255).round().clamp(0, 255)  # (B, C, H, W) 8-bit values
    counts = torch.zeros(img.shape[0], _LEVELS, device=img.device, dtype=img.dtype)
    counts.scatter_add_(1, levels.flatten(1).long(), torch.ones_like(levels.flatten(1)))  # (B, 256)
    distinct = (counts > 0).sum(dim=1).to(img.dtype)  # (B,)
    photons = _per_sample(2 ** torch.ceil(torch.log2(distinct)))
    rounded = levels / 255
    return torch.poisson(rounded * photons, generator=generator) / photons - rounded


def poisson_noise(img: Tensor, scale: Tensor, grey: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Shot noise scaled by `scale` (B,); `grey` (B,) bool: drawn on the grey image, same on all channels."""
    colour = _shot_noise(img, generator)
    mono = _shot_noise(rgb_to_grayscale(img), generator).expand_as(img)
    return torch.where(_per_sample(grey), mono, colour) * _per_sample(scale)
