"""Unsharp masking of the HR target (Real-ESRGAN, Wang et al. 2021, Sec. 4.1 "USM sharpening").

The paper sharpens the ground truth before training (and before degrading it) for sharper
results. The reference's `USMSharp` (BasicSR `img_process_util.py`) adds half the high-pass
residual, only where it exceeds 10/255, through a blurred (soft) mask:

    B = G_51(I);  R = I - B;  M = G_51(|R| > 10 / 255);  out = M · clip(I + 0.5 R, 0, 1) + (1 - M) · I

with G_51 the 51x51 Gaussian of OpenCV's default sigma for that size, 0.3 ((51 - 1) / 2 - 1) + 0.8 = 8,
and the reference's reflect padding. `kornia.filters.unsharp_mask` computes I + (I - B) (weight 1, no
threshold, no mask), a different and stronger filter, so Kornia gives the Gaussian kernel
(`get_gaussian_kernel1d`) and the rest is here. The blur itself is two matmuls, one per axis, with
the reflect padding folded into an (N, N) matrix as `ops/imresize.py` folds MATLAB's: Kornia's
separable filtering runs the 51 taps as depthwise convolutions (or, in `gaussian_blur2d` on large CPU
images, as 51 shifted multiply-adds per axis), measured 1.2 s for 16 x 256 px on one core of our CPU
against 0.1 s for the matmuls; on a GPU both are fast.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from kornia.filters import get_gaussian_kernel1d
from torch import Tensor

USM_RADIUS = 51  # BasicSR USMSharp(radius=50): an even radius is made odd, 51; its sigma (OpenCV's) is 8
USM_WEIGHT = 0.5  # USMSharp.forward(weight=0.5)
USM_THRESHOLD = 10  # USMSharp.forward(threshold=10), on the 0-255 scale


_CACHE_SIZE = 8  # blur matrices kept: one per patch side, device and dtype


def _reflect(index: Tensor, length: int) -> Tensor:
    """Indices reflected into [0, length) without repeating the edge (torch's 'reflect'), any distance."""
    if length == 1:
        return torch.zeros_like(index)
    period = 2 * (length - 1)
    index = index.remainder(period)
    return torch.where(index < length, index, period - index)


@lru_cache(maxsize=_CACHE_SIZE)
def _blur_matrix(length: int, radius: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(length, length) matrix of the reflect-padded Gaussian filter along one axis.

    Row i holds the taps of output i, mirrored taps added onto their in-range column. Built in
    float64 on the CPU, outside inference mode (the cache outlives a validation call that fills it).
    """
    sigma = 0.3 * ((radius - 1) * 0.5 - 1) + 0.8  # OpenCV's sigma for a kernel of this size
    with torch.inference_mode(False), torch.no_grad():
        taps = get_gaussian_kernel1d(radius, sigma, dtype=torch.float64)[0]  # (radius,), sums to 1
        offsets = torch.arange(radius) - radius // 2
        columns = _reflect(torch.arange(length)[:, None] + offsets[None, :], length)  # (length, radius)
        matrix = torch.zeros(length, length, dtype=torch.float64)
        matrix.scatter_add_(1, columns, taps.expand(length, radius).contiguous())
        return matrix.to(device=device, dtype=dtype)


def gaussian_blur(img: Tensor, radius: int = USM_RADIUS) -> Tensor:
    """The reference USM's blur: `radius` x `radius` Gaussian (OpenCV's sigma), reflect padding."""
    rows = _blur_matrix(img.shape[-2], radius, img.device, img.dtype)  # (H, H)
    columns = _blur_matrix(img.shape[-1], radius, img.device, img.dtype)  # (W, W)
    return rows @ img @ columns.mT  # (..., H, W)


def usm_sharpen(
    img: Tensor, *, weight: float = USM_WEIGHT, threshold: float = USM_THRESHOLD, radius: int = USM_RADIUS
) -> Tensor:
    """USM-sharpened images (B, C, H, W) in [0, 1], as the reference's USMSharp."""
    residual = img - gaussian_blur(img, radius)
    mask = (residual.abs() * 255 > threshold).to(img.dtype)
    soft_mask = gaussian_blur(mask, radius)
    sharp = (img + weight * residual).clamp(0, 1)
    return soft_mask * sharp + (1 - soft_mask) * img
