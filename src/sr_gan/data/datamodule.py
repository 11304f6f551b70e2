"""`SRDataModule`: image folders in, float {"lr", "hr"} batches on the training device out.

Workers decode and crop uint8 patches; `on_after_batch_transfer` then works on the device, batched:
uint8 → float32 in [0, 1], random flips/rotations while training, and, where no LR folder is
given, the LR made by MATLAB-compatible bicubic downscaling, rounded to 8 bits like LR PNGs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2.functional import to_dtype

from sr_gan.data.augment import paired_augment
from sr_gan.data.datasets import DataError, TrainPatchDataset, ValImageDataset
from sr_gan.ops import bicubic_degrade


class SRDataModule(L.LightningDataModule):
    """Training patches and whole validation images from HR (and optional LR) folders.

    `prepare` is called once in `prepare_data` (a Hydra `_partial_` factory: the demo writer or a
    downloader). Validation and test batches hold one whole image each (sizes differ); the test
    set is the validation set. Without an LR folder the LR is bicubic(HR, 1/scale), quantized to
    1/255 steps if `quantize_lr` (as LR PNGs made offline by MATLAB are).
    """

    def __init__(
        self,
        *,
        train_hr_dir: str | Path,
        val_hr_dir: str | Path,
        train_lr_dir: str | Path | None = None,
        val_lr_dir: str | Path | None = None,
        scale: int = 4,
        patch_size: int = 128,
        batch_size: int = 16,
        num_workers: int = 4,
        repeat: int = 1,
        cache: bool = False,
        augment: bool = True,
        quantize_lr: bool = True,
        prepare: Callable[[], None] | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        self.train_hr_dir, self.train_lr_dir = train_hr_dir, train_lr_dir
        self.val_hr_dir, self.val_lr_dir = val_hr_dir, val_lr_dir
        self.scale, self.patch_size = scale, patch_size
        self.batch_size, self.num_workers = batch_size, num_workers
        self.repeat, self.cache = repeat, cache
        self.augment, self.quantize_lr = augment, quantize_lr
        self.prepare = prepare
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.train_set: TrainPatchDataset | None = None
        self.val_set: ValImageDataset | None = None

    def prepare_data(self) -> None:
        if self.prepare is not None:
            self.prepare()

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            self.train_set = TrainPatchDataset(
                hr_dir=self.train_hr_dir,
                lr_dir=self.train_lr_dir,
                scale=self.scale,
                patch_size=self.patch_size,
                repeat=self.repeat,
                cache=self.cache,
            )
            if len(self.train_set) < self.batch_size:
                raise DataError(
                    f"{len(self.train_set)} training patches per epoch (images x data.repeat) is fewer "
                    f"than data.batch_size={self.batch_size}: raise data.repeat"
                )
        if self.val_set is None:
            self.val_set = ValImageDataset(hr_dir=self.val_hr_dir, lr_dir=self.val_lr_dir, scale=self.scale)

    def _loader(self, dataset: Dataset, *, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle,  # training: equal batches (BatchNorm, GAN balance)
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, batch_size=1, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def degrade(self, hr: Tensor) -> Tensor:
        """LR = MATLAB bicubic(HR, 1/scale), rounded to 8-bit levels if `quantize_lr`."""
        return bicubic_degrade(hr, self.scale, to_8bit=self.quantize_lr)  # (B, 3, H/s, W/s)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        # `trainer` is None when no Trainer is attached (unit tests): treated as not training
        training = self.trainer is not None and self.trainer.training
        hr, lr = batch["hr"], batch.get("lr")  # uint8 (B, 3, H, W), (B, 3, H/s, W/s) or None
        if training and self.augment:
            hr, lr = paired_augment(hr, lr)  # on uint8: a quarter of the float32 memory traffic
        hr = to_dtype(hr, torch.float32, scale=True)  # (B, 3, H, W) in [0, 1]
        lr = self.degrade(hr) if lr is None else to_dtype(lr, torch.float32, scale=True)
        return {**batch, "lr": lr, "hr": hr}
