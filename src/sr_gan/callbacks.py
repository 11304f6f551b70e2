"""Callbacks that make budgets count training batches, whatever the number of optimizers."""

from __future__ import annotations

from typing import Any

import lightning as L


class BatchBudget(L.Callback):
    """Stop after ``max_batches`` training batches.

    Lightning's ``max_steps`` counts optimizer steps, which advance twice per batch when G and D
    both step (and unevenly during a D warm-up). ``sr_gan.train`` therefore reads
    ``trainer.max_steps`` as a number of *batches*, hands Lightning ``max_steps=-1`` and adds this
    callback. Lightning runs a final validation when a run is asked to stop, so the last model
    is always validated and checkpointed.
    """

    def __init__(self, max_batches: int) -> None:
        if max_batches <= 0:
            raise ValueError(f"trainer.max_steps must be a positive number of batches, got {max_batches}")
        self.max_batches = max_batches

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        # `processed` already counts the current batch here (`completed` follows this hook).
        if trainer.fit_loop.epoch_loop.batch_progress.total.processed >= self.max_batches:
            trainer.should_stop = True

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.total.completed >= self.max_batches:
            trainer.should_stop = True
