"""Data pipeline: image folders (uint8 decode + crop in workers), prepared folders (memory-mapped
arrays, `python -m sr_gan.data.prepare`), on-device augmentation and degradation in
`SRDataModule`, the embedded demo photos and the DIV2K / benchmark downloads.

Names are imported lazily: `evaluate` reads its images through `sr_gan.data.datasets` without
paying for Lightning's import (seconds) that `SRDataModule` needs. `read_image` and `DataError`
live in `sr_gan.imageio` (also upscale's reader); they are here for the data pipeline's callers.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "paired_augment": "sr_gan.data.augment",
    "SRDataModule": "sr_gan.data.datamodule",
    "DataError": "sr_gan.imageio",
    "ImagePair": "sr_gan.data.datasets",
    "PreparedImages": "sr_gan.data.prepared",
    "TrainPatchDataset": "sr_gan.data.datasets",
    "ValImageDataset": "sr_gan.data.datasets",
    "open_prepared": "sr_gan.data.prepared",
    "pair_images": "sr_gan.data.datasets",
    "prepare_folder": "sr_gan.data.prepared",
    "prepared_dir": "sr_gan.data.prepared",
    "read_image": "sr_gan.imageio",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sr_gan.data' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)
