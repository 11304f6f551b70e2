"""Image folders for super-resolution: workers only decode and crop, and return uint8 tensors.

Float conversion, augmentation and the (on-the-fly) bicubic degradation run batched on the
training device in `SRDataModule.on_after_batch_transfer`, so no worker does float math or
resizing. Items are dicts of uint8 (3, H, W) tensors, {"hr"} or {"hr", "lr"}, with a training
patch's "flips" and "seed" or a validation image's "name" and "index" (its degradation seed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from sr_gan.data.prepared import PreparedImages, open_prepared
from sr_gan.imageio import MAX_IMAGE_PIXELS, DataError, UnreadableImage, image_size, list_images, read_image
from sr_gan.metrics import SSIM_WINDOW


@dataclass(frozen=True)
class ImagePair:
    """An HR image, its LR partner (None: the LR is made on the device) and the HR size after
    mod-crop to a multiple of `scale` (the top-left part is kept)."""

    hr: Path
    lr: Path | None
    height: int
    width: int
    max_pixels: int | None = MAX_IMAGE_PIXELS  # larger images are refused, naming `pixels_key`
    pixels_key: str = "data.max_image_pixels"  # the config key of `max_pixels` (evaluate: max_pixels)

    @property
    def name(self) -> str:
        return self.hr.stem

    def load(self, sides: tuple[str, ...] = ("hr", "lr")) -> dict[str, Tensor]:
        """Decode the images of `sides`: {"hr": (3, H, W), "lr": (3, H/s, W/s)} uint8, HR mod-cropped
        ("lr" only where there is an LR file)."""
        images = {}
        with _listed_image():
            if "hr" in sides:
                hr = read_image(self.hr, max_pixels=self.max_pixels, key=self.pixels_key)
                images["hr"] = hr[:, : self.height, : self.width]
            if "lr" in sides and self.lr is not None:
                images["lr"] = read_image(self.lr, max_pixels=self.max_pixels, key=self.pixels_key)
        return images


@contextmanager
def _listed_image() -> Iterator[None]:
    """An image of a data folder that cannot be read: the fix, after the file and the reason."""
    try:
        yield
    except UnreadableImage as err:
        raise DataError(f"{err}; replace it, or remove it from its folder") from None


def find_lr_partner(hr: Path, lr_by_stem: dict[str, Path], lr_dir: Path, scale: int) -> Path:
    """The LR file of `hr`: same stem, or DIV2K naming (`0001.png` ↔ `X4/0001x4.png`)."""
    stems = (hr.stem, f"{hr.stem}x{scale}")
    for stem in stems:
        if stem in lr_by_stem:
            return lr_by_stem[stem]
    raise FileNotFoundError(f"no LR partner of {hr} in {lr_dir}: expected a file named {stems[0]}.* or {stems[1]}.*")


def pair_images(
    hr_dir: str | Path,
    lr_dir: str | Path | None,
    scale: int,
    *,
    verify: bool = False,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    scale_key: str = "data.scale",
    pixels_key: str = "data.max_image_pixels",
) -> list[ImagePair]:
    """Pair every HR image of `hr_dir` with its LR image in `lr_dir` (if given), sorted by name.

    Sizes come from the file headers, so a wrong pair fails here, at start-up, naming both files
    and the caller's config key of the scale (`scale_key`); an image above `max_pixels` names the
    key of that limit (`pixels_key`);
    with `verify` every image is also decoded whole (a file truncated after its header is found
    now rather than at batch N). The problems of all files are collected and reported together.
    Images are named by their stem, so two of one stem in a folder (`x.png`, `x.jpg`) are refused.
    """
    hr_images = list(images_by_stem(list_images(hr_dir)).values())
    lr_by_stem = {} if lr_dir is None else images_by_stem(list_images(lr_dir))
    pairs, problems = [], []
    for hr in hr_images:
        try:
            pair = _pair(
                hr,
                lr_by_stem,
                lr_dir,
                scale,
                verify=verify,
                max_pixels=max_pixels,
                scale_key=scale_key,
                pixels_key=pixels_key,
            )
            pairs.append(pair)
        except (DataError, FileNotFoundError) as err:
            problems.append(err)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        shown = "; ".join(str(err) for err in problems[:_SHOWN_PROBLEMS])
        more = f"; and {len(problems) - _SHOWN_PROBLEMS} more" if len(problems) > _SHOWN_PROBLEMS else ""
        raise DataError(f"{len(problems)} images of {hr_dir} cannot be used: {shown}{more}")
    return pairs


_SHOWN_PROBLEMS = 10


def images_by_stem(images: list[Path]) -> dict[str, Path]:
    """The images of a folder by stem, the key of results and of LR partners; a stem that two
    files share (`x.png`, `x.jpg`: one would silently replace the other) is refused."""
    by_stem: dict[str, list[Path]] = {}
    for path in images:
        by_stem.setdefault(path.stem, []).append(path)
    if twins := [paths for paths in by_stem.values() if len(paths) > 1]:
        shown = "; ".join(" and ".join(map(str, paths)) for paths in twins[:_SHOWN_PROBLEMS])
        more = f"; and {len(twins) - _SHOWN_PROBLEMS} more" if len(twins) > _SHOWN_PROBLEMS else ""
        raise DataError(
            f"images of one name with two extensions: {shown}{more}; images are matched by their name "
            "without the extension: rename or remove one of each"
        )
    return {stem: paths[0] for stem, paths in by_stem.items()}


def _pair(
    hr: Path,
    lr_by_stem: dict[str, Path],
    lr_dir: str | Path | None,
    scale: int,
    *,
    verify: bool,
    max_pixels: int | None,
    scale_key: str,
    pixels_key: str,
) -> ImagePair:
    with _listed_image():
        height, width = image_size(hr, max_pixels=max_pixels, key=pixels_key)
    height, width = height - height % scale, width - width % scale  # mod-crop
    lr = None
    if lr_dir is not None:
        lr = find_lr_partner(hr, lr_by_stem, Path(lr_dir), scale)
        with _listed_image():
            lr_height, lr_width = image_size(lr, max_pixels=max_pixels, key=pixels_key)
        if (lr_height * scale, lr_width * scale) != (height, width):
            raise DataError(
                f"size mismatch at {scale_key}={scale}: LR {lr} is {lr_width}x{lr_height} (WxH) but "
                f"HR {hr}, mod-cropped to {width}x{height}, needs LR {width // scale}x{height // scale}"
            )
    pair = ImagePair(hr=hr, lr=lr, height=height, width=width, max_pixels=max_pixels, pixels_key=pixels_key)
    if verify:
        pair.load()
    return pair


class TrainPatchDataset(Dataset):
    """Random `patch_size` HR crops on the `scale` grid, with the LR crop at the same place.

    Items are keyed by ``(image index, crop seed)`` as `sr_gan.data.sampler.PatchStream` yields
    them: the crop corner and the dihedral transform (`flips`: horizontal, vertical, transpose;
    applied on the device by `paired_augment`) are drawn from a generator seeded with the crop
    seed, so a patch depends on its key alone, never on the worker or its RNG state. `augment`
    switches all three off; `rotate` False keeps the horizontal flip alone (BasicSR's `use_hflip`
    without `use_rot`, whose vertical flip and transpose make the rotations), with the same draws. With an LR
    folder the LR crop at (y, x) of size patch_size/scale pairs with the HR crop at
    (y·scale, x·scale); without one only {"hr"} is returned and the LR is made on the device.

    Pixels come from the folder's prepared arrays when `use_prepared` and
    ``python -m sr_gan.data.prepare`` made them (a crop reads only its rows), else from the
    decoded image files (a side with prepared arrays is never decoded); `cache` keeps the decoded
    images in memory (decoded here, in the main process, so forked workers share them).
    """

    def __init__(
        self,
        *,
        hr_dir: str | Path,
        lr_dir: str | Path | None = None,
        scale: int,
        patch_size: int,
        augment: bool = True,
        rotate: bool = True,
        cache: bool = False,
        use_prepared: bool = True,
        verify: bool = False,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
    ) -> None:
        if patch_size % scale:
            raise DataError(f"data.patch_size={patch_size} is not a multiple of data.scale={scale}")
        self.pairs = pair_images(hr_dir, lr_dir, scale, verify=verify, max_pixels=max_pixels)
        for pair in self.pairs:
            if min(pair.height, pair.width) < patch_size:
                raise DataError(
                    f"image {pair.hr} is {pair.width}x{pair.height} after mod-crop, smaller than "
                    f"data.patch_size={patch_size}: remove it or lower data.patch_size"
                )
        self.scale, self.patch_size = scale, patch_size
        self.transforms = torch.tensor([augment, augment and rotate, augment and rotate])  # hflip, vflip, transpose
        folders = {"hr": hr_dir} if lr_dir is None else {"hr": hr_dir, "lr": lr_dir}
        self.prepared = {side: open_prepared(folder) if use_prepared else None for side, folder in folders.items()}
        # the sides read from image files (a prepared side is cropped from its arrays, never decoded)
        self.decoded = tuple(side for side, store in self.prepared.items() if store is None)
        self.positions = {
            side: _positions(store, [getattr(pair, side).name for pair in self.pairs])
            for side, store in self.prepared.items()
            if store is not None
        }
        self.cache = [pair.load(self.decoded) for pair in self.pairs] if cache and self.decoded else None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, seed = key
        pair = self.pairs[index]
        generator = torch.Generator().manual_seed(seed)
        s, lr_patch = self.scale, self.patch_size // self.scale
        # top-left corner drawn on the LR grid, so the HR corner is a multiple of the scale
        y = int(torch.randint(pair.height // s - lr_patch + 1, (), generator=generator))
        x = int(torch.randint(pair.width // s - lr_patch + 1, (), generator=generator))
        flips = torch.randint(2, (3,), generator=generator).bool() & self.transforms  # (3,)
        decoded = self.cache[index] if self.cache is not None else pair.load(self.decoded)
        corners = {"hr": (y * s, x * s, self.patch_size), "lr": (y, x, lr_patch)}
        patches = {"flips": flips, "seed": torch.tensor(seed)}
        for side, store in self.prepared.items():
            top, left, size = corners[side]
            if store is not None:
                patches[side] = store.crop(self.positions[side][index], top, left, size, size)
            else:
                patches[side] = decoded[side][:, top : top + size, left : left + size]
        return patches  # "hr" (3, P, P) [+ "lr" (3, P/s, P/s)] uint8, "flips" (3,), "seed" ()


def _positions(store: PreparedImages, names: list[str]) -> list[int]:
    """Where each file name is in a prepared folder (which holds the same images as its source)."""
    index = {name: i for i, name in enumerate(store.names)}
    return [index[name] for name in names]


class ValImageDataset(Dataset):
    """Images for validation/test: {"hr", "name", "index"} (+ "lr" with an LR folder), HR mod-cropped.

    `max_images` keeps the first images by name and `crop` cuts the centre `crop` x `crop` HR
    pixels (on the scale grid; the LR crop matches): validation during training then stays a
    small fixed set, however large the folder (full evaluation: ``python -m sr_gan.evaluate``).
    """

    def __init__(
        self,
        *,
        hr_dir: str | Path,
        lr_dir: str | Path | None = None,
        scale: int,
        verify: bool = False,
        max_images: int | None = None,
        crop: int | None = None,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
        scale_key: str = "data.scale",
        pixels_key: str = "data.max_image_pixels",
    ) -> None:
        pairs = pair_images(
            hr_dir, lr_dir, scale, verify=verify, max_pixels=max_pixels, scale_key=scale_key, pixels_key=pixels_key
        )
        self.pairs = pairs[:max_images]
        self.scale = scale
        self.crop = None if crop is None else crop - crop % scale
        need = SSIM_WINDOW + 2 * scale  # SSIM's window must fit once the scale is cropped from each border
        if self.crop is not None and self.crop < need:
            raise DataError(f"data.val_crop={crop} is below {need}, the smallest size SSIM can score at x{scale}")
        if small := [p for p in self.pairs if min(p.height, p.width) < need]:
            names = ", ".join(f"{p.hr} ({p.width}x{p.height})" for p in small[:_SHOWN_PROBLEMS])
            raise DataError(
                f"validation images smaller than {need}x{need} after mod-crop (SSIM's {SSIM_WINDOW}-pixel window "
                f"inside a {scale}-pixel border crop): {names}; remove them from {hr_dir}"
            )

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        pair = self.pairs[index]
        images = pair.load()
        if self.crop is not None:
            s = self.scale
            height, width = min(self.crop, pair.height), min(self.crop, pair.width)
            top, left = (pair.height - height) // 2 // s * s, (pair.width - width) // 2 // s * s
            images["hr"] = images["hr"][:, top : top + height, left : left + width]
            if "lr" in images:
                images["lr"] = images["lr"][:, top // s : (top + height) // s, left // s : (left + width) // s]
        return {**images, "name": pair.name, "index": index}
