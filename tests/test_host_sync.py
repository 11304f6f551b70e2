"""Training makes no host sync per batch: nothing reads a device value back to Python, nothing
copies Python data to the device.

On a GPU a read (``.item()``, ``float(t)``, ``bool(t)``, ``if t:``) blocks the host until the device
has caught up, so the next batch cannot be queued meanwhile. Every such read goes through
``aten._local_scalar_dense``. A tensor made from Python data (``torch.tensor(x, device=...)``, what
Lightning does with a logged float) is made on the host and copied to the device, and torch's
blocking copy synchronises the stream too; every such tensor goes through ``aten.lift_fresh``. A
dispatch mode counts both in CPU runs: of the whole step (G, D, losses, clipping, the non-finite
guard, EMA, schedules, logging), and of a real run's whole batch loop (Lightning's loop, our
callbacks, the progress bar, the logger). Adam's step counters are CPU tensors on every device,
read on purpose by torch, and are allowed.
"""

from __future__ import annotations

import traceback
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.host_syncs import call_site
from sr_gan import train as train_cli
from sr_gan.lit import SRGANModule
from tests.test_train import _fit

READ, MADE = "read", "made from Python data"  # the two kinds of host sync (module docstring)


class CountHostSyncs(TorchDispatchMode):
    """Records each read of a tensor's value into Python and each tensor made from Python data: its
    kind, its shape and the innermost call site outside torch."""

    def __init__(self, allowed: set[int]) -> None:
        super().__init__()
        self.allowed, self.syncs = allowed, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        read = func is torch.ops.aten._local_scalar_dense.default and id(args[0]) not in self.allowed
        if read or func is torch.ops.aten.lift_fresh.default:
            site = call_site(traceback.extract_stack()[:-1], depth=1)
            self.syncs.append((READ if read else MADE, tuple(args[0].shape), site))
        return func(*args, **(kwargs or {}))


def _optimizer_counters(trainer: L.Trainer) -> set[int]:
    return {id(s["step"]) for o in trainer.optimizers for s in o.state.values() if "step" in s}


@pytest.mark.parametrize("overrides", [["loss=l1"], ["loss=ragan", "optim.clip_grad_norm.generator=1.0"]])
def test_the_training_step_neither_reads_back_nor_copies_to_the_device(make_cfg, overrides: list[str]) -> None:
    syncs: list[list[tuple[str, tuple[int, ...]]]] = []

    class Checked(SRGANModule):
        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            if self.batches_done == 0:  # the first step creates the optimizers' states
                return super().training_step(batch, batch_idx)
            with CountHostSyncs(_optimizer_counters(self.trainer)) as mode:
                result = super().training_step(batch, batch_idx)
            syncs.append([(kind, shape) for kind, shape, _ in mode.syncs])
            return result

    cfg = make_cfg(*overrides, "trainer.max_steps=3", "trainer.log_every_n_steps=1000")
    _fit(cfg, Checked)
    assert syncs == [[], []]


class LoopSyncs(L.Callback):
    """Counts host syncs from the start of batch `first` to the start of batch `stop`, per batch: all
    the trainer does in between (the step, every callback and logger, fetching the next batches)."""

    def __init__(self, first: int, stop: int) -> None:
        self.first, self.stop = first, stop
        self.mode: CountHostSyncs | None = None
        self.by_batch: dict[int, list[tuple[str, str]]] = {}

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, index: int) -> None:
        if self.mode is not None:
            self.by_batch[index - 1] = [(kind, site) for kind, _, site in self.mode.syncs]
            self.mode.syncs = []
        if index == self.first:
            self.mode = CountHostSyncs(_optimizer_counters(trainer))
            self.mode.__enter__()
        elif index == self.stop and self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.mode = None


# Reads on the CPU side of the data path, before the batch reaches the device: a dataset's patch
# corners (in the main process with data.num_workers=0) and the degradation seed.
CPU_SIDE = {("sr_gan/data/datasets.py", "__getitem__"), ("sr_gan/data/datamodule.py", "on_before_batch_transfer")}


def _on_the_device_side(site: str) -> bool:
    place, function = site.split(" ")
    return (place.split(":")[0], function) not in CPU_SIDE


def test_the_whole_batch_loop_syncs_only_on_the_logging_interval(make_cfg, monkeypatch) -> None:
    """A real run (progress bar, CSV logger, checkpoint, speed, RNG and pre-emption callbacks; the ESRGAN
    objective with EMA): between logging intervals nothing waits for the device; on the interval,
    Lightning's logging and the non-finite check read the logged values, and every logged value is
    already a device tensor (Lightning's own states of each logged name are made once, on the first)."""
    probe = LoopSyncs(first=2, stop=10)
    build = train_cli.build_trainer

    def with_probe(cfg):  # noqa: ANN001, ANN202
        trainer = build(cfg)
        trainer.callbacks.append(probe)
        return trainer

    monkeypatch.setattr(train_cli, "build_trainer", with_probe)
    cfg = make_cfg(
        "model=rrdb",
        "loss=ragan",
        "trainer.max_steps=11",
        "trainer.log_every_n_steps=4",
        "trainer.enable_progress_bar=true",
        "trainer.val_check_interval=1000",
        "test=false",
    )
    train_cli.train(cfg)
    device_side = {b: [(k, s) for k, s in syncs if _on_the_device_side(s)] for b, syncs in probe.by_batch.items()}
    assert sorted(device_side) == list(range(2, 10))
    assert {b for b, syncs in device_side.items() if syncs} == {3, 7}  # (b + 1) % log_every_n_steps == 0
    reads, made = ({b: [s for k, s in syncs if k == kind] for b, syncs in device_side.items()} for kind in (READ, MADE))
    assert "guard.py" in reads[3][0] and "guard.py" in reads[7][0]  # the non-finite check, then Lightning's logging
    assert made[3] and all("logger_connector/result.py" in site for site in made[3])
    assert made[7] == []
