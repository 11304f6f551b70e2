"""Training makes no host sync per batch: nothing reads a device value back to Python, nothing
copies Python data to the device, no operation waits for a result's size.

On a GPU a read (``.item()``, ``float(t)``, ``bool(t)``, ``if t:``) blocks the host until the device
has caught up, so the next batch cannot be queued meanwhile. Every such read goes through
``aten._local_scalar_dense``, except ``.tolist()``, ``.numpy()`` and ``.cpu()``, which on a CPU
tensor dispatch nothing: those three are wrapped. A tensor made from Python data
(``torch.tensor(x, device=...)``, what Lightning does with a logged float) is made on the host and
copied to the device, and torch's blocking copy synchronises the stream too; every such tensor goes
through ``aten.lift_fresh``. An operation whose output size depends on the values (``nonzero``,
boolean-mask indexing, ``unique``, ``masked_select``, ``repeat_interleave`` without its size) reads
that size back on a GPU, and on a CPU reads nothing: those are counted by name. A dispatch mode
counts all three kinds in CPU runs: of the whole step (G, D, losses, clipping, the non-finite
guard, EMA, schedules, logging), and of a real run's whole batch loop (Lightning's loop, our
callbacks, the progress bar, the logger), in one process and on each of 2 DDP ranks. Adam's step
counters are CPU tensors on every device, read on purpose by torch, and are allowed.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.host_syncs import call_site
from sr_gan import train as train_cli
from sr_gan.lit import SRGANModule
from tests.conftest import TINY
from tests.helpers import run_module
from tests.test_train import _fit

READ, MADE, SIZED = "read", "made from Python data", "sized by its values"  # the kinds (module docstring)

# Operations whose output size depends on the values: on a GPU the host waits to read it.
VALUE_SIZED = {
    torch.ops.aten.nonzero.default,
    torch.ops.aten.masked_select.default,
    torch.ops.aten._unique2.default,
    torch.ops.aten.unique_dim.default,
    torch.ops.aten.unique_consecutive.default,
}
PYTHON_READS = ("tolist", "numpy", "cpu")  # reads that dispatch nothing on a CPU tensor


def _sized_by_values(func, args, kwargs) -> bool:  # noqa: ANN001
    if func in VALUE_SIZED:
        return True
    if func is torch.ops.aten.repeat_interleave.Tensor:
        return kwargs.get("output_size") is None
    if func in (torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default):
        return any(i is not None and i.dtype == torch.bool for i in args[1])  # a mask goes through nonzero
    return False


class CountHostSyncs(TorchDispatchMode):
    """Records each read of a tensor's value into Python, each tensor made from Python data and each
    operation sized by its values: its kind, its shape and the innermost call site outside torch."""

    def __init__(self, allowed: set[int]) -> None:
        super().__init__()
        self.allowed, self.syncs = allowed, []
        self._methods: dict[str, Any] = {}

    def _record(self, kind: str, tensor: torch.Tensor) -> None:
        site = call_site(traceback.extract_stack()[:-2], depth=1)
        self.syncs.append((kind, tuple(tensor.shape), site))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default and id(args[0]) not in self.allowed:
            self._record(READ, args[0])
        elif func is torch.ops.aten.lift_fresh.default:
            self._record(MADE, args[0])
        elif _sized_by_values(func, args, kwargs):
            self._record(SIZED, args[0])
        return func(*args, **kwargs)

    def __enter__(self) -> CountHostSyncs:
        for name in PYTHON_READS:
            self._methods[name] = torch.Tensor.__dict__.get(name)  # None: inherited from the C base
            setattr(torch.Tensor, name, self._reading(getattr(torch.Tensor, name)))
        return super().__enter__()

    def __exit__(self, *exc: object) -> None:
        for name, method in self._methods.items():
            if method is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, method)
        self._methods = {}
        super().__exit__(*exc)

    def _reading(self, method: Any) -> Any:
        def read(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if id(tensor) not in self.allowed:
                self._record(READ, tensor)
            return method(tensor, *args, **kwargs)

        return read


def _optimizer_counters(trainer: L.Trainer) -> set[int]:
    return {id(s["step"]) for o in trainer.optimizers for s in o.state.values() if "step" in s}


@pytest.mark.parametrize("overrides", [["loss=l1"], ["loss=ragan", "optim.clip_grad_norm.generator=1.0"]])
def test_the_training_step_neither_reads_back_nor_copies_to_the_device(make_cfg, overrides: list[str]) -> None:
    syncs: list[list[tuple[str, tuple[int, ...]]]] = []

    class Checked(SRGANModule):
        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            if self.batches_done in (0, 3):  # the first step creates the optimizers' states; the budget's
                return super().training_step(batch, batch_idx)  # last logs, as the logging interval does
            with CountHostSyncs(_optimizer_counters(self.trainer)) as mode:
                result = super().training_step(batch, batch_idx)
            syncs.append([(kind, shape) for kind, shape, _ in mode.syncs])
            return result

    cfg = make_cfg(*overrides, "trainer.max_steps=4", "trainer.log_every_n_steps=1000")
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


# Reads on the CPU side of the data path, before the batch reaches the device (in the main process
# with data.num_workers=0): the patch stream's image order, a dataset's patch corners, the
# degradation seed.
CPU_SIDE = {
    ("sr_gan/data/sampler.py", "permutation"),
    ("sr_gan/data/datasets.py", "__getitem__"),
    ("sr_gan/data/datamodule.py", "on_before_batch_transfer"),
}


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


class LoopSyncsOnFile(LoopSyncs):
    """`LoopSyncs` in a CLI run: each rank writes its syncs by batch to `folder`/rank<r>.json."""

    def __init__(self, first: int, stop: int, folder: str) -> None:
        super().__init__(first, stop)
        self.folder = Path(folder)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.by_batch))


def test_under_ddp_no_rank_syncs_between_logging_intervals(tmp_path: Path) -> None:
    """trainer=ddp on 2 CPU ranks, the ESRGAN objective: on each rank the batch loop waits for the
    device only on the logging interval, where `PreemptionCheckpoint` combines the ranks' SIGTERM
    flags. (Lightning >= 2.5.2 broadcasts its own flag and reads it before every batch: switched off.)"""
    folder = tmp_path / "syncs"
    probe = ["+callbacks.probe._target_=tests.test_host_sync.LoopSyncsOnFile", f"+callbacks.probe.folder={folder}"]
    probe += ["+callbacks.probe.first=2", "+callbacks.probe.stop=10"]
    settings = [o for o in TINY if not o.startswith(("trainer.max_steps", "trainer.log_every", "trainer.val_check"))]
    ddp = ["trainer=ddp", "trainer.devices=2", "model=rrdb", "loss=ragan", "trainer.precision=32-true"]
    budget = ["trainer.max_steps=11", "trainer.log_every_n_steps=4", "trainer.val_check_interval=1000", "test=false"]
    proc = run_module("sr_gan.train", *settings, *ddp, *budget, *probe, f"paths.log_dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        by_batch = json.loads((folder / f"rank{rank}.json").read_text())
        device_side = {int(b): [s for _, s in syncs if _on_the_device_side(s)] for b, syncs in by_batch.items()}
        assert sorted(device_side) == list(range(2, 10)), rank
        assert {b for b, sites in device_side.items() if sites} == {3, 7}, (rank, device_side)
        assert any("reduce_boolean_decision" in site for site in device_side[3]), rank  # the SIGTERM flags
