"""The standard SR degradation: MATLAB-compatible bicubic downscaling, stored as 8 bits."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sr_gan.metrics import quantize
from sr_gan.ops.imresize import imresize


def bicubic_degrade(hr: Tensor, scale: int, *, to_8bit: bool = True) -> Tensor:
    """LR = ``imresize(HR, 1/scale)`` (B, 3, H/s, W/s), rounded to 1/255 steps if ``to_8bit``.

    Rounding reproduces the LR PNGs of DIV2K and the benchmark sets, made offline by MATLAB; the
    training pipeline and ``evaluate`` both use this one function so that they see the same LR.
    """
    lr = imresize(hr, 1 / scale)
    return quantize(lr) / 255 if to_8bit else lr


class BicubicDegradation(nn.Module):
    """``lr, hr = degradation(hr, generator=g)`` for the papers' protocol: `bicubic_degrade`, HR unchanged.

    Deterministic (the generator is accepted and unused), so the call has the signature of
    `RealESRGANDegradation`; with ``return_params`` the drawn parameters are an empty dict.
    """

    def __init__(self, *, scale: int = 4, quantize: bool = True) -> None:
        super().__init__()
        self.scale, self.quantize = scale, quantize

    def forward(
        self, hr: Tensor, generator: torch.Generator | None = None, return_params: bool = False
    ) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, dict[str, Tensor]]:
        lr = bicubic_degrade(hr, self.scale, to_8bit=self.quantize)  # (B, 3, H/s, W/s)
        return (lr, hr, {}) if return_params else (lr, hr)
