"""The standard SR degradation: MATLAB-compatible bicubic downscaling, stored as 8 bits."""

from __future__ import annotations

from torch import Tensor

from sr_gan.metrics import quantize
from sr_gan.ops.imresize import imresize


def bicubic_degrade(hr: Tensor, scale: int, *, to_8bit: bool = True) -> Tensor:
    """LR = ``imresize(HR, 1/scale)`` (B, 3, H/s, W/s), rounded to 1/255 steps if ``to_8bit``.

    Rounding reproduces the LR PNGs of DIV2K and the benchmark sets, made offline by MATLAB; the
    training pipeline and ``evaluate`` both use this one function so that they see the same LR.
    """
    lr = imresize(hr, 1 / scale)
    return quantize(lr) / 255 if to_8bit else lr
