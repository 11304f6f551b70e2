"""Inference on images of any size: a tiled forward pass.

`tiled_forward` cuts the LR image into `tile` x `tile` cores, gives each `overlap` LR pixels of
context on every side, runs the generator on batches of these equal-sized windows and keeps only
the cores of the SR outputs. With `overlap` at least the network's receptive-field radius the
result equals the untiled forward pass (no seams); smaller overlaps trade exactness for memory.
Windows travel to the model's device one batch at a time and the SR image is assembled on the
input's device, so a CPU input bounds the accelerator memory by the batch of windows.

`sr_tiles` yields the SR cores one by one, for a caller that stores them its own way (upscale
rounds each to its file's 8 or 16 bits, so no float image of the output size exists);
`tiled_forward` assembles them into one float32 image (evaluate).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from sr_gan.errors import UserError


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _windows(length: int, tile: int, overlap: int) -> tuple[int, list[tuple[int, int]]]:
    """Core size and (core start, window start) along one axis; every window has the same size.

    Cores are `tile` long and cover [0, length); the last one is shifted back to end at the border
    instead of being shorter. A window is its core plus `overlap` on each side, shifted inside the
    image where it would stick out, so it keeps at least `overlap` of context on inner sides.
    """
    core = min(tile, length)
    window = min(length, core + 2 * overlap)
    core_starts = [*range(0, length - core, core), length - core]
    return core, [(c, min(max(c - overlap, 0), length - window)) for c in core_starts]


@torch.no_grad()
def tiled_forward(
    model: nn.Module,
    lr: torch.Tensor,
    *,
    scale: int,
    tile: int = 0,
    overlap: int = 0,
    batch_size: int = 1,
) -> torch.Tensor:
    """Super-resolve `lr` (B, C, h, w) tile by tile; returns float32 (B, C_out, h·scale, w·scale).

    The cores of `sr_tiles` written into one image; a single window (`tile=0`, or an image no
    larger than one tile) is the plain forward pass, returned without a copy.
    """
    size = (lr.shape[-2] * scale, lr.shape[-1] * scale)
    out: torch.Tensor | None = None
    for top, left, core in sr_tiles(model, lr, scale=scale, tile=tile, overlap=overlap, batch_size=batch_size):
        if out is None:
            if core.shape[-2:] == size:  # the whole image in one window
                return core
            out = core.new_empty((*core.shape[:2], *size))
        out[..., top : top + core.shape[-2], left : left + core.shape[-1]] = core
    assert out is not None  # there is always at least one window
    return out


@torch.no_grad()
def sr_tiles(
    model: nn.Module, lr: torch.Tensor, *, scale: int, tile: int, overlap: int, batch_size: int = 1
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Super-resolve `lr` (B, C, h, w) tile by tile, yielding `(top, left, core)`: the float32
    (B, C_out, ch, cw) SR pixels at rows top..top+ch, columns left..left+cw of the output.

    Cores cover the h·scale x w·scale output; the last core of a row or column is shifted back to
    end at the border, so it can overlap its neighbour: store cores in the order they come (as
    `tiled_forward` does). `tile=0` (or an image no larger than one tile) is one core, the plain
    forward pass. Networks that pixel-unshuffle their input (RRDBNet at x1/x2, attribute
    `unshuffle`) get tiles, overlaps and window positions on multiples of that factor, so each
    window sees the same pixel phases as the whole image; an image whose sides are not multiples
    of it is edge-padded and the cores cropped back. `batch_size` windows (of one image) go
    through the model at once: faster on large accelerators, that many times the activation
    memory. Runs on the model's device in the ambient autocast state; cores come back on `lr`'s
    device.
    """
    if tile < 0 or overlap < 0:
        raise UserError(f"tile={tile}, tile_overlap={overlap}: both must be >= 0 (tile=0 turns tiling off)")
    align = getattr(model, "unshuffle", 1)
    height, width = lr.shape[-2:]
    pad_h, pad_w = _round_up(height, align) - height, _round_up(width, align) - width
    if pad_h or pad_w:
        lr = F.pad(lr, (0, pad_w, 0, pad_h), mode="replicate")  # (B, C, h + pad_h, w + pad_w)
    tile, overlap = _round_up(tile, align), _round_up(overlap, align)
    for top, left, core in _cores(model, lr, scale=scale, tile=tile, overlap=overlap, batch_size=batch_size):
        yield top, left, core[..., : height * scale - top, : width * scale - left]  # padding cropped


def _cores(
    model: nn.Module, lr: torch.Tensor, *, scale: int, tile: int, overlap: int, batch_size: int
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """`sr_tiles` on an image whose sides fit the model: equal windows, batched, cores yielded."""
    device = next(model.parameters()).device
    height, width = lr.shape[-2:]
    if tile == 0 or (height <= tile and width <= tile):
        yield 0, 0, _checked(model(lr.to(device)), lr, scale).to(lr.device)
        return
    core_h, rows = _windows(height, tile, overlap)
    core_w, cols = _windows(width, tile, overlap)
    win_h, win_w = min(height, core_h + 2 * overlap), min(width, core_w + 2 * overlap)
    positions = [(row, col) for row in rows for col in cols]
    batch = lr.shape[0]
    step = max(1, batch_size // batch)  # windows per forward pass
    for first in range(0, len(positions), step):
        chunk = positions[first : first + step]
        windows = torch.cat([lr[..., wy : wy + win_h, wx : wx + win_w] for (_, wy), (_, wx) in chunk])
        sr = _checked(model(windows.to(device)), windows, scale).to(lr.device)  # (len(chunk)·B, C, ...)
        for k, ((cy, wy), (cx, wx)) in enumerate(chunk):
            top, left = (cy - wy) * scale, (cx - wx) * scale
            core = sr[k * batch : (k + 1) * batch, :, top : top + core_h * scale, left : left + core_w * scale]
            yield cy * scale, cx * scale, core
        del windows, sr, core  # not kept alive while the next batch runs


def _checked(sr: torch.Tensor, lr: torch.Tensor, scale: int) -> torch.Tensor:
    """`sr` as float32 after checking that it is `lr` magnified by `scale`."""
    if sr.shape[-2:] != (lr.shape[-2] * scale, lr.shape[-1] * scale):
        raise UserError(
            f"the model maps {lr.shape[-2]}x{lr.shape[-1]} to {sr.shape[-2]}x{sr.shape[-1]}, "
            f"not x{scale}: the network is of another scale than its config or file says; give its own "
            "(a generator={..., scale: N} config, or evaluate's scale=)"
        )
    return sr.float()
