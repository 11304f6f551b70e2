"""Batches per second of a stage's training step: ours (a real ``L.Trainer`` fitting `SRGANModule`)
against `PlainLoop` on the same networks, in steady state.

Both sides run on the same batches, already on the device (the data path is benchmarked on its
own). After `Plan.warmup` batches (start-up, cuDNN autotuning, compilation) a window opens; it
closes after `Plan.max_batches` batches or once `Plan.max_seconds` have passed, and the device is
synchronised only at its two ends, so the host may run ahead of the GPU as in training.

A compiled side starts from a fresh compilation state, as a new training process does: dynamo's
cache entries and the CUDA-graph trees are process-wide, and the networks of both sides run the
same compiled code (``nn.Module._call_impl``), so otherwise ours would replay, re-record and keep
alive graphs that the plain loop recorded. The inductor caches on disk still spare the second side
the kernels' compilation (it re-traces: seconds).
"""

from __future__ import annotations

import gc
import logging
import statistics
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch
from torch._dynamo import convert_frame
from torch._dynamo.utils import counters
from torch.utils.data import DataLoader

from benchmarks.plain_loop import PlainLoop
from benchmarks.stages import Config, Stage
from benchmarks.timing import sync
from sr_gan.callbacks import gpu_peak_gib
from sr_gan.lit.ddp import PlayerDDPStrategy
from sr_gan.ranks import ranks_of_this_job


@dataclass(frozen=True)
class Plan:
    """How long to measure: warm-up batches, then a window of at most these batches / seconds."""

    warmup: int
    max_batches: int
    max_seconds: float


_at_window_start: dict[str, int] = {}  # `_compiled_so_far` as the last timing window opened


@dataclass
class Window:
    """Steady-state batches/s over the batches after the warm-up (see the module docstring).

    On a GPU the rate is batches over the window's synchronised time. On a CPU, where no queue hides
    anything, it is one over the median interval between batch ends: robust to the load spikes of a
    shared machine, and it still holds every cost between two batches (loop, hooks, logging).
    """

    device: torch.device
    plan: Plan
    start: float = 0.0
    batches: int = 0
    seconds: float = 0.0
    intervals: list[float] = field(default_factory=list)

    def begin(self, index: int) -> None:
        if index == self.plan.warmup:
            sync(self.device)
            _at_window_start.update(_compiled_so_far())
            self.start = self._last = time.perf_counter()

    def end(self, index: int) -> bool:
        """Call after batch `index`; True when the window is closed (stop feeding batches)."""
        if self.seconds > 0:  # closed already
            return True
        if index < self.plan.warmup:
            return False
        now = time.perf_counter()
        self.intervals.append(now - self._last)
        self._last = now
        done = index - self.plan.warmup + 1
        if done < self.plan.max_batches and now - self.start < self.plan.max_seconds:
            return False
        sync(self.device)
        self.batches, self.seconds = done, time.perf_counter() - self.start
        return True

    @property
    def rate(self) -> float:
        if self.seconds <= 0:
            return float("nan")
        if self.device.type == "cpu":
            return 1.0 / statistics.median(self.intervals)
        return self.batches / self.seconds


@dataclass
class Span:
    """The batches a `profiler` (start/stop; ``batches`` batches, default one) records: the last
    ones of the warm-up, so that the window's timing leaves them out."""

    profiler: Any
    warmup: int

    def before(self, index: int) -> None:
        if self.profiler is not None and index == self.warmup - getattr(self.profiler, "batches", 1):
            self.profiler.start()

    def after(self, index: int) -> None:
        if self.profiler is not None and index == self.warmup - 1:
            self.profiler.stop()


class _WindowCallback(L.Callback):
    """Drives a `Window` and a profiling `Span` from the trainer's batch hooks."""

    def __init__(self, window: Window, span: Span) -> None:
        self.window, self.span = window, span

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        index = args[-1]  # (module, batch, batch_idx)
        self.span.before(index)
        self.window.begin(index)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        index = args[-1]  # (module, outputs, batch, batch_idx)
        self.span.after(index)
        if self.window.end(index):
            trainer.should_stop = True


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """No 'GPU available' banners nor loader-worker advice for each of the many short fits."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    with warnings.catch_warnings():
        for message in (".*does not have many workers", ".*smaller than the logging interval", ".*GPU available"):
            warnings.filterwarnings("ignore", message=message)
        warnings.filterwarnings("ignore", message=r"model.compile=")  # the module announces compilation
        try:
            yield
        finally:
            logger.setLevel(level)


def fresh_compilation(config: Config) -> None:
    """Before a compiled side: no dynamo cache entry, CUDA-graph tree or counter of an earlier one."""
    if config.compile:
        torch._dynamo.reset()
        counters.clear()
        _at_window_start.clear()


def cudagraph_recordings() -> int:
    """CUDA graphs recorded by this process's CUDA-graph tree (`fresh_compilation` resets it; none
    off CUDA; -1 where this torch's tree has another shape). Each recording waits for the device
    twice; a step that replays records none."""
    if not torch.cuda.is_initialized():
        return 0
    from torch._inductor.cudagraph_trees import get_manager

    try:  # torch's private tree: read it, never fail the measurement for it
        manager = get_manager(torch.cuda.current_device(), create_if_none_exists=False)
        roots = [] if manager is None else [node for nodes in manager.roots.values() for node in nodes]
        return sum(1 + node.num_descendants() for node in roots)
    except (AttributeError, TypeError):
        return -1


def _compiled_so_far() -> dict[str, int]:
    return {"frames": counters["frames"]["ok"], "cudagraph_recordings": cudagraph_recordings()}


def compilation_counts() -> dict[str, int]:
    """What dynamo and inductor did since `fresh_compilation`: frames compiled, graphs, graph
    breaks, recompilations, functions CUDA graphs skipped (they then run without graphs) and CUDA
    graphs recorded; and the frames compiled and graphs recorded inside the last timing window
    (steady state should have none: each costs the window a compilation or a device wait)."""
    now = _compiled_so_far()
    return {
        "frames": now["frames"],
        "graphs": counters["stats"]["unique_graphs"],
        "graph_breaks": sum(counters["graph_break"].values()),
        # each frame's compilations after its first (dynamo's guard_failures holds one reason per cache
        # entry that failed: D compiled 4 times left 1 + 2 + 3 = 6)
        "recompiles": sum(count - 1 for count in convert_frame.FRAME_COMPILE_COUNTER.values()),
        "cudagraph_skips": counters["inductor"]["cudagraph_skips"],
        "cudagraph_recordings": now["cudagraph_recordings"],
    } | {f"{key}_in_window": count - _at_window_start.get(key, count) for key, count in now.items()}


class PlainInLightning(L.LightningModule):
    """`PlainLoop.step` as the training step of a LightningModule: Lightning's loop (its hooks,
    progress tracking and precision context) around the plain loop's math. Against the plain loop it
    measures what the loop costs; against ours, what our step adds inside the same loop."""

    def __init__(self, loop: PlainLoop) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.loop = loop

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.loop.step(batch)

    def configure_optimizers(self) -> None:
        return None  # the plain loop steps its own optimizers


def fit_rate(
    module: L.LightningModule,
    stage: Stage,
    config: Config,
    device: torch.device,
    plan: Plan,
    profiler: Any = None,
    *,
    callbacks: tuple[L.Callback, ...] = (),
    **trainer_options: Any,
) -> float:
    """Batches/s of `module`'s training step driven by ``L.Trainer.fit`` over the stage's batches, on
    one device unless `trainer_options` say otherwise (``bench_ddp``: a strategy on two ranks)."""
    window = Window(device, plan)
    options = {"devices": 1, "benchmark": device.type == "cuda"} | trainer_options  # conf/trainer: benchmark true
    trainer = L.Trainer(
        accelerator=device.type,
        precision=config.precision,
        max_epochs=1,
        max_steps=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[_WindowCallback(window, Span(profiler, plan.warmup)), *callbacks],
        **options,
    )
    loader = DataLoader(stage.batches(plan.warmup + plan.max_batches, device), batch_size=None)
    with quiet_lightning():
        trainer.fit(module, train_dataloaders=loader)
    _release(device)
    return window.rate


def ours_rate(stage: Stage, config: Config, device: torch.device, plan: Plan, *, profiler: Any = None) -> float:
    """Batches/s of `SRGANModule.training_step` driven by ``L.Trainer.fit``; `profiler` (start/stop)
    records the last warm-up batch(es). `Config.ddp`: under trainer=ddp's strategy in this one
    process; the process group and the rank variables it sets up are gone afterwards."""
    fresh_compilation(config)
    options = {"strategy": PlayerDDPStrategy()} if config.ddp else {}
    with ranks_of_this_job():  # a DDP fit's process group and rank variables go afterwards (no-op otherwise)
        return fit_rate(stage.module(config), stage, config, device, plan, profiler, **options)


def plain_in_lightning_rate(
    stage: Stage, config: Config, device: torch.device, plan: Plan, *, profiler: Any = None
) -> float:
    """Batches/s of `PlainLoop.step` driven by ``L.Trainer.fit`` (`PlainInLightning`)."""
    fresh_compilation(config)
    with quiet_lightning():
        loop = PlainLoop(stage.module(config), config, device)
    return fit_rate(PlainInLightning(loop), stage, config, device, plan, profiler)


def plain_rate(stage: Stage, config: Config, device: torch.device, plan: Plan, *, profiler: Any = None) -> float:
    """Batches/s of `PlainLoop.step` over the same batches; `profiler` as in `ours_rate`."""
    fresh_compilation(config)
    torch.backends.cudnn.benchmark = device.type == "cuda"
    span = Span(profiler, plan.warmup)
    with quiet_lightning():
        loop = PlainLoop(stage.module(config), config, device)
        window = Window(device, plan)
        for index, batch in enumerate(stage.batches(plan.warmup + plan.max_batches, device)):
            span.before(index)
            window.begin(index)
            loop.step(batch)
            span.after(index)
            if window.end(index):
                break
    del loop
    _release(device)
    return window.rate


SIDES = {"plain": plain_rate, "plain_in_lightning": plain_in_lightning_rate, "ours": ours_rate}


def compare(
    stage: Stage,
    config: Config,
    device: torch.device,
    plan: Plan,
    *,
    rounds: int = 1,
    sides: tuple[str, ...] = ("plain", "ours"),
) -> dict[str, Any]:
    """Ours against the plain loop (and any other of `SIDES`), `rounds` times in alternation; the best
    rate of each side (on a shared machine, other load only ever slows a run down). A compiled config
    adds each side's `compilation_counts` (its last round)."""
    rates: dict[str, list[float]] = {side: [] for side in sides}
    compiled: dict[str, dict[str, int]] = {}
    peaks: dict[str, float | None] = {}  # GiB of GPU memory each side held at most (None off CUDA)
    for _ in range(rounds):
        for side in sides:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            rates[side].append(SIDES[side](stage, config, device, plan))
            peaks[side] = gpu_peak_gib(device)  # what a run logs as memory/gpu_peak_gib
            if config.compile:
                compiled[side] = compilation_counts()
    best = {side: max(found) for side, found in rates.items()}
    return (
        {
            "stage": stage.name,
            "config": config.name,
            "size": stage.size,
            "batch": stage.batch,
            "hr": stage.patch,
            "ratio": best["ours"] / best["plain"],  # > 1: ours faster
        }
        | {f"{side}_it_s": rate for side, rate in best.items()}
        | {f"{side}_rounds": found for side, found in rates.items()}
        | {f"{side}_gpu_peak_gib": peak for side, peak in peaks.items()}
        | ({"compiled": compiled} if compiled else {})
    )


def step_flops(stage: Stage, device: torch.device) -> int:
    """FLOPs of one training batch (forward, backward; convolutions and matrix products, as
    `torch.utils.flop_counter` counts them), from one plain fp32 eager step."""
    from torch.utils.flop_counter import FlopCounterMode

    loop = PlainLoop(stage.module(Config("fp32", "32-true")), Config("fp32", "32-true"), device)
    batch = stage.batches(1, device)[0]
    with FlopCounterMode(display=False) as counter:
        loop.step(batch)
    del loop
    _release(device)
    return counter.get_total_flops()


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, *, repeats: int = 10) -> float:
    """Measured matrix-product peak of this machine in `dtype` (fp32 follows the current
    ``float32_matmul_precision``: TF32 on GPUs under ``high``, as training sets it)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(3):  # best of three: other load only slows a run down
        sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 * repeats / best / 1e12


def utilisation(flops: int, rate: float, peak_tflops: float) -> float:
    """Share of the measured matmul peak that `flops` per batch at `rate` batches/s amounts to."""
    return flops * rate / (peak_tflops * 1e12)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
