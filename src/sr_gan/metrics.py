"""The SR evaluation protocol: uint8 levels, border crop, Y channel, PSNR and SSIM per image.

As in the ESRGAN / BasicSR code that every paper's numbers come from: the SR output is clamped to
[0, 1], scaled to 255 and rounded (as if saved to a PNG), `crop_border` pixels (the scale) are cut
from every side, the Y channel of BT.601 is taken (or RGB kept), and the metrics are computed in
float64 with data range 255.
"""

from __future__ import annotations

import kornia
import torch
from torch import Tensor

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


def ssim(sr: Tensor, hr: Tensor, *, crop_border: int, test_y_channel: bool = True) -> Tensor:
    """Per-image SSIM (Wang et al. 2004), shape ``(B,)``, mean over channels for RGB.

        SSIM = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))

    averaged over the map; means mu and (co)variances s are local statistics from an 11x11
    Gaussian window (sigma 1.5) with 'valid' filtering (no padded positions);
    C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2. The map is Kornia's (``padding="valid"``: equal to
    the reference implementation's to ~3e-15 on our protocol images, and faster than the separable
    filter we had); the protocol's quantisation, border crop and Y channel stay ours. (torchmetrics'
    SSIM 1.9 averages its map over reflect-padded border positions too: ~1e-3 off the protocol.)
    """
    sr, hr = protocol_images(sr, hr, crop=crop_border, test_y_channel=test_y_channel)  # (B, C, H, W)
    if min(sr.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(
            f"ssim: the images cropped by crop_border={crop_border} are {tuple(sr.shape[-2:])}, "
            f"smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} window; use larger images or less crop"
        )
    ssim_map = kornia.metrics.ssim(sr, hr, SSIM_WINDOW, max_val=255.0, padding="valid")  # (B, C, H-10, W-10)
    return ssim_map.mean(dim=(1, 2, 3))
