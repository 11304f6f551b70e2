"""Validation samples: ``bicubic | SR | HR`` strips as PNG, for eyes rather than metrics."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor
from torchvision.io import write_png

from sr_gan.atomic import atomic_path
from sr_gan.metrics import quantize


def save_comparison(path: Path, bicubic: Tensor, sr: Tensor, hr: Tensor) -> Path:
    """Write the three ``(3, H, W)`` images side by side (clamped, rounded to uint8) to ``path``."""
    strip = torch.cat([quantize(bicubic), quantize(sr), quantize(hr)], dim=-1)  # (3, H, 3W)
    with atomic_path(path) as tmp:
        write_png(strip.to(torch.uint8).cpu(), str(tmp))
    return path
