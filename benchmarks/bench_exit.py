"""A tool process's exit: the heap frozen at exit (`sr_gan.cli.freeze_heap_at_exit`) against the
interpreter's own shutdown, which collects the whole heap, torch's and Lightning's, more than once."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

from benchmarks.gpu_check import child_env

# A training run's modules imported; the last line printed is the time the process starts to end.
CHILD = "import time\nimport sr_gan.train\nfrom sr_gan.cli import freeze_heap_at_exit\n{ours}print(time.time())\n"
REPEATS = 3


def exit_ms(ours: bool) -> float:
    """Median milliseconds from a child's last statement to its end, as this process sees it."""
    code = CHILD.format(ours="freeze_heap_at_exit()\n" if ours else "")
    samples = []
    for _ in range(REPEATS):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=child_env(), check=True)
        samples.append((time.time() - float(done.stdout.split()[-1])) * 1000)
    return statistics.median(samples)


def run() -> list[dict]:
    return [
        {
            "name": "a tool's exit, sr_gan.train imported",
            "device": "cpu",
            "ours_ms": exit_ms(ours=True),
            "baseline_ms": exit_ms(ours=False),
            "baseline": "the interpreter's shutdown collection",
            "note": "paid by every process: each job of a sweep, each DDP rank",
        }
    ]


if __name__ == "__main__":
    for row in run():
        print(row)
