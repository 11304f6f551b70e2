"""``python -m benchmarks``: run every benchmark; one table of speed ratios, one of upscaling memory."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from benchmarks import bench_data, bench_degradation, bench_imresize, bench_train_step, bench_upscale_memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument(
        "--size",
        default="auto",
        choices=["auto", "tiny", "paper"],
        help="tiny: CPU-sized nets; paper: RRDBNet 23 blocks at 128 px (GPU)",
    )
    args = parser.parse_args()
    rows = [
        *bench_train_step.run(args.device, args.size),
        *bench_imresize.run(args.device),
        *bench_data.run(),
        *bench_degradation.run(args.device, args.size),
    ]
    table = Table(title="sr-gan benchmarks (ratio = baseline time / ours; > 1 means we are faster)")
    for column in ("benchmark", "device", "ours", "baseline", "ratio"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r["name"],
            r["device"],
            f"{r['ours_ms']:.2f} ms",
            f"{r['baseline_ms']:.2f} ms ({r['baseline']})",
            f"{r['baseline_ms'] / r['ours_ms']:.2f}x",
        )
    Console().print(table)
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
