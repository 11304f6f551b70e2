"""What CUDA-graph trees would see of a training side, traced on a CPU.

Under ``model.compile_mode=reduce-overhead`` torch's CUDA-graph trees (``torch/_inductor/
cudagraph_trees.py``) record each compiled forward and backward graph as a CUDA graph and replay
the recordings when a later step calls the same graphs in the same order. A step whose calls differ
(another graph, another order, a graph compiled anew for a new grad mode or shape) records again,
and each recording waits for the device; an output of the last step's graphs still referenced when
the next step begins is overwritten by the next replay. None of this needs a GPU to be seen: `trace`
compiles a side's networks with a backend (dynamo and AOT autograd, eager kernels) that lists every
call of a forward or backward graph per training step, and counts the graph outputs still alive as
each step begins. The plain loop and ours (a real ``L.Trainer``, with validation and checkpoints
between steps) should give the same list, step after step.

    python -m benchmarks.compiled_calls esrgan     # or psnr_rrdb; dry sizes, fp32, on this CPU
"""

from __future__ import annotations

import argparse
import gc
import itertools
import tempfile
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from functorch.compile import make_boxed_func
from lightning.pytorch.callbacks import ModelCheckpoint
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.backends.registry import register_backend
from torch.utils.data import DataLoader

from benchmarks.plain_loop import PlainLoop
from benchmarks.stages import STAGES, Config, Stage, build_stage
from benchmarks.step_timing import compilation_counts, fresh_compilation, quiet_lightning

BACKEND = "sr_gan_calls"  # the dynamo backend name of the recorder (`Config.compile`)
CPU = torch.device("cpu")


@dataclass
class Trace:
    """One side's compiled calls: per training step the graphs it called (``fw0:43>61``: forward
    graph 0 in order of compilation, its inputs > its outputs; ``bw1:...``: a backward), the earlier
    graphs' outputs alive as it began, and `compilation_counts`."""

    steps: list[list[str]] = field(default_factory=lambda: [[]])
    alive: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


class _Recorder:
    """The backend's state while one side is traced (a dynamo backend is registered once, by name)."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> Trace:
        """A new side: a new trace, graphs numbered from 0."""
        self.trace, self.graphs = Trace(), itertools.count()
        self.outputs: list[weakref.ref] = []  # the graph outputs of the side being traced
        return self.trace

    def next_step(self) -> None:
        """A training step begins: count the earlier graphs' outputs that something still references."""
        gc.collect()
        self.outputs = [ref for ref in self.outputs if ref() is not None]
        self.trace.alive.append(len(self.outputs))
        self.trace.steps.append([])

    def compiler(self, kind: str) -> Callable[..., Any]:
        """AOT autograd's forward (`kind` "fw") or backward ("bw") compiler: eager kernels, each call listed."""

        def compile_graph(graph: torch.fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
            outputs = [o for o in graph.graph.output_node().args[0] if o is not None]
            name = f"{kind}{next(self.graphs)}:{len(example_inputs)}>{len(outputs)}"  # e.g. fw0:43>61
            run = make_boxed_func(graph.forward)

            def call(args: list[Any]) -> list[Any]:
                self.trace.steps[-1].append(name)
                passed = {a.untyped_storage().data_ptr() for a in args if isinstance(a, torch.Tensor)}
                outputs = run(args)
                for output in outputs:  # an input handed back (saved for backward) is no graph memory
                    if isinstance(output, torch.Tensor) and output.untyped_storage().data_ptr() not in passed:
                        self.outputs.append(weakref.ref(output))
                return outputs

            call._boxed_call = True  # type: ignore[attr-defined]
            return call

        return compile_graph


_RECORDER = _Recorder()
register_backend(
    name=BACKEND, compiler_fn=aot_autograd(fw_compiler=_RECORDER.compiler("fw"), bw_compiler=_RECORDER.compiler("bw"))
)
CONFIG = Config("calls", "32-true", compile=BACKEND)


class _StepBoundaries(L.Callback):
    def on_train_batch_start(self, *args: Any) -> None:
        _RECORDER.next_step()


def trace_plain(stage: Stage, steps: int) -> Trace:
    """`PlainLoop` over `steps` batches."""
    fresh_compilation(CONFIG)
    trace = _RECORDER.start()
    with quiet_lightning():
        loop = PlainLoop(stage.module(CONFIG), CONFIG, CPU)
    for batch in stage.batches(steps, CPU):
        _RECORDER.next_step()
        loop.step(batch)
    return _finish(trace)


def trace_ours(stage: Stage, steps: int, *, validate_every: int, folder: Path) -> Trace:
    """`SRGANModule` fitted by ``L.Trainer`` over `steps` batches, validating (on images of two
    sizes, as validation sets have) and writing a checkpoint every `validate_every` batches."""
    fresh_compilation(CONFIG)
    trace = _RECORDER.start()
    g = torch.Generator().manual_seed(1)
    val = [
        {
            "lr": torch.rand(1, 3, h, h + 1, generator=g),
            "hr": torch.rand(1, 3, h * stage.scale, (h + 1) * stage.scale, generator=g),
        }
        for h in (7, 9)
    ]
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=folder,
        val_check_interval=validate_every,
        num_sanity_val_steps=0,
        callbacks=[_StepBoundaries(), ModelCheckpoint(dirpath=folder, save_last=True)],
    )
    with quiet_lightning():
        trainer.fit(
            stage.module(CONFIG),
            train_dataloaders=DataLoader(stage.batches(steps, CPU), batch_size=None),
            val_dataloaders=DataLoader(val, batch_size=None),
        )
    return _finish(trace)


def _finish(trace: Trace) -> Trace:
    _RECORDER.next_step()  # the outputs still alive after the last step
    trace.steps = trace.steps[1:-1]  # (before the first step: nothing; after the last: nothing)
    trace.counts = compilation_counts()
    return trace


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=list(STAGES))
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    stage = build_stage(args.stage, "dry")
    with tempfile.TemporaryDirectory() as folder:
        traces = {
            "plain": trace_plain(stage, args.steps),
            "ours": trace_ours(stage, args.steps, validate_every=args.steps // 2, folder=Path(folder)),
        }
    for side, trace in traces.items():
        print(f"{side}: {trace.counts}; outputs alive as each step began: {trace.alive}")
        for number, calls in enumerate(trace.steps):
            print(f"  step {number}: {' '.join(calls)}")
    print("same calls:", traces["plain"].steps == traces["ours"].steps)


if __name__ == "__main__":
    main()
