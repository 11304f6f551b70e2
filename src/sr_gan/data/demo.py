"""The embedded demo data set: colour photos that scikit-image ships inside its wheel.

`prepare_skimage_photos(root)` copies them, as PNG, to `root/train/` and `root/val/`; nothing is
downloaded (only files present in the installed `skimage/data` folder are used, never the
`skimage.data.*` loaders that may fetch). The split is a fixed list: `VAL_PHOTOS` for validation,
the other photos of `DEMO_PHOTOS` for training. Validation photos are centre-cropped to at most
`VAL_CROP` x `VAL_CROP` so that whole-image validation stays fast on a CPU; training photos are
kept whole (training draws random patches). Grey images and synthetic ones (colour wheel,
chessboard, logo, phantom) are left out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import skimage.data
from torchvision.transforms.v2.functional import center_crop

from sr_gan.errors import UserError
from sr_gan.imageio import read_image, write_image

DEMO_PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
)
VAL_PHOTOS = ("chelsea", "coffee")  # stems; the rest train
MIN_SIDE = 256  # a photo smaller than this on any side (another scikit-image release) is skipped
VAL_CROP = 256
MARKER = "COMPLETE"


def default_cache_dir() -> Path:
    """$SR_GAN_CACHE, else $XDG_CACHE_HOME/sr_gan, else ~/.cache/sr_gan."""
    if os.environ.get("SR_GAN_CACHE"):
        return Path(os.environ["SR_GAN_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "sr_gan"


DEMO_ROOT = default_cache_dir() / "skimage_photos"


def _write_photos(folder: Path) -> None:
    """Write the demo photos into `folder/train` and `folder/val`, the marker file last."""
    source = Path(skimage.data.__file__).parent
    for split in ("train", "val"):
        (folder / split).mkdir()
    for filename in DEMO_PHOTOS:
        path = source / filename
        if not path.is_file():
            continue
        image = read_image(path)  # (3, H, W) uint8, RGBA → RGB
        height, width = image.shape[-2:]
        if min(height, width) < MIN_SIDE:
            continue
        split = "val" if path.stem in VAL_PHOTOS else "train"
        if split == "val":
            image = center_crop(image, [min(height, VAL_CROP), min(width, VAL_CROP)])
        write_image(folder / split / f"{path.stem}.png", image.permute(1, 2, 0).numpy(), fmt="png")  # (H, W, 3)
    for split in ("train", "val"):
        if not any((folder / split).iterdir()):
            raise UserError(
                f"scikit-image {skimage.__version__} ships none of the {split} demo photos in {source}: "
                "point data.train_hr_dir / data.val_hr_dir at your own images (data=folder)"
            )
    (folder / MARKER).write_text("scikit-image demo photos, complete\n")


def prepare_skimage_photos(root: str | Path = DEMO_ROOT) -> None:
    """Copy the demo photos to `root/train` and `root/val` once; later calls do nothing.

    Atomic: the photos are written to a temporary folder beside `root`, which is renamed to
    `root` when complete, so an interrupted or concurrent run never leaves a partial set behind.
    """
    root = Path(root).expanduser()
    if (root / MARKER).is_file():
        return
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    if root.exists():
        raise UserError(f"{root} exists but is not a complete demo set (no {MARKER} file): delete it")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    staging.chmod(0o755)  # mkdtemp makes it private
    try:
        _write_photos(staging)
        os.rename(staging, root)
    except OSError as err:
        if not (root / MARKER).is_file():  # else another process finished first: fine
            raise UserError(
                f"cannot write the demo photos into {root}: {err.strerror or err}; free space there, "
                "or set SR_GAN_CACHE to a folder on another disk"
            ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
