"""MATLAB-compatible bicubic (ours, two matmuls) against torch's antialiased bicubic interpolate."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.timing import median_ms, resolve_device
from sr_gan.ops import imresize


def run(device: str) -> list[dict]:
    dev = resolve_device(device)
    hr = torch.rand(16, 3, 128, 128, device=dev)  # a training batch of ESRGAN crops
    ours = median_ms(lambda: imresize(hr, 0.25), dev)
    base = median_ms(lambda: F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True), dev)
    return [
        {
            "name": "x4 bicubic degradation, 16x128px",
            "device": str(dev),
            "ours_ms": ours,
            "baseline_ms": base,
            "baseline": "F.interpolate antialias",
        }
    ]
