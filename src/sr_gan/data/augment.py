"""On-device paired augmentation: random flips and 90° rotations, the same for HR and LR.

Kornia's augmentation classes are not used: they draw parameters per input, and their
`RandomRotation90` is an affine warp with interpolation. Here one per-sample draw is shared by the
HR and the (smaller) LR batch, and every transform is an exact index permutation. Random choices
are boolean masks made on the device and applied with `torch.where`: no host sync, no Python
branch on a random value.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _hflip(x: Tensor) -> Tensor:
    return x.flip(-1)


def _vflip(x: Tensor) -> Tensor:
    return x.flip(-2)


def _transpose(x: Tensor) -> Tensor:
    return x.transpose(-2, -1)


def paired_augment(
    hr: Tensor,
    lr: Tensor | None,
    *,
    hflip: bool = True,
    vflip: bool = True,
    rot90: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Apply a random dihedral transform per sample, identically to `hr` (B, C, H, W) and `lr`.

    Each enabled transform (horizontal flip, vertical flip, H/W transpose) is applied to a random
    half of the samples; with all three the 8 transforms of the square's dihedral group are equally
    likely (transpose ∘ flip = a 90° rotation). The transpose needs square patches. Any dtype works
    (uint8 included). `generator`, if given, must live on the batch's device.
    """
    if rot90 and hr.shape[-1] != hr.shape[-2]:
        raise ValueError(f"paired_augment(rot90=True) needs square patches, got HR {tuple(hr.shape)}")
    if lr is not None and lr.shape[0] != hr.shape[0]:
        raise ValueError(f"HR batch {tuple(hr.shape)} and LR batch {tuple(lr.shape)} differ in size")
    # one boolean per transform and sample, shaped to broadcast over (B, C, H, W)
    draws = torch.rand(3, hr.shape[0], 1, 1, 1, device=hr.device, generator=generator) < 0.5
    images = [hr] if lr is None else [hr, lr]
    for enabled, mask, transform in zip((hflip, vflip, rot90), draws, (_hflip, _vflip, _transpose)):
        if enabled:
            images = [torch.where(mask, transform(x), x) for x in images]
    return images[0], (images[1] if lr is not None else None)
