"""The benchmark table of ``python -m sr_gan.evaluate``: per-image scores → rows → reports.

Rows are the mean of each metric per (dataset, model). They are shown as a rich table and
written to `out_dir` as Markdown (the papers' precision), CSV and strict JSON (with the per-image
scores), optionally with one perception–distortion PNG per dataset and a W&B table.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from sr_gan.atomic import atomic_path
from sr_gan.perception import LPIPS_LABEL, VIF_LABEL, plot_perception_distortion

# metric key → (column title, decimals); the table shows the keys present in the rows, in this order.
COLUMNS = {
    "psnr_y": ("PSNR-Y", 2),
    "ssim_y": ("SSIM-Y", 4),
    "psnr_rgb": ("PSNR-RGB", 2),
    "lpips": ("LPIPS", 4),
    "vif_y": ("VIF-Y", 4),
}

PerImage = dict[str, dict[str, dict[str, dict[str, float]]]]  # dataset → model → image → metric → value


def summarize(results: PerImage) -> list[dict[str, Any]]:
    """One row per (dataset, model): the mean of each metric over the images, and their number."""
    rows = []
    for dataset, per_model in results.items():
        for model, per_image in per_model.items():
            keys = [key for key in COLUMNS if key in next(iter(per_image.values()), {})]
            means = {key: sum(s[key] for s in per_image.values()) / len(per_image) for key in keys}
            rows.append({"dataset": dataset, "model": model, **means, "images": len(per_image)})
    return rows


# --- tables ---------------------------------------------------------------------------------------


def _headers(rows: Sequence[dict[str, Any]]) -> list[str]:
    return ["dataset", "model", *(key for key in COLUMNS if key in rows[0]), "images"]


def _cell(key: str, value: Any) -> str:
    return f"{value:.{COLUMNS[key][1]}f}" if key in COLUMNS else str(value)


def _title(key: str) -> str:
    return COLUMNS[key][0] if key in COLUMNS else key.capitalize()


def to_markdown(rows: Sequence[dict[str, Any]], *, protocol: str) -> str:
    """A Markdown table (the papers' precision: PSNR 2 decimals, SSIM 4) under a protocol line."""
    keys = _headers(rows)
    lines = [f"| {' | '.join(_title(k) for k in keys)} |", f"|{'---|' * len(keys)}"]
    lines += [f"| {' | '.join(_cell(k, row[k]) for k in keys)} |" for row in rows]
    return f"{protocol}\n\n" + "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV with full-precision values."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_headers(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def rich_table(rows: Sequence[dict[str, Any]], *, protocol: str) -> Table:
    """The table for the console, numbers right-aligned, titled by the protocol line."""
    keys = _headers(rows)
    table = Table(title=protocol)
    for key in keys:
        table.add_column(_title(key), justify="right" if key in COLUMNS or key == "images" else "left")
    for row in rows:
        table.add_row(*(_cell(k, row[k]) for k in keys))
    return table


# --- files, plots, W&B ----------------------------------------------------------------------------


def _strict_json(value: Any) -> Any:
    """NaN (VIF of an image under 41 px after the crop) → null, so the file is strict JSON."""
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict_json(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def write_reports(rows: list[dict[str, Any]], report: dict[str, Any], out_dir: Path) -> list[Path]:
    """results.md, results.csv and results.json (rows and per-image scores), each written atomically."""
    texts = {
        "results.md": to_markdown(rows, protocol=report["protocol"]),
        "results.csv": to_csv(rows),
        "results.json": json.dumps(_strict_json(report), indent=2, allow_nan=False) + "\n",
    }
    for name, text in texts.items():
        with atomic_path(out_dir / name) as temporary:
            temporary.write_text(text, encoding="utf-8")
    return [out_dir / name for name in texts]


def plot_datasets(rows: Sequence[dict[str, Any]], *, out_dir: Path, scale: int, baseline: str) -> list[Path]:
    """One perception–distortion PNG per dataset: PSNR-Y against LPIPS (else VIF-Y); the row of
    model `baseline` stands apart from the others."""
    key, label = ("lpips", LPIPS_LABEL) if "lpips" in rows[0] else ("vif_y", VIF_LABEL)
    paths = []
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        points = {r["model"]: (r["model"], r["psnr_y"], r[key]) for r in rows if r["dataset"] == dataset}
        apart = points.pop(baseline)
        path = out_dir / f"perception_distortion_{dataset}.png"
        plot_perception_distortion(
            list(points.values()), baseline=apart, score_label=label, title=f"{dataset} x{scale}", path=path
        )
        paths.append(path)
    return paths


def log_to_wandb(rows: Sequence[dict[str, Any]], plots: Sequence[Path], cfg: DictConfig) -> None:
    """The table (and plots) as one W&B run built from `conf/logger/wandb.yaml` (offline by default)."""
    logger = instantiate(cfg.logger.wandb)
    keys = _headers(rows)
    try:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        logger.log_table("eval/results", columns=keys, data=[[row[k] for k in keys] for row in rows])
        for path in plots:
            logger.log_image(f"eval/{path.stem}", images=[str(path)])
    finally:
        import wandb

        wandb.finish()
