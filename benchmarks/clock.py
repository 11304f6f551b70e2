"""Training batches per second of a real ``python -m sr_gan.train`` run, for the GPU check.

Added on the command line (``+callbacks.clock._target_=benchmarks.clock.StepClock
+callbacks.clock.path=speed.json``), it times the training batches after the first `skip` ones,
leaving out validation and checkpoint writing, and writes ``{"batches", "seconds", "it_s"}``
when the fit ends.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from sr_gan.atomic import atomic_path


class StepClock(L.Callback):
    """Batches per second over training time only (see the module docstring)."""

    def __init__(self, path: str, skip: int = 20) -> None:
        self.path, self.skip = Path(path), skip
        self.batches, self.seconds, self._since = 0, 0.0, None

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, index: int) -> None:
        if self._since is None and trainer.fit_loop.epoch_loop.batch_progress.total.completed >= self.skip:
            self._sync(module)
            self._since = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, *args: Any) -> None:
        if self._since is not None:
            self.batches += 1

    def _pause(self, module: L.LightningModule) -> None:
        if self._since is not None:
            self._sync(module)
            self.seconds += time.perf_counter() - self._since
            self._since = None

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._pause(module)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._pause(module)
        figures = {
            "batches": self.batches,
            "seconds": self.seconds,
            "it_s": self.batches / self.seconds if self.seconds else None,
        }
        with atomic_path(self.path) as partial:
            partial.write_text(json.dumps(figures))
