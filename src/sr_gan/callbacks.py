"""Training callbacks: a batch budget and its progress bar, the speed on the logging interval, RNG
states in checkpoints, a checkpoint on pre-emption and Ctrl-C, snapshots kept every N iterations,
the best checkpoint's record kept when a run folder moved."""

from __future__ import annotations

import logging
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint, RichProgressBar
from lightning.pytorch.utilities.exceptions import SIGTERMException
from rich.progress import TaskID

from sr_gan.checkpoint_io import follow_moved_folder

log = logging.getLogger(__name__)


def logs_now(trainer: L.Trainer) -> bool:
    """Whether Lightning writes the logged values at the end of the training batch in progress (from
    its step to its callbacks' end hooks): on the logging interval, and at the budget's last batch
    (`BatchBudget` stops the run there, and Lightning writes what was last logged again: a value
    not logged anew would repeat the interval's)."""
    batch = trainer.fit_loop.epoch_loop.batch_progress.total.started  # this one included
    return batch % trainer.log_every_n_steps == 0 or batch == batch_budget(trainer)


def batch_budget(trainer: L.Trainer) -> int | None:
    """The run's budget in training batches (its `BatchBudget`), None without one."""
    return next((c.max_batches for c in trainer.callbacks if isinstance(c, BatchBudget)), None)


class BatchBudget(L.Callback):
    """Stop after ``max_batches`` training batches.

    Lightning's ``max_steps`` counts optimizer steps, which advance twice per batch when G and D
    both step (and unevenly during a D warm-up). ``sr_gan.train`` therefore reads
    ``trainer.max_steps`` as a number of *iterations*, hands Lightning ``max_steps=-1`` and adds this
    callback with ``max_steps x optim.accumulate_batches`` batches. Lightning runs a final validation
    when a run is asked to stop, so the last model is always validated and checkpointed.
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
        done = trainer.fit_loop.epoch_loop.batch_progress.total.completed
        if done >= self.max_batches:
            trainer.should_stop = True
        if done > self.max_batches:  # equal: a finished run relaunched (a requeued job), nothing to say
            log.warning(
                "the checkpoint has trained %d batches, more than this run's budget of %d "
                "(trainer.max_steps x optim.accumulate_batches): nothing is trained; trainer.max_steps counts "
                "all iterations, the checkpoint's included: raise it to train further",
                done,
                self.max_batches,
            )


class BudgetProgressBar(RichProgressBar):
    """Lightning's progress bar, counting towards the batch budget: the patch stream is endless, so
    "Epoch 0/-2" with no total was all Lightning could show. Each validation's bar replaces the one
    before: Lightning hides the old bar and keeps it (its own TODO), a task of ~2 KB that Rich
    went through on every refresh, for each validation of a run."""

    def __init__(self, max_batches: int) -> None:
        super().__init__()
        self.max_batches = max_batches

    @property
    def total_train_batches(self) -> int:
        return self.max_batches

    def _get_train_description(self, current_epoch: int) -> str:
        return f"{'Training':{len(self.validation_description)}}"

    def _add_task(self, total_batches: int | float, description: str, visible: bool = True) -> TaskID:
        replaced = {
            self.validation_description: self.val_progress_bar_id,
            self.sanity_check_description: self.val_sanity_progress_bar_id,
        }.get(description)
        if replaced is not None and self.progress is not None:
            self.progress.remove_task(replaced)  # already hidden by Lightning
        return super()._add_task(total_batches, description, visible)


def gpu_peak_gib(device: torch.device) -> float | None:
    """The most memory the caching allocator has held on `device` since the process or, in a sweep,
    the job started (`sr_gan.train` restarts the counter between jobs), in GiB (what nvidia-smi shows
    at its peak, and what runs out first), None off CUDA. A host-side counter: no device sync."""
    return torch.cuda.max_memory_reserved(device) / 2**30 if device.type == "cuda" else None


class SpeedMonitor(L.Callback):
    """Logs ``time/batches_per_s`` and ``time/data_share`` on the logging interval: BasicSR's
    ``time`` / ``data_time``; on a GPU also ``memory/gpu_peak_gib`` (`gpu_peak_gib`), the peak
    that sets the batch size a GPU takes. A batch's cycle runs from the end of the batch before it to its own
    end; the share is the part before the batch starts (waiting for the loader, the host-to-device
    copy, the launch of the on-device degradation). A batch that follows a validation (and its
    checkpoints) or starts the fit counts its own step only: its wait is not measured.

    Host clocks only, no device sync (Lightning's ``ThroughputMonitor`` synchronises CUDA after
    every batch): on a GPU the host runs ahead of the device by at most its queue, so over an
    interval of many batches the rate is the device's. Under DDP each rank measures itself; the
    loggers write rank 0's.
    """

    def __init__(self) -> None:
        self._last: float | None = None  # the end of the batch before; None after a pause
        self._before = 0.0  # this batch's wait before its start (0 when not measured)
        self._start = 0.0
        self._restart_interval()

    def _restart_interval(self) -> None:
        self._batches, self._cycles, self._waiting = 0, 0.0, 0.0

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._start = time.perf_counter()
        self._before = 0.0 if self._last is None else self._start - self._last

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._last = time.perf_counter()
        self._batches += 1
        self._cycles += self._before + self._last - self._start
        self._waiting += self._before
        if not logs_now(trainer):
            return
        if self._cycles > 0:
            rate, share = self._batches / self._cycles, self._waiting / self._cycles
            logged = {"time/batches_per_s": rate, "time/data_share": share}
            if (peak := gpu_peak_gib(pl_module.device)) is not None:
                logged["memory/gpu_peak_gib"] = peak
            # as tensors filled on the device: Lightning copies a logged float there (a blocking copy)
            tensors = {name: torch.full((), value, device=pl_module.device) for name, value in logged.items()}
            pl_module.log_dict(tensors, on_step=True, batch_size=1)
        self._restart_interval()

    def on_validation_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._last = None

    def on_train_start(self, trainer: L.Trainer, *args: Any) -> None:
        self._last = None
        self._restart_interval()


class RNGState(L.Callback):
    """Saves the global random states (torch CPU and CUDA, NumPy, Python) in every checkpoint and
    puts them back when a resumed run starts training, so that code drawing from them (dropout,
    a user's augmentation) continues as in the uninterrupted run.

    The patch stream itself does not depend on them (`sr_gan.data.sampler`). NumPy's state is
    stored as tensors so that the checkpoint loads with `torch.load(weights_only=True)`. Under DDP
    the checkpoint holds rank 0's states, which every rank gets back.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        name, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "keys": torch.from_numpy(keys.astype(np.int64)),
                "position": position,
                "gauss": [has_gauss, gauss],
            },
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._to_restore is None:
            return
        state, self._to_restore = self._to_restore, None
        _set_states(state, torch.set_rng_state, np.random.set_state, random.setstate)
        if "cuda" in state and torch.cuda.is_available():  # a run resumed on fewer GPUs: the GPUs it has
            for device, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, device)

    @staticmethod
    def check_state(state: Any) -> None:
        """Raise (TypeError, KeyError, ValueError, ...) where `state` would not restore, as a damaged
        or crafted checkpoint's: its CPU states are set into throwaway generators, and its CUDA states
        (read on any machine) must be what `torch.cuda.set_rng_state` takes: uint8 tensors of a
        Philox seed and offset (16 bytes; 8, a seed alone, is taken too)."""
        _set_states(state, torch.Generator().set_state, np.random.RandomState().set_state, random.Random().setstate)
        cuda = state.get("cuda", [])
        if not isinstance(cuda, list | tuple) or not all(_is_cuda_state(s) for s in cuda):
            raise TypeError("its CUDA states are not uint8 tensors of 8 or 16 bytes, one per GPU")


def _is_cuda_state(state: Any) -> bool:
    """Whether `state` is what `torch.cuda.set_rng_state` takes (CUDAGeneratorImpl::set_state)."""
    is_bytes = isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.dim() == 1
    return is_bytes and state.numel() in (8, 16)


def _set_states(
    state: dict[str, Any],
    torch_setter: Callable[[torch.Tensor], Any],
    numpy_setter: Callable[[tuple[Any, ...]], Any],
    python_setter: Callable[[Any], Any],
) -> None:
    """Set the torch CPU, NumPy and Python random states `RNGState.state_dict` saved with these setters."""
    torch_setter(state["torch"])
    numpy = state["numpy"]
    numpy_setter(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"], *numpy["gauss"]))
    python_setter(state["python"])


class Snapshots(Checkpoint):
    """Keep the checkpoint of every validation that falls on a multiple of `every` optimizer
    iterations, as ``<dirpath>/iter_<iterations, 7 digits>.ckpt`` (None: keep none). last.ckpt is
    replaced at each validation and best.ckpt holds the highest PSNR, a GAN stage's blurriest
    result: snapshots are what a long GAN run is picked from (by eye, by `sr_gan.evaluate`, for
    network interpolation) or resumed from when it collapsed. The reference code keeps one every
    5,000 iterations (BasicSR's ``save_checkpoint_freq: 5e3``).

    A `Checkpoint`, so Lightning runs it after the ModelCheckpoints of the validation: a snapshot
    holds what that validation's last.ckpt holds (their best score included) and resumes the same
    way. Written through the trainer's checkpoint plugin: atomically, and never a diverged one.

    `keep` bounds the disk a long run takes (at the reference's 5,000, ESRGAN's 400k iterations write
    80 snapshots of 440 MB, 35 GB): after a snapshot is written, the oldest beyond the newest `keep`
    of the folder go (a resumed run's earlier ones count too); None keeps every one. After the first
    snapshot of a fit, a warning says when the snapshots still to come before the budget's end would
    not fit on the disk (`warn_if_the_disk_fills`): on the run's first day, not when it stops.
    """

    def __init__(self, dirpath: str | Path, every: int | None = None, keep: int | None = None) -> None:
        self.dirpath = Path(dirpath)
        self.every = every
        self.keep = keep
        self._projected = False  # the disk projection of this run's first snapshot is done

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every is None or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        accumulate = getattr(pl_module, "accumulate_batches", 1)
        iterations = trainer.fit_loop.epoch_loop.batch_progress.total.completed // accumulate
        if not iterations or iterations % self.every:
            return
        path = self.dirpath / f"iter_{iterations:07d}.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # resumable; said, so Lightning adds no log line
        if not (path.is_file() and trainer.is_global_zero):  # not written (a diverged one), or not rank 0's
            return
        if self.keep is not None:
            for older in sorted(self.dirpath.glob("iter_*.ckpt"))[: -self.keep]:
                older.unlink()
        budget = batch_budget(trainer)
        if not self._projected and budget is not None:
            self._projected = True
            self.warn_if_the_disk_fills(path, iterations, budget // accumulate)

    def warn_if_the_disk_fills(self, written: Path, iterations: int, budget: int) -> None:
        """Warn when the snapshots still to come after `written` (of `iterations`) until `budget`
        iterations, each the size of `written`, outgrow the free space of its disk, keeping room for
        one checkpoint more: last.ckpt and best.ckpt are rewritten beside the old file, then renamed.
        With `keep`, at most `keep` + 1 are there at once (the newest is written before the oldest goes)."""
        held = len(list(self.dirpath.glob("iter_*.ckpt")))
        to_come = budget // self.every - iterations // self.every
        peak = held + to_come if self.keep is None else min(held + to_come, self.keep + 1)
        size, free = written.stat().st_size, shutil.disk_usage(self.dirpath).free
        needed = max(peak - held, 0) * size
        if not needed or needed + size <= free:  # (none to come: the run's last.ckpt is not the snapshots' to foresee)
            return
        log.warning(
            "callbacks.snapshots: %d more snapshots on the disk (%.0f MB each) by trainer.max_steps=%d need "
            "%.2f GB, but %s has %.2f GB free: the disk is full by about iteration %d; set "
            "callbacks.snapshots.keep=N (the newest N stay) or free space",
            peak - held,
            size / 1e6,
            budget,
            needed / 1e9,
            self.dirpath,
            free / 1e9,
            iterations + (free // size + 1) * self.every,
        )


class MovedRunFolder(L.Callback):
    """A run resumed from its own checkpoints/ after the run folder moved (to another disk, another
    mount, or behind a link within it) keeps the best score and the best checkpoint's name that its
    checkpoint records: the ModelCheckpoint states name the folder they were written in, and
    Lightning restores a state only in that folder (else it warned, and the next validation wrote
    best-v1.ckpt beside a stale best.ckpt, however its score compared). A branch into another folder
    (ckpt_path of another run) starts its own record, as Lightning does, keeping only the name of the
    best checkpoint, which `test` takes when the branch validates no more: that name follows the run
    it branches from where that run's folder moved or was copied, and holds that file (it named the
    old place: gone, or the original's file)."""

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        read_from = os.path.realpath(os.path.dirname(trainer.ckpt_path or ""))
        states, moved = checkpoint.get("callbacks") or {}, set()
        for callback in trainer.checkpoint_callbacks:
            state = states.get(callback.state_key) if isinstance(callback, ModelCheckpoint) else None
            if isinstance(state, dict) and (callback.dirpath == read_from or _holds_best(read_from, state)):
                moved.add(follow_moved_folder(state, read_from))
        if written := sorted(folder for folder in moved if folder is not None):
            log.info("checkpoints written in %s, read from %s: best.ckpt's record follows", written[0], read_from)


def _holds_best(folder: str, state: dict[str, Any]) -> bool:
    """Whether `folder` holds a file named as the best checkpoint of ModelCheckpoint `state`."""
    best = state.get("best_model_path")
    return isinstance(best, str) and bool(best) and os.path.isfile(os.path.join(folder, os.path.basename(best)))


class PreemptionCheckpoint(L.Callback):
    """On SIGTERM (a cluster pre-empting the job) or a first Ctrl-C (SIGINT), save a resumable
    checkpoint before exiting: a run stopped before its first validation keeps its batches too.

    The signal only sets a flag. After each batch (under DDP: each batch of the logging interval,
    where the run reads device values anyway) the flag is read, under DDP combined over the ranks
    (any rank's signal counts), so that every rank stops after the same batch even when the signal
    reached only one of them, or reached them at different points. The run stops at the end of an
    optimizer iteration (with ``optim.accumulate_batches`` = k, after a multiple of k batches: a
    checkpoint holds no half-accumulated gradients) and after a validation due there; a signal
    that comes after the last batch's check stops the run when the fit ends (no test stage). Then
    this writes `<dirpath>/last.ckpt` (atomically, through the trainer's checkpoint plugin) and
    `sr_gan.train` exits with status 143 (128 + SIGTERM) so that a job script can requeue it, or
    130 (128 + SIGINT) after a Ctrl-C. `ckpt_path=last` resumes from it. A second Ctrl-C stops at
    once, as Lightning does, without that checkpoint (a hung loader must not hold the terminal).
    Data-loader workers ignore Ctrl-C (`sr_gan.data.datamodule.WorkerStart`): a terminal sends it
    to them too, and a worker it ended took down the run's next validation.

    It replaces Lightning's handler for the training loop: under DDP that one broadcasts from inside
    the signal handler and stops each rank on its own, which deadlocked two ranks (Lightning 2.6:
    one rank saving its checkpoint, the other in the next batch's collective). The stop itself is
    Lightning's: its flag, set on every rank on the same batch, makes its loop raise
    `SIGTERMException` once the batch is counted (a raise from a hook would leave the batch
    half-counted in the checkpoint's loop state). Under DDP, Lightning >= 2.5.2 also broadcasts its
    flag from rank 0 before every batch and reads it back: a host sync per batch, which keeps a GPU
    from running ahead of the host (Lightning-AI/pytorch-lightning#21487). Here the flag is set on
    every rank at once, so that broadcast is switched off for the fit.
    """

    def __init__(self, dirpath: str | Path, filename: str = "last") -> None:
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.requested = False  # SIGTERM or Ctrl-C received by this process
        self.ctrl_c = False  # ... and it was a Ctrl-C: the run ends as interrupted, not pre-empted
        self._announce = False  # this process prints the Ctrl-C notice (rank 0)
        self.stopping = False  # some rank received it: every rank stops at the end of an iteration
        self.stop_now = False  # Lightning's flag is set: the loop stops after this batch
        self.saving = False  # writing the pre-emption's checkpoint
        self.validated_after = -1  # the batch count at the last validation's end

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a signal before this point (sanity check, loaders) met Lightning's handler: take it over
        self.requested, self.stopping, self.stop_now = trainer.received_sigterm, False, False
        self._lightning_flag(trainer, False)
        self.ctrl_c, self._announce = False, trainer.is_global_zero
        if threading.current_thread() is threading.main_thread():  # Lightning puts back the pre-fit handlers
            signal.signal(signal.SIGTERM, self._request)
            if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # a background job (`cmd &`) ignores Ctrl-C
                signal.signal(signal.SIGINT, self._request_by_ctrl_c)
        if trainer.world_size > 1 and hasattr(trainer.fit_loop.epoch_loop, "_broadcast_sigterm_tensor"):
            trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor = _combined_on_the_logging_interval

    def _request(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def _request_by_ctrl_c(self, signum: int, frame: FrameType | None) -> None:
        if self.ctrl_c:  # the second one: stop now (Lightning's KeyboardInterrupt shutdown)
            raise KeyboardInterrupt
        self.requested = self.ctrl_c = True
        if self._announce:  # from a signal handler: no logging lock taken
            sys.stderr.write(f"\n{CTRL_C_NOTICE}\n")

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        batches = trainer.fit_loop.epoch_loop.batch_progress.total.processed  # this one included
        if trainer.world_size == 1 or batches % trainer.log_every_n_steps == 0:
            self.stopping = trainer.strategy.reduce_boolean_decision(self.requested, all=False)
        if self.stopping and batches % getattr(pl_module, "accumulate_batches", 1) == 0:
            self.stop_now = True
            self._lightning_flag(trainer, True)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.stop_now:  # the validation due at the stop batch runs to its end (Lightning's stops at its flag)
            self._lightning_flag(trainer, False)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validated_after = trainer.fit_loop.epoch_loop.batch_progress.total.completed
        if self.stop_now:
            self._lightning_flag(trainer, True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.strategy.reduce_boolean_decision(self.requested, all=False):  # after the last batch's check
            raise SIGTERMException

    @staticmethod
    def _lightning_flag(trainer: L.Trainer, value: bool) -> None:
        trainer._signal_connector.received_sigterm = value

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        vars(trainer.fit_loop.epoch_loop).pop("_broadcast_sigterm_tensor", None)  # Lightning's own again

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        batches = trainer.fit_loop.epoch_loop.batch_progress.total.completed
        if self.saving and self.validated_after == batches:  # the pre-emption's checkpoint after a validation:
            # Lightning's resume passes that batch's loop step again (skipping the validation), which counts it
            # for the loggers a second time: the resumed run logged every step one too far. After a batch with
            # no validation it goes straight on to the next batch, and the count is right as it stands.
            checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"] -= 1

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            self.saving = True
            try:
                trainer.save_checkpoint(self.path, weights_only=False)  # a resumable one, said (no notice)
            finally:
                self.saving = False
            if not trainer.is_global_zero:  # rank 0 wrote it and says so (another rank named a signal it never got)
                return
            batches = trainer.fit_loop.epoch_loop.batch_progress.total.completed
            how = "Ctrl-C" if self.ctrl_c else "SIGTERM"
            log.warning("%s: saved a resumable checkpoint after batch %d to %s", how, batches, self.path)


CTRL_C_NOTICE = (
    "Ctrl-C: stopping after this training step, with a resumable last.ckpt (Ctrl-C again: at once, without it)"
)


def _combined_on_the_logging_interval() -> None:
    """Takes the place of Lightning's per-batch SIGTERM broadcast (`PreemptionCheckpoint`)."""
