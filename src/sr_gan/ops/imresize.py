"""MATLAB-compatible bicubic `imresize`, batched and differentiable, on any device.

Every SR benchmark makes its LR images with MATLAB's ``imresize(hr, 1/s, 'bicubic')`` and reports
the bicubic baseline with ``imresize(lr, s, 'bicubic')``. We reproduce MATLAB exactly instead of
calling ``torch.nn.functional.interpolate`` or kornia (which wraps it) because they differ:

- ``F.interpolate(mode="bicubic")`` uses the cubic kernel with a = -0.75 and clamps coordinates at
  the border (replicate padding), so even upscaling differs from MATLAB everywhere;
- ``antialias=True`` switches to a = -0.5 and widens the kernel like MATLAB, so the interior
  matches, but near the border it renormalizes the truncated kernel instead of mirroring the image
  (MATLAB's symmetric padding); the border pixels then differ and shift PSNR measured against
  models trained on MATLAB-degraded data.

Resizing is separable and linear, so each axis is one dense ``(out, in)`` matrix holding MATLAB's
weights with the symmetric padding folded in (mirrored taps add onto in-range columns). The image
is resized along H then W with one matmul each: batched, autograd-friendly, fast on GPU.

The matrices are cached per (sizes, scale, antialiasing, device, dtype) in a bounded LRU cache
(`_CACHE_SIZE` entries: training uses one or two shapes, validation one per image size), and are
always built outside inference mode: a matrix first made during validation (`torch.inference_mode`)
would otherwise be an inference tensor, which a later differentiable call cannot save for backward.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor

_CUBIC_WIDTH = 4.0  # support of the cubic kernel, in input pixels
_CACHE_SIZE = 16  # resize matrices kept per process; each is (out, in) on its device


def _cubic(x: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    absx = x.abs()
    absx2, absx3 = absx**2, absx**3
    near = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
    far = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2))
    return near + far


@lru_cache(maxsize=_CACHE_SIZE)
def _resize_matrix(
    in_length: int,
    out_length: int,
    scale: float,
    antialiasing: bool,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    """The ``(out_length, in_length)`` matrix of MATLAB's ``contributions`` for one axis.

    Built in float64 on the CPU (MATLAB computes in double), then moved to `device` / `dtype`; always
    as a normal tensor (outside inference mode, no autograd history), since the cache outlives the
    mode of the call that filled it.
    """
    with torch.inference_mode(False), torch.no_grad():
        return _build_resize_matrix(in_length, out_length, scale, antialiasing).to(device=device, dtype=dtype)


def _build_resize_matrix(in_length: int, out_length: int, scale: float, antialiasing: bool) -> Tensor:
    """The float64 CPU matrix of `_resize_matrix`."""
    weights, columns = resize_taps(in_length, out_length, scale, antialiasing)  # (out, P) each
    matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
    matrix.scatter_add_(1, columns, weights)  # mirrored taps add onto their in-range column
    return matrix


def resize_taps(in_length: int, out_length: int, scale: float, antialiasing: bool) -> tuple[Tensor, Tensor]:
    """MATLAB's ``contributions`` for one axis as taps: float64 weights (out_length, P) and the 0-based
    input indices (out_length, P) they apply to, symmetric padding folded into the indices (a
    mirrored tap names its in-range pixel). P = 6 when enlarging. Output i is
    ``sum_p weights[i, p] * x[columns[i, p]]``: the rows of `_resize_matrix` without its zeros."""
    antialias = antialiasing and scale < 1
    kernel_width = _CUBIC_WIDTH / scale if antialias else _CUBIC_WIDTH
    out_coords = torch.arange(1, out_length + 1, dtype=torch.float64)  # (out,), 1-based like MATLAB
    centers = out_coords / scale + 0.5 * (1 - 1 / scale)  # (out,) in input coordinates
    left = torch.floor(centers - kernel_width / 2)
    num_taps = math.ceil(kernel_width) + 2
    taps = left[:, None] + torch.arange(num_taps, dtype=torch.float64)  # (out, P), 1-based
    distance = centers[:, None] - taps  # (out, P)
    # Shrinking with antialiasing stretches the kernel by 1/scale: h(x) = scale * cubic(scale * x).
    weights = scale * _cubic(scale * distance) if antialias else _cubic(distance)
    weights = weights / weights.sum(dim=1, keepdim=True)  # (out, P)
    # Symmetric padding: MATLAB indexes aux = [1:in, in:-1:1] modulo its length 2 * in.
    mirror = torch.cat([torch.arange(in_length), torch.arange(in_length - 1, -1, -1)])  # (2 in,)
    columns = mirror[(taps.long() - 1) % (2 * in_length)]  # (out, P), 0-based
    return weights, columns


def imresize(
    x: Tensor,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    antialiasing: bool = True,
) -> Tensor:
    """Resize like MATLAB's ``imresize(x, scale, 'bicubic')`` (or ``imresize(x, size, ...)``).

    Args:
        x: float images ``(B, C, H, W)`` or ``(C, H, W)``, any device, float32 or float64. Values
            are not clamped or rounded (MATLAB rounds only uint8 inputs).
        scale: one factor for both axes; the output is ``ceil(H * scale) x ceil(W * scale)``.
            The LR image of an HR one at SR scale ``s`` is ``imresize(hr, 1 / s)``.
        size: ``(out_h, out_w)`` instead of `scale`; each axis then scales by ``out / in``.
        antialiasing: widen the kernel by ``1 / scale`` when shrinking (MATLAB's default).

    Returns:
        ``(..., out_h, out_w)`` tensor with the dtype and device of `x`.
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize: pass exactly one of `scale` or `size`")
    if not x.is_floating_point():
        raise TypeError(f"imresize: x has dtype {x.dtype}; convert it to float first (x.float() / 255)")
    if x.ndim not in (3, 4):
        raise ValueError(f"imresize: x must be (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    in_h, in_w = x.shape[-2:]
    if size is None:
        if scale <= 0:
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        out_h, out_w = math.ceil(in_h * scale), math.ceil(in_w * scale)
        scale_h = scale_w = float(scale)
    else:
        out_h, out_w = size
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"imresize: size must be positive, got {size}")
        scale_h, scale_w = out_h / in_h, out_w / in_w
    weight_h = _resize_matrix(in_h, out_h, scale_h, antialiasing, x.device, x.dtype)  # (out_h, H)
    weight_w = _resize_matrix(in_w, out_w, scale_w, antialiasing, x.device, x.dtype)  # (out_w, W)
    return weight_h @ x @ weight_w.mT  # (..., out_h, W) then (..., out_h, out_w)
