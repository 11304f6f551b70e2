"""``python -m benchmarks``: run every benchmark and print one table of ratios."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from benchmarks import bench_data, bench_degradation, bench_imresize, bench_threads, bench_train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument(
        "--size",
        default="auto",
        choices=["auto", "tiny", "cpu", "paper"],
        help="training steps: tiny nets; cpu: full nets at batch 1, half patch; paper: batch 16 at 128/96 px "
        "(auto: tiny and cpu on a CPU, paper on a GPU)",
    )
    parser.add_argument(
        "--cpu-threads", type=int, default=1, help="intra-op threads of the CPU training-step rows (0: torch's default)"
    )
    args = parser.parse_args()
    rows = [
        *bench_train_step.run(args.device, args.size, threads=args.cpu_threads or None),
        *bench_threads.run(),
        *bench_imresize.run(args.device),
        *bench_data.run(),
        *bench_degradation.run(args.device, "auto" if args.size == "cpu" else args.size),
    ]
    table = Table(title="sr-gan benchmarks (ratio = baseline time / ours; > 1 means we are faster)")
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


if __name__ == "__main__":
    main()
