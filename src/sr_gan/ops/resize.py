"""Random resizing of Real-ESRGAN: one output size per batch, one interpolation mode per sample.

The reference draws one scale factor and one mode (area, bilinear, bicubic: `F.interpolate`
defaults, no antialiasing) per batch. The size must be one per batch (a batch is one tensor); the
mode need not: each sample takes its own, by computing the three resizes (Kornia's `resize`, i.e.
`F.interpolate`) and selecting per sample with `torch.where`. The three cost little next to the
21x21 blur, and the batch gets the diversity that the reference buys with its pool of past batches.
"""

from __future__ import annotations

import torch
from kornia.geometry.transform import resize
from torch import Tensor

RESIZE_MODES = ("area", "bilinear", "bicubic")  # realesrgan_model.py: random.choice(['area', 'bilinear', 'bicubic'])


def resize_per_sample_mode(img: Tensor, size: tuple[int, int], mode: Tensor) -> Tensor:
    """Resize (B, C, H, W) to `size`; sample i uses ``RESIZE_MODES[mode[i]]`` ((B,) int64)."""
    if tuple(img.shape[-2:]) == tuple(size):
        return img  # all three modes are the identity at scale 1
    selector = mode[:, None, None, None]  # (B, 1, 1, 1)
    out = resize(img, size, interpolation=RESIZE_MODES[0])
    for index, name in enumerate(RESIZE_MODES[1:], start=1):
        out = torch.where(selector == index, resize(img, size, interpolation=name, align_corners=False), out)
    return out
