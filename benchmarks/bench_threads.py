"""CPU threads under load: the tiny ESRGAN step with torch's default intra-op threads against the
count `sr_gan.threads` gives a training process, while N busy processes share the cores.

The busy processes stand in for N data workers (or other users' jobs): `cpu_threads_for` is asked
for the count of a process with N data workers. Both settings alternate, best of `ROUNDS` (one: the
gap is several-fold).

    python -m benchmarks.bench_threads [--busy N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from benchmarks.stages import CONFIGS, build_stage
from benchmarks.step_timing import Plan, plain_rate
from sr_gan.threads import cpu_threads_for, usable_cores

PLAN = Plan(warmup=1, max_batches=3, max_seconds=2.0)
ROUNDS = 1


@contextmanager
def busy_processes(count: int) -> Iterator[list[subprocess.Popen]]:
    """`count` Python processes spinning on one core each, ended (by their own pid) on exit."""
    processes = [subprocess.Popen([sys.executable, "-c", "while True:\n    pass"]) for _ in range(count)]
    try:
        yield processes
    finally:
        for process in processes:
            process.kill()
        for process in processes:
            process.wait()


def measure(busy: int, rounds: int = ROUNDS) -> dict:
    """Batches/s of the tiny ESRGAN step with the default and the configured thread count."""
    stage = build_stage("esrgan", "tiny")
    default = torch.get_num_threads()
    configured = cpu_threads_for(num_workers=busy)
    rates: dict[str, list[float]] = {"default": [], "configured": []}
    try:
        with busy_processes(busy):
            for _ in range(rounds):
                for label, threads in (("default", default), ("configured", configured)):
                    torch.set_num_threads(threads)
                    rates[label].append(plain_rate(stage, CONFIGS["fp32"], torch.device("cpu"), PLAN))
    finally:
        torch.set_num_threads(default)
    return {
        "busy": busy,
        "cores": usable_cores(),
        "default_threads": default,
        "configured_threads": configured,
        "default_it_s": max(rates["default"]),
        "configured_it_s": max(rates["configured"]),
        "rounds": rates,
    }


def run(busy: int | None = None) -> list[dict]:
    """The `python -m benchmarks` row: ours = the configured count, baseline = torch's default."""
    figures = measure(usable_cores() if busy is None else busy)
    return [
        {
            "name": f"tiny ESRGAN step, {figures['busy']} busy processes on {figures['cores']} cores",
            "device": "cpu",
            "ours_ms": 1e3 / figures["configured_it_s"],
            "baseline_ms": 1e3 / figures["default_it_s"],
            "baseline": f"torch default, {figures['default_threads']} threads",
            "note": f"cpu_threads=auto: {figures['configured_threads']} thread(s); "
            f"{figures['configured_it_s']:.2f} vs {figures['default_it_s']:.2f} it/s",
        }
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_threads", description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=None, help="busy processes (default: one per usable core)")
    args = parser.parse_args()
    for row in run(args.busy):
        print(f"{row['name']}: {row['note']} (ratio {row['baseline_ms'] / row['ours_ms']:.2f}x)")


if __name__ == "__main__":
    main()
