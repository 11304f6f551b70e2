"""Image folders for super-resolution: workers only decode and crop, and return uint8 tensors.

Float conversion, augmentation and the (on-the-fly) bicubic degradation run batched on the
training device in `SRDataModule.on_after_batch_transfer`, so no worker does float math or
resizing. Items are dicts of uint8 (3, H, W) tensors: {"hr"} or {"hr", "lr"} (+ "name").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from sr_gan.imageio import DataError, image_size, read_image  # also imported from here by older code

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def list_images(folder: str | Path) -> list[Path]:
    """The image files of a folder (png, jpg, jpeg, bmp, webp), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist: check the data.*_dir paths")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not images:
        raise FileNotFoundError(f"image folder {folder} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
    return images


@dataclass(frozen=True)
class ImagePair:
    """An HR image, its LR partner (None: the LR is made on the device) and the HR size after
    mod-crop to a multiple of `scale` (the top-left part is kept)."""

    hr: Path
    lr: Path | None
    height: int
    width: int

    @property
    def name(self) -> str:
        return self.hr.stem

    def load(self) -> dict[str, Tensor]:
        """Decode both images: {"hr": (3, H, W), "lr": (3, H/s, W/s)} uint8, HR mod-cropped."""
        images = {"hr": read_image(self.hr)[:, : self.height, : self.width]}
        if self.lr is not None:
            images["lr"] = read_image(self.lr)
        return images


def find_lr_partner(hr: Path, lr_by_stem: dict[str, Path], lr_dir: Path, scale: int) -> Path:
    """The LR file of `hr`: same stem, or DIV2K naming (`0001.png` ↔ `X4/0001x4.png`)."""
    stems = (hr.stem, f"{hr.stem}x{scale}")
    for stem in stems:
        if stem in lr_by_stem:
            return lr_by_stem[stem]
    raise FileNotFoundError(f"no LR partner of {hr} in {lr_dir}: expected a file named {stems[0]}.* or {stems[1]}.*")


def pair_images(hr_dir: str | Path, lr_dir: str | Path | None, scale: int) -> list[ImagePair]:
    """Pair every HR image of `hr_dir` with its LR image in `lr_dir` (if given), sorted by name.

    Sizes come from the file headers, so a wrong pair fails here, at start-up, naming both files.
    """
    lr_by_stem = {} if lr_dir is None else {p.stem: p for p in list_images(lr_dir)}
    pairs = []
    for hr in list_images(hr_dir):
        height, width = image_size(hr)
        height, width = height - height % scale, width - width % scale  # mod-crop
        lr = None
        if lr_dir is not None:
            lr = find_lr_partner(hr, lr_by_stem, Path(lr_dir), scale)
            lr_height, lr_width = image_size(lr)
            if (lr_height * scale, lr_width * scale) != (height, width):
                raise DataError(
                    f"size mismatch at data.scale={scale}: LR {lr} is {lr_width}x{lr_height} (WxH) but "
                    f"HR {hr}, mod-cropped to {width}x{height}, needs LR {width // scale}x{height // scale}"
                )
        pairs.append(ImagePair(hr=hr, lr=lr, height=height, width=width))
    return pairs


class TrainPatchDataset(Dataset):
    """Random `patch_size` HR crops on the `scale` grid, with the LR crop at the same place.

    With an LR folder the LR crop at (y, x) of size patch_size/scale pairs with the HR crop at
    (y·scale, x·scale); without one only {"hr"} is returned and the LR is made on the device.
    `repeat` multiplies the length (epochs of enough batches on tiny sets); `cache` keeps the
    decoded images in memory (decoded here, in the main process, so forked workers share them).
    """

    def __init__(
        self,
        *,
        hr_dir: str | Path,
        lr_dir: str | Path | None = None,
        scale: int,
        patch_size: int,
        repeat: int = 1,
        cache: bool = False,
    ) -> None:
        if patch_size % scale:
            raise DataError(f"data.patch_size={patch_size} is not a multiple of data.scale={scale}")
        if repeat < 1:
            raise DataError(f"data.repeat={repeat} must be >= 1")
        self.pairs = pair_images(hr_dir, lr_dir, scale)
        for pair in self.pairs:
            if min(pair.height, pair.width) < patch_size:
                raise DataError(
                    f"image {pair.hr} is {pair.width}x{pair.height} after mod-crop, smaller than "
                    f"data.patch_size={patch_size}: remove it or lower data.patch_size"
                )
        self.scale, self.patch_size, self.repeat = scale, patch_size, repeat
        self.cache = [pair.load() for pair in self.pairs] if cache else None

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        index %= len(self.pairs)
        pair = self.pairs[index]
        images = self.cache[index] if self.cache is not None else pair.load()
        s, lr_patch = self.scale, self.patch_size // self.scale
        # top-left corner drawn on the LR grid, so the HR corner is a multiple of the scale
        y = int(torch.randint(pair.height // s - lr_patch + 1, ()))
        x = int(torch.randint(pair.width // s - lr_patch + 1, ()))
        patches = {"hr": images["hr"][:, y * s : (y + lr_patch) * s, x * s : (x + lr_patch) * s]}  # (3, P, P)
        if "lr" in images:
            patches["lr"] = images["lr"][:, y : y + lr_patch, x : x + lr_patch]  # (3, P/s, P/s)
        return patches


class ValImageDataset(Dataset):
    """Whole images for validation/test: {"hr", "name"} (+ "lr" with an LR folder), HR mod-cropped."""

    def __init__(self, *, hr_dir: str | Path, lr_dir: str | Path | None = None, scale: int) -> None:
        self.pairs = pair_images(hr_dir, lr_dir, scale)
        self.scale = scale

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        pair = self.pairs[index]
        return {**pair.load(), "name": pair.name}
