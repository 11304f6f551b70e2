"""What ``trainer=ddp`` costs a GAN stage: one DDP wrapper per player (`sr_gan.lit.ddp`, ours)
against Lightning's one wrapper around the whole module, which a GAN stage can only run with
``find_unused_parameters=True`` (baseline).

Two CPU processes (gloo, one intra-op thread each, as `sr_gan.threads` gives two ranks on 2 cores)
fit the ESRGAN stage with a real ``L.Trainer`` under each strategy, alternating, on the same batches;
rank 0's steady-state rate (`step_timing.fit_rate`) and the gradient elements each batch all-reduces
(`AllReduceCounter`, a DDP communication hook). With one wrapper both backward passes all-reduce
both players' gradients (twice the traffic), walk the autograd graph and, on a GPU, read DDP's map
of used parameters back to the host; the traffic and the walk are measured here, the host sync
needs a GPU.

    python -m benchmarks.bench_ddp [--size tiny|cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.multiprocessing as mp
from lightning.pytorch.strategies import DDPStrategy, Strategy
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from benchmarks.stages import CONFIGS, build_stage
from benchmarks.step_timing import Plan, fit_rate
from sr_gan.lit import SRGANModule
from sr_gan.lit.ddp import PlayerDDPStrategy

WORLD = 2
# Counted batches only: each rank's window closes on its own clock, and a rank that stopped a batch
# early would leave the other waiting in an all-reduce (Lightning does not combine should_stop).
PLANS = {
    "tiny": Plan(warmup=3, max_batches=20, max_seconds=float("inf")),
    "cpu": Plan(warmup=1, max_batches=4, max_seconds=float("inf")),
}
ROUNDS = 2
STRATEGIES: dict[str, Callable[[], Strategy]] = {  # broadcast_buffers as conf/trainer/ddp.yaml
    "one DDP per player": lambda: PlayerDDPStrategy(find_unused_parameters=False, broadcast_buffers=False),
    "one DDP around the module": lambda: DDPStrategy(find_unused_parameters=True, broadcast_buffers=False),
}


class AllReduceCounter(L.Callback):
    """Per loader batch, the (wrapper, elements) of every bucket DDP all-reduces: a counting hook on
    each DDP wrapper of the fit (the players' under `PlayerDDPStrategy`, else the module's)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, int]]] = []

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        wrappers = getattr(module, "replicas", None) or {"module": trainer.strategy.model}
        for name, wrapper in wrappers.items():
            wrapper.register_comm_hook((self, name), self.counted)

    def on_train_batch_start(self, *args: Any) -> None:
        self.batches.append([])

    @staticmethod
    def counted(state, bucket):  # noqa: ANN001, ANN205 (DDP refuses string annotations)
        counter, name = state
        counter.batches[-1].append((name, bucket.buffer().numel()))
        return allreduce_hook(None, bucket)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, size: str, port: int, out: str) -> None:
    """One rank: both strategies, `ROUNDS` times in alternation (Lightning sees an external launcher)."""
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(WORLD), "NODE_RANK": "0"}
    os.environ |= env | {"LOCAL_RANK": str(rank)}
    torch.set_num_threads(1)
    stage, cpu = build_stage("esrgan", size), torch.device("cpu")
    rates: dict[str, list[float]] = {name: [] for name in STRATEGIES}
    elements: dict[str, int] = {}
    for _ in range(ROUNDS):
        for name, make in STRATEGIES.items():
            counter = AllReduceCounter()
            module: SRGANModule = stage.module(CONFIGS["fp32"])
            rate = fit_rate(
                module,
                stage,
                CONFIGS["fp32"],
                cpu,
                PLANS[size],
                callbacks=(counter,),
                strategy=make(),
                devices=WORLD,
                use_distributed_sampler=False,
            )
            rates[name].append(rate)
            elements[name] = sum(n for _, n in counter.batches[-1])  # a steady-state batch
    if rank == 0:
        Path(out).write_text(json.dumps({"it_s": {k: max(v) for k, v in rates.items()}, "elements": elements}))
    torch.distributed.destroy_process_group()


def measure(size: str = "tiny") -> dict[str, Any]:
    """Rank 0's batches/s (best of `ROUNDS`) and the elements all-reduced a batch, per strategy."""
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "ddp.json")
        mp.spawn(_worker, args=(size, _free_port(), out), nprocs=WORLD, join=True)
        return json.loads(Path(out).read_text())


def run(size: str = "tiny") -> list[dict]:
    """The `python -m benchmarks` row: ours = a DDP per player, baseline = one around the module."""
    figures = measure(size)
    ours, baseline = STRATEGIES
    it_s, elements = figures["it_s"], figures["elements"]
    return [
        {
            "name": f"ESRGAN step under DDP, 2 CPU ranks ({size})",
            "device": "cpu",
            "ours_ms": 1e3 / it_s[ours],
            "baseline_ms": 1e3 / it_s[baseline],
            "baseline": f"{baseline}, find_unused_parameters=True",
            "note": f"{ours}; gradient elements all-reduced a batch: {elements[ours]:,} vs {elements[baseline]:,}",
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_ddp", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(PLANS), default="tiny")
    args = parser.parse_args()
    for row in run(args.size):
        ratio = row["baseline_ms"] / row["ours_ms"]
        times = f"{row['ours_ms']:.2f} ms vs {row['baseline_ms']:.2f} ms a batch ({ratio:.3f}x)"
        print(f"{row['name']}: {times}; {row['note']}")


if __name__ == "__main__":
    main()
