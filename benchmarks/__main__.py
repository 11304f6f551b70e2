"""``python -m benchmarks``: run every benchmark; one table of speed ratios, one of upscaling memory."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from benchmarks import (
    bench_data,
    bench_ddp,
    bench_degradation,
    bench_exit,
    bench_imresize,
    bench_threads,
    bench_train_step,
    bench_upscale_memory,
)
from benchmarks.timing import cpu_threads, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument(
        "--size",
        default="auto",
        choices=["auto", "tiny", "cpu", "paper"],
        help="training steps: tiny nets; cpu: full nets at batch 1, half patch; paper: batch 16 at 128/96 px "
        "(auto: tiny and cpu on a CPU, paper on a GPU)",
    )
    parser.add_argument(
        "--cpu-threads", type=int, default=1, help="intra-op threads on a CPU (0: torch's default); see bench_threads"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)
    threads_rows = bench_threads.run()  # sets its own thread counts, next to busy processes
    with cpu_threads(device, args.cpu_threads or None):
        rows = [
            *bench_train_step.run(args.device, args.size),
            *threads_rows,
            *bench_imresize.run(args.device),
            *bench_data.run(),
            *bench_degradation.run(args.device, "auto" if args.size == "cpu" else args.size),
            *bench_ddp.run(),
            *bench_exit.run(),
        ]
    threads = f", {args.cpu_threads} thread(s) but the threads row" if device.type == "cpu" and args.cpu_threads else ""
    table = Table(title=f"sr-gan benchmarks on {device}{threads} (ratio = baseline time / ours; > 1: we are faster)")
    for column in ("benchmark", "device", "ours", "baseline", "ratio", "note"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["name"],
            r["device"],
            f"{r['ours_ms']:.2f} ms",
            f"{r['baseline_ms']:.2f} ms ({r['baseline']})",
            f"{r['baseline_ms'] / r['ours_ms']:.2f}x",
            r.get("note", ""),
        )
    Console(width=200).print(table)
    memory = Table(
        title="upscale peak memory (RSS growth after loading the model; tiny RRDBNet, "
        f"tile {bench_upscale_memory.TILE}, overlap {bench_upscale_memory.OVERLAP})"
    )
    for column in ("image", "output (8-bit RGB)", "peak RSS growth", "growth / output", "time"):
        memory.add_column(column)
    for r in bench_upscale_memory.run(args.device):
        memory.add_row(
            r["name"],
            f"{r['output_mb']:.0f} MiB",
            f"{r['growth_mb']:.0f} MiB",
            f"{r['per_output']:.2f}x",
            f"{r['seconds']:.1f} s",
        )
    Console().print(memory)


if __name__ == "__main__":
    main()
