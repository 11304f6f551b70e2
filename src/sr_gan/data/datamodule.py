"""`SRDataModule`: image folders in, float {"lr", "hr"} batches on the training device out.

Workers decode and crop uint8 patches (`TrainPatchDataset`, keyed by the seeded, resumable
`PatchStream`); `on_after_batch_transfer` then works on the device, batched: uint8 → float32 in
[0, 1], the patches' flips/rotations while training, and, where no LR folder is given, the LR
made by MATLAB-compatible bicubic downscaling, rounded to 8 bits like LR PNGs.

The data module saves its stream position in checkpoints (`state_dict`), so a resumed run reads
the same patches, in the same order, as an uninterrupted one. It shards the stream and the
validation set over DDP ranks itself, without padding (the trainer sets
`use_distributed_sampler: false`).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import signal
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import get_start_method
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import pl_worker_init_function
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms.v2.functional import to_dtype

from sr_gan.data.augment import paired_augment
from sr_gan.data.datasets import TrainPatchDataset, ValImageDataset
from sr_gan.data.sampler import PatchStream, ShardSampler, mix_seed
from sr_gan.imageio import MAX_IMAGE_PIXELS
from sr_gan.ops import BicubicDegradation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerStart:
    """A loader worker's start on rank `rank`. A Ctrl-C in a terminal reaches every process of the
    run, and a worker it ended took the run's next validation down: workers ignore it, the main
    process decides what it means (a stop after the batch, with a checkpoint:
    `sr_gan.callbacks.PreemptionCheckpoint`) and the workers end with it. Then what Lightning's
    own start does under ``seed_everything(workers=True)``, which a loader's own start replaces."""

    rank: int

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if int(os.environ.get("PL_SEED_WORKERS", 0)):
            pl_worker_init_function(worker_id, rank=self.rank)


class StandIn(Dataset):
    """What a rank validates when no image is its own (more ranks than images): the first image,
    weighted 0 in the metrics (``"weight"``). Lightning refuses a rank without validation batches,
    and such a rank would skip the metrics' reduction that the others wait for; with it every image
    still counts once."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.dataset[index], "weight": torch.tensor(0.0)}


class SRDataModule(L.LightningDataModule):
    """Training patches and whole validation images from HR (and optional LR) folders.

    `prepare` is called once in `prepare_data` (a Hydra `_partial_` factory: the demo writer or a
    downloader). Validation and test batches hold one whole image each (sizes differ); the test
    set is the validation set. Without an LR folder, `degradation` makes the LR on the device
    (``lr, hr = degradation(hr, generator=g)``, `sr_gan.ops`; default: the papers' MATLAB bicubic,
    rounded to 8 bits like LR PNGs), drawing from a generator seeded by each batch's first patch
    seed (validation: a fixed seed per image, so every validation of every run, whatever its seed,
    sees the same LR). `seed` seeds the patch stream (``None``: a random one, saved in checkpoints
    like the stream position). With
    `use_prepared`, training crops are read from ``<folder>.prepared`` where
    ``python -m sr_gan.data.prepare <folder>`` made it (`sr_gan.data.prepared`). Image headers are
    read at set-up (sizes, pairs); `verify` also decodes every image then. `val_max_images` and
    `val_crop` keep validation during training small (`ValImageDataset`). `augment` turns the
    training patches' random flips and 90-degree rotations on; `rotate` False keeps the horizontal
    flip alone (`TrainPatchDataset`).
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
        seed: int | None = None,
        cache: bool = False,
        use_prepared: bool = True,
        verify: bool = False,
        val_max_images: int | None = None,
        val_crop: int | None = None,
        max_image_pixels: int | None = MAX_IMAGE_PIXELS,
        augment: bool = True,
        rotate: bool = True,
        degradation: Callable[..., tuple[Tensor, Tensor]] | None = None,
        prepare: Callable[[], None] | None = None,
        pin_memory: bool = True,
        persistent_workers: bool = True,
    ) -> None:
        super().__init__()
        self.train_hr_dir, self.train_lr_dir = train_hr_dir, train_lr_dir
        self.val_hr_dir, self.val_lr_dir = val_hr_dir, val_lr_dir
        self.scale, self.patch_size = scale, patch_size
        self.batch_size, self.num_workers = batch_size, num_workers
        self.seed = secrets.randbits(63) if seed is None else seed
        self.cache, self.use_prepared, self.verify = cache, use_prepared, verify
        self.val_max_images, self.val_crop = val_max_images, val_crop
        self.max_image_pixels = max_image_pixels
        self.augment, self.rotate = augment, rotate
        self.degradation = BicubicDegradation(scale=scale) if degradation is None else degradation
        self._generators: dict[torch.device, torch.Generator] = {}
        self.prepare = prepare
        self.pin_memory, self.persistent_workers = pin_memory, persistent_workers
        self.train_set: TrainPatchDataset | None = None
        self.val_set: ValImageDataset | None = None
        self.stream_start = 0  # patches of the stream consumed before this run (resume)
        self._batches_at_start = 0  # the trainer's batch count when the stream (re)started

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
                augment=self.augment,
                rotate=self.rotate,
                cache=self.cache,
                use_prepared=self.use_prepared,
                verify=self.verify,
                max_pixels=self.max_image_pixels,
            )
        if self.val_set is None:
            self.val_set = ValImageDataset(
                hr_dir=self.val_hr_dir,
                lr_dir=self.val_lr_dir,
                scale=self.scale,
                verify=self.verify,
                max_images=self.val_max_images,
                crop=self.val_crop,
                max_pixels=self.max_image_pixels,
            )

    # ------------------------------------------------------------------ loaders
    def _shard(self) -> tuple[int, int]:
        """(rank, world size) of this process; (0, 1) without a trainer (unit tests)."""
        return (0, 1) if self.trainer is None else (self.trainer.global_rank, self.trainer.world_size)

    def _batches_done(self) -> int:
        return self.trainer.fit_loop.epoch_loop.batch_progress.total.completed

    def _loader(self, dataset: Dataset, sampler: Sampler, *, batch_size: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            generator=torch.Generator(),  # worker seeds: not drawn from (and not moving) the global RNG
            num_workers=self.num_workers,
            # Inside a joblib job (hydra/launcher=local) the default start method is joblib's "loky",
            # which cannot start DataLoader workers (joblib#1104): fork them, as a plain process does.
            multiprocessing_context="fork"
            if self.num_workers and get_start_method(allow_none=True) == "loky"
            else None,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and self.num_workers > 0,
            worker_init_fn=WorkerStart(self._shard()[0]),
        )

    def train_dataloader(self) -> DataLoader:
        """Endless: the trainer's batch budget ends the run (`sr_gan.callbacks.BatchBudget`)."""
        rank, world_size = self._shard()
        if self.trainer is not None:
            self._batches_at_start = self._batches_done()
        stream = PatchStream(
            len(self.train_set), seed=self.seed, start=self.stream_start, rank=rank, world_size=world_size
        )
        return self._loader(self.train_set, stream, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self._shard()
        shard = ShardSampler(len(self.val_set), rank=rank, world_size=world_size)
        if len(shard) == 0 and len(self.val_set) > 0:  # more ranks than images
            return self._loader(StandIn(self.val_set), [0], batch_size=1)
        return self._loader(self.val_set, shard, batch_size=1)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """The stream's seed and position: patches consumed by every rank up to now; and the global batch."""
        state: dict[str, Any] = {"seed": self.seed, "stream_position": self.stream_start}
        if self.trainer is not None and self.train_set is not None:
            batches = self._batches_done() - self._batches_at_start
            state["stream_position"] += batches * self.batch_size * self.trainer.world_size
            state["global_batch"] = self._global_batch()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seed, self.stream_start = state_dict["seed"], state_dict["stream_position"]
        trained, now = state_dict.get("global_batch"), self._global_batch() if self.trainer is not None else None
        if trained and now and math.prod(trained) != math.prod(now) and self.trainer.is_global_zero:
            log.warning(
                "resuming with a global batch of %d (%d process(es) x data.batch_size=%d x "
                "optim.accumulate_batches=%d) where the checkpoint's run had %d (%d x %d x %d): learning rates and "
                "milestones count iterations, which now see %s images; keep %d with data.batch_size or "
                "optim.accumulate_batches",
                math.prod(now),
                *now,
                math.prod(trained),
                *trained,
                "fewer" if math.prod(now) < math.prod(trained) else "more",
                math.prod(trained),
            )

    @staticmethod
    def check_state(state: Any) -> None:
        """Raise TypeError where `state` is not one `state_dict` writes (a damaged or crafted
        checkpoint's): an integer seed, a stream position >= 0 and a global batch of 3 counts or none."""
        if not isinstance(state, dict):
            raise TypeError(f"a {type(state).__name__}, not a mapping")
        seed, position, batch = state.get("seed"), state.get("stream_position"), state.get("global_batch")
        if not (_whole(seed) and _whole(position) and position >= 0):
            raise TypeError(f"seed={seed!r}, stream_position={position!r}: not whole numbers (the position >= 0)")
        if batch is not None and not (isinstance(batch, list) and len(batch) == 3 and all(_whole(b) for b in batch)):
            raise TypeError(f"global_batch={batch!r}: not 3 whole numbers")

    def _global_batch(self) -> list[int]:
        """[processes, data.batch_size, optim.accumulate_batches]: an iteration sees their product."""
        accumulate = getattr(self.trainer.lightning_module, "accumulate_batches", 1)
        return [self.trainer.world_size, self.batch_size, accumulate]

    # ------------------------------------------------------------------ on the device
    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        # The degradation's seed as a Python int, read while the batch is still on the CPU (no device sync).
        if "seed" in batch:  # training: the first patch's seed
            return {**batch, "seed": int(batch["seed"][0])}
        # Validation: fixed per image and the same in every run, whatever its seed: runs are compared on one set.
        return {**batch, "seed": mix_seed(-1, int(batch["index"][0]))}

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        hr, lr = batch["hr"], batch.get("lr")  # uint8 (B, 3, H, W), (B, 3, H/s, W/s) or None
        training = "flips" in batch  # training patches (validation and test images have no flips)
        if training:  # on uint8: a quarter of the float32 memory traffic
            hr, lr = paired_augment(hr, lr, batch.pop("flips"))
        hr = to_dtype(hr, torch.float32, scale=True)  # (B, 3, H, W) in [0, 1]
        if lr is not None:
            return {**batch, "lr": to_dtype(lr, torch.float32, scale=True), "hr": hr}
        lr, target = self.degradation(hr, generator=self._generator(hr.device, batch["seed"]))
        if target is hr or not training:  # validation and test score the HR itself (papers' protocol)
            return {**batch, "lr": lr, "hr": hr}
        # A sharpened target (Real-ESRGAN's USM): L1 and perceptual aim at it, D sees the HR itself as
        # real (the reference's l1_gt_usm / percep_gt_usm: True, gan_gt_usm: False).
        return {**batch, "lr": lr, "hr": target, "hr_real": hr}

    def _generator(self, device: torch.device, seed: int) -> torch.Generator:
        """One generator per device, re-seeded for each batch (a host-side call: no device sync)."""
        if device not in self._generators:
            self._generators[device] = torch.Generator(device)
        return self._generators[device].manual_seed(seed)


def _whole(value: Any) -> bool:
    """Whether `value` is an int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)
