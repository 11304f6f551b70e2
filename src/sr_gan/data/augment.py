"""On-device paired augmentation: flips and 90° rotations, the same for HR and LR.

Kornia's augmentation classes are not used: they draw parameters per input, and their
`RandomRotation90` is an affine warp with interpolation. Here one per-sample draw (made by the
data workers from each patch's seed, see `TrainPatchDataset`) is shared by the HR and the
(smaller) LR batch, and every transform is an exact index permutation applied with `torch.where`:
no host sync, no Python branch on a random value.
"""

from __future__ import annotations

import torch
from torch import Tensor


def paired_augment(hr: Tensor, lr: Tensor | None, flips: Tensor) -> tuple[Tensor, Tensor | None]:
    """Apply per-sample dihedral transforms identically to `hr` (B, C, H, W) and `lr`.

    `flips` is a boolean (B, 3): horizontal flip, vertical flip, H/W transpose, applied in that
    order where True. With the three drawn uniformly, the 8 transforms of the square's dihedral
    group are equally likely (transpose ∘ flip = a 90° rotation). Patches must be square. Any
    dtype works (uint8 included).
    """
    if hr.shape[-1] != hr.shape[-2]:
        raise ValueError(f"paired_augment needs square patches, got HR {tuple(hr.shape)}")
    if flips.shape != (hr.shape[0], 3) or (lr is not None and lr.shape[0] != hr.shape[0]):
        raise ValueError(
            f"paired_augment: HR {tuple(hr.shape)}, LR {None if lr is None else tuple(lr.shape)} and flips "
            f"{tuple(flips.shape)} must share the batch size, flips being (B, 3)"
        )
    masks = flips.T[..., None, None, None]  # (3, B, 1, 1, 1): broadcasts over (B, C, H, W)
    images = [hr] if lr is None else [hr, lr]
    for mask, transform in zip(masks, (_hflip, _vflip, _transpose), strict=True):
        images = [torch.where(mask, transform(x), x) for x in images]
    return images[0], (images[1] if lr is not None else None)


def _hflip(x: Tensor) -> Tensor:
    return x.flip(-1)


def _vflip(x: Tensor) -> Tensor:
    return x.flip(-2)


def _transpose(x: Tensor) -> Tensor:
    return x.transpose(-2, -1)
