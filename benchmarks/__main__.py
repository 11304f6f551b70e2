"""``python -m benchmarks``: run every benchmark and print one table of ratios."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from benchmarks import bench_data, bench_degradation, bench_imresize, bench_train_step


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


if __name__ == "__main__":
    main()
