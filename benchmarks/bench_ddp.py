"""The cost of DDP's ``find_unused_parameters``, which `conf/trainer/ddp.yaml` turns on only for GAN
stages (``${gan:}``): G and D share one module and each backward trains one of them, so DDP must
be told that the other's parameters get no gradient, and then walks the autograd graph after every
forward to find them. A PSNR stage trains G alone and skips that walk.

Two CPU processes (gloo) train the PSNR stage's RRDBNet + L1 under ``DistributedDataParallel``, once
with the flag and once without, alternating, on the same batches: ours = off (the PSNR stage's
setting), baseline = on (what one setting for every stage would cost). The walk is host time, the
same on a GPU node as here; its share of a GPU step is larger where the step is host-bound.

    python -m benchmarks.bench_ddp [--size tiny|cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from benchmarks.stages import CONFIGS, build_stage

WORLD = 2
BATCHES = {"tiny": (3, 20), "cpu": (1, 4)}  # size: (warm-up, timed) batches per setting and round
ROUNDS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, size: str, port: int, out: str) -> None:
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    torch.set_num_threads(1)  # one core per process, as sr_gan.threads gives two DDP ranks on 2 cores
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    stage = build_stage("psnr_rrdb", size)
    batches = stage.batches(4, torch.device("cpu"))
    warmup, timed = BATCHES[size]
    seconds: dict[str, list[float]] = {"off": [], "on": []}
    for _ in range(ROUNDS):
        for label, flag in (("off", False), ("on", True)):
            module = stage.module(CONFIGS["fp32"])
            model = DistributedDataParallel(module.generator, find_unused_parameters=flag)
            optimizer = module.optimizer_g(model.parameters())
            for index in range(warmup + timed):
                if index == warmup:
                    dist.barrier()
                    began = time.perf_counter()
                batch = batches[index % len(batches)]
                loss = module.pixel_loss(model(batch["lr"]), batch["hr"])  # (B, 3, H, W) vs target
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            dist.barrier()
            seconds[label].append((time.perf_counter() - began) / timed)
    if rank == 0:
        Path(out).write_text(json.dumps({k: min(v) for k, v in seconds.items()}))
    dist.destroy_process_group()


def measure(size: str = "tiny") -> dict[str, float]:
    """Seconds per batch with ``find_unused_parameters`` off and on (best of `ROUNDS`)."""
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "seconds.json")
        mp.spawn(_worker, args=(size, _free_port(), out), nprocs=WORLD, join=True)
        return json.loads(Path(out).read_text())


def run(size: str = "tiny") -> list[dict]:
    """The `python -m benchmarks` row: ours = off (PSNR stages), baseline = on (GAN stages need it)."""
    seconds = measure(size)
    return [
        {
            "name": f"PSNR step RRDBNet + L1 under DDP, 2 CPU ranks ({size})",
            "device": "cpu",
            "ours_ms": 1e3 * seconds["off"],
            "baseline_ms": 1e3 * seconds["on"],
            "baseline": "find_unused_parameters=True",
            "note": "trainer=ddp sets it only for GAN stages",
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=list(BATCHES), default="tiny")
    args = parser.parse_args()
    for row in run(args.size):
        ratio = row["baseline_ms"] / row["ours_ms"]
        print(f"{row['name']}: off {row['ours_ms']:.2f} ms, on {row['baseline_ms']:.2f} ms a batch ({ratio:.3f}x)")


if __name__ == "__main__":
    main()
