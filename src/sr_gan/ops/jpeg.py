"""JPEG compression with a quality per sample: Kornia's differentiable codec, without host syncs.

`kornia.enhance.jpeg_codec_differentiable` (Reich et al. 2024) is a batched JPEG encode-decode
with one quality per image: YCbCr, 4:2:0 chroma subsampling, 8x8 DCT, the standard quantization
tables scaled by quality as libjpeg does, rounding, decode. Its forward is within a few 8-bit levels
of libjpeg (Pillow) at the same quality (measured in tests/test_degradation_ops.py); its rounding
is the differentiable r + (x - r)^3, so its artifacts are slightly weaker than libjpeg's.

The public function first checks that every quality lies in [0, 100] by reading
`quality.amin().item()` and `quality.amax().item()`: two host syncs per call, three calls per
Real-ESRGAN batch. Our qualities are drawn inside a range validated when the pipeline is built, so
`jpeg_compress` runs the same codec stages without that check; it equals the public function
bitwise (tested). A Kornia without these internals falls back to the public function (with syncs).
"""

from __future__ import annotations

import torch
from kornia.enhance import jpeg_codec_differentiable
from torch import Tensor

try:  # Kornia 0.9's codec stages
    from kornia.enhance.jpeg import (
        _default_quantization_tables,
        _differentiable_clipping,
        _jpeg_decode,
        _jpeg_encode,
        _perform_padding,
    )
except ImportError:  # pragma: no cover - other Kornia versions: the public function, with its syncs
    _jpeg_encode = None


def jpeg_compress(img: Tensor, quality: Tensor) -> Tensor:
    """JPEG encode-decode of float32 RGB (B, 3, H, W) in [0, 1], quality (B,) in [1, 100]."""
    if _jpeg_encode is None:  # pragma: no cover
        return jpeg_codec_differentiable(img, quality)
    table_y, table_c = _default_quantization_tables(img.device, img.dtype)  # (8, 8) each, cached by Kornia
    table_y, table_c = table_y[None], table_c[None]  # (1, 8, 8): shared by the batch
    padded, pad_h, pad_w = _perform_padding(img)  # bottom/right replicate padding to multiples of 16
    height, width = padded.shape[-2:]
    quality = quality.to(img.dtype)
    with torch.autocast(img.device.type, enabled=False):
        y, cb, cr = _jpeg_encode(padded, quality, table_y, table_c)
        decoded = _jpeg_decode(y, cb, cr, quality, height, width, table_y, table_c)
        decoded = _differentiable_clipping(decoded, min_val=0.0, max_val=255.0)  # as the public function
    return decoded[..., : height - pad_h, : width - pad_w]
