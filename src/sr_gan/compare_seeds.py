"""The seeds of a comparison pooled: one row per variant (runs that differ only by their seed).

Two ESRGAN variants often differ by less than the spread between seeds, so a sweep such as
``-m loss=esrgan,srgan_preact seed=1,2,3`` is read per variant: the keys that tell the variants
apart, n (the variant's done runs) and the mean and sample standard deviation (n - 1) of the
per-run table's headline numbers over them. Runs that have not ended well (running, crashed,
failed, pre-empted, interrupted) stopped short of their budget, and done runs that never validated
(`+trainer.limit_val_batches=0`, no validation set) have no numbers: both are left out of n and the
means and counted in `left out`. Without repeated seeds there is no such table.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sr_gan.evaluate_report import Column, write_reports

STEM = "variants"  # variants.md, variants.csv, variants.json beside table.*
SEED_KEYS = ("seed", "data.seed")  # the run's seed, and the patch stream's where it is set apart
# per-run table key → (title, decimals): PSNR to 3 decimals, as seeds differ by hundredths of a dB
METRICS = {
    f"{checkpoint}_{name}": (f"{checkpoint} {name.upper()}", decimals)
    for checkpoint in ("best", "last")
    for name, decimals in (("psnr", 3), ("ssim", 4), ("lpips", 4))
}
CAPTION = (
    "per variant: mean and sample standard deviation (n - 1) of the per-run numbers over its n done "
    "runs (seeds); runs not done or without validation are left out and counted; runs: the per-run table's rows"
)


def variant_rows(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per variant of the per-run `rows` (in their order), where `keys` (the differing
    keys) hold a seed key and some variant has more than one run; else none."""
    if not set(SEED_KEYS) & set(keys):
        return []
    kept = [key for key in keys if key not in SEED_KEYS]
    variants: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        variants.setdefault(tuple(row[key] for key in kept), []).append(row)
    if all(len(runs) < 2 for runs in variants.values()):
        return []
    return [_pooled(runs, kept) for runs in variants.values()]


def _pooled(runs: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """A variant's row: its keys, n done with numbers, the others by status, each metric's mean and sd."""
    done = [run for run in runs if run["status"] == "done" and any(run[metric] is not None for metric in METRICS)]
    others = Counter(_why_left_out(run) for run in runs if run not in done)
    row: dict[str, Any] = {key: runs[0][key] for key in keys}
    row |= {"n": len(done), "left_out": ", ".join(f"{count} {status}" for status, count in others.items()) or None}
    for metric in METRICS:
        values = [run[metric] for run in done if run[metric] is not None]
        row[f"{metric}_mean"] = statistics.fmean(values) if values else None
        row[f"{metric}_sd"] = statistics.stdev(values) if len(values) > 1 else None
    return row | {"runs": " ".join(run["run"] for run in runs)}


def _why_left_out(run: dict[str, Any]) -> str:
    """The status without its details (crashed, running, ...), or "without validation"."""
    return "without validation" if run["status"] == "done" else run["status"].split(" (")[0]


def variant_columns(keys: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[Column]:
    """The variant keys, n, left out, mean and sd of each metric (LPIPS where logged), the runs."""
    numbers = []
    for metric, (title, decimals) in METRICS.items():
        if any(row[f"{metric}_mean"] is not None for row in rows) or "lpips" not in metric:
            numbers += [Column(f"{metric}_mean", title, decimals), Column(f"{metric}_sd", "± sd", decimals)]
    shown = [Column(key, key) for key in keys if key not in SEED_KEYS]
    return [*shown, Column("n", "n", 0), Column("left_out", "left out"), *numbers, Column("runs", "runs")]


def write_variants(rows: list[dict[str, Any]], columns: Sequence[Column], out_dir: Path) -> list[Path]:
    """variants.md / .csv / .json of `rows`; without rows, those of an earlier comparison into
    `out_dir` (of other runs: a sweep and then two of its runs share `<sweep>/compare`) are removed."""
    if rows:
        report = {"caption": CAPTION, "rows": rows}
        return write_reports(rows, report, out_dir, columns=columns, caption=CAPTION, stem=STEM)
    for suffix in (".md", ".csv", ".json"):
        (out_dir / f"{STEM}{suffix}").unlink(missing_ok=True)
    return []
