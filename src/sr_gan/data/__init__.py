"""Data pipeline: image folders (uint8 decode + crop in workers), on-device augmentation and
degradation in `SRDataModule`, the embedded demo photos and the DIV2K / benchmark downloads."""

from sr_gan.data.augment import paired_augment
from sr_gan.data.datamodule import SRDataModule
from sr_gan.data.datasets import (
    DataError,
    ImagePair,
    TrainPatchDataset,
    ValImageDataset,
    pair_images,
    read_image,
)

__all__ = [
    "DataError",
    "ImagePair",
    "SRDataModule",
    "TrainPatchDataset",
    "ValImageDataset",
    "paired_augment",
    "pair_images",
    "read_image",
]
