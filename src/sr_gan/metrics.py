"""The SR evaluation protocol: uint8 levels, border crop, Y channel, PSNR and SSIM per image.

As in the ESRGAN / BasicSR code that every paper's numbers come from: the SR output is clamped to
[0, 1], scaled to 255 and rounded (as if saved to a PNG), `crop_border` pixels (the scale) are cut
from every side, the Y channel of BT.601 is taken (or RGB kept), and the metrics are computed in
float64 with data range 255.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

SSIM_WINDOW = 11  # side of SSIM's Gaussian window (sigma 1.5)


def quantize(x: Tensor) -> Tensor:
    """Clamp to [0, 1], scale to 255 and round: the float values 0..255 of a saved uint8 image."""
    return x.clamp(0, 1).mul(255).round()


def rgb_to_y(x255: Tensor) -> Tensor:
    """Y of BT.601 like MATLAB's ``rgb2ycbcr``: (B, 3, H, W) in 0..255 -> (B, 1, H, W) in 16..235.

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255, not rounded. (kornia's ``rgb_to_ycbcr`` is the
    full-range JPEG variant, Y = 0.299 R + 0.587 G + 0.114 B, which is not what SR papers report.)
    """
    if x255.ndim != 4 or x255.shape[1] != 3:
        raise ValueError(f"rgb_to_y: expected (B, 3, H, W) RGB, got shape {tuple(x255.shape)}")
    r, g, b = x255[:, 0:1], x255[:, 1:2], x255[:, 2:3]  # (B, 1, H, W) each
    return 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255


def crop_border(x: Tensor, n: int) -> Tensor:
    """Cut `n` pixels from each side of ``(..., H, W)``; ``n = 0`` returns `x` unchanged."""
    if n < 0:
        raise ValueError(f"crop_border: n must be >= 0, got {n}")
    return x[..., n:-n, n:-n] if n else x


def protocol_images(sr: Tensor, hr: Tensor, *, crop: int, test_y_channel: bool = True) -> tuple[Tensor, Tensor]:
    """Quantize, crop and (optionally) take Y of both images, in float64 on their device: what
    every full-reference score of the protocol (PSNR, SSIM, VIF) is computed on."""
    if sr.shape != hr.shape or sr.ndim != 4 or sr.shape[1] != 3:
        raise ValueError(
            f"metrics: sr {tuple(sr.shape)} and hr {tuple(hr.shape)} must both be (B, 3, H, W) "
            "of one size; mod-crop the HR image to a multiple of the scale"
        )
    # MPS has no float64: fall back to float32 there, everywhere else compute in float64.
    dtype = torch.float32 if sr.device.type == "mps" else torch.float64
    sr, hr = (crop_border(quantize(x.to(dtype)), crop) for x in (sr, hr))  # (B, 3, h, w)
    return (rgb_to_y(sr), rgb_to_y(hr)) if test_y_channel else (sr, hr)


def psnr(sr: Tensor, hr: Tensor, *, crop_border: int, test_y_channel: bool = True) -> Tensor:
    """Per-image PSNR in dB, ``10 log10(255^2 / MSE)``, shape ``(B,)``; ``inf`` when sr == hr.

    `sr` is the raw model output (clamped here), `hr` exact uint8 levels / 255, both (B, 3, H, W).
    Hand-written because torchmetrics' PSNR keeps ``log(255)`` and ``log(10)`` in float32, which
    moves float64 results by about 1e-6 dB.
    """
    sr, hr = protocol_images(sr, hr, crop=crop_border, test_y_channel=test_y_channel)
    mse = (sr - hr).pow(2).mean(dim=(1, 2, 3))  # (B,)
    return 10 * torch.log10(255**2 / mse)


def _gaussian_filter_valid(x: Tensor) -> Tensor:
    """'Valid' filtering of (N, 1, H, W) by the 11x11 Gaussian (sigma 1.5): (N, 1, H-10, W-10)."""
    g = torch.signal.windows.gaussian(SSIM_WINDOW, std=1.5, dtype=x.dtype, device=x.device)
    g = g / g.sum()  # (11,), cv2.getGaussianKernel(11, 1.5)
    # Separable: the 2-D window is outer(g, g); two 1-D passes are several times faster.
    x = F.conv2d(x, g.view(1, 1, -1, 1))  # (N, 1, H-10, W)
    return F.conv2d(x, g.view(1, 1, 1, -1))  # (N, 1, H-10, W-10)


def ssim(sr: Tensor, hr: Tensor, *, crop_border: int, test_y_channel: bool = True) -> Tensor:
    """Per-image SSIM (Wang et al. 2004), shape ``(B,)``, mean over channels for RGB.

        SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))

    averaged over the map; means mu and (co)variances s are local statistics from an 11x11
    Gaussian window (sigma 1.5) with 'valid' filtering (no padded positions);
    C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2.
    Hand-written because torchmetrics' SSIM (1.9) averages its map over reflect-padded border
    positions too, which moves SSIM by about 1e-3 against the protocol.
    """
    sr, hr = protocol_images(sr, hr, crop=crop_border, test_y_channel=test_y_channel)  # (B, C, H, W)
    if min(sr.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"ssim: the images cropped by crop_border={crop_border} are {tuple(sr.shape[-2:])}, "
            f"smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} window; use larger images or less crop"
        )
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    stats = torch.stack([sr, hr, sr * sr, hr * hr, sr * hr])  # (5, B, C, H, W)
    filtered = _gaussian_filter_valid(stats.flatten(0, 2)[:, None])  # (5 B C, 1, H-10, W-10)
    mu_x, mu_y, e_xx, e_yy, e_xy = filtered.view(*stats.shape[:3], *filtered.shape[-2:])
    sigma_x_sq, sigma_y_sq, sigma_xy = e_xx - mu_x**2, e_yy - mu_y**2, e_xy - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (sigma_x_sq + sigma_y_sq + c2)
    )  # (B, C, H-10, W-10)
    return ssim_map.mean(dim=(1, 2, 3))
