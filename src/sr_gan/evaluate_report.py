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
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from matplotlib.figure import Figure  # no pyplot: no global backend, works without a display
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from sr_gan.atomic import atomic_path
from sr_gan.errors import UserError
from sr_gan.perception import LPIPS_LABEL, VIF_LABEL

# metric key → (column title, decimals); the table shows the keys present in the rows, in this order.
COLUMNS = {
    "psnr_y": ("PSNR-Y", 2),
    "ssim_y": ("SSIM-Y", 4),
    "psnr_rgb": ("PSNR-RGB", 2),
    "lpips": ("LPIPS", 4),
    "vif_y": ("VIF-Y", 4),
}
MISSING = "–"  # a cell without a value (Markdown, console); empty in CSV, null in JSON

PerImage = dict[str, dict[str, dict[str, dict[str, float]]]]  # dataset → model → image → metric → value


@dataclass(frozen=True)
class Column:
    """A table column: the row key, its title, and for numbers the decimals shown (right-aligned)."""

    key: str
    title: str
    decimals: int | None = None  # None: text


def summarize(results: PerImage) -> list[dict[str, Any]]:
    """One row per (dataset, model): the mean of each metric over the images that have a value
    (VIF has none under 41 px), and the number of images; where some images lack a metric,
    "scored" gives how many have it (metric → count)."""
    rows = []
    for dataset, per_model in results.items():
        for model, per_image in per_model.items():
            keys = [key for key in COLUMNS if key in next(iter(per_image.values()), {})]
            values = {key: [s[key] for s in per_image.values() if not math.isnan(s[key])] for key in keys}
            means = {key: sum(v) / len(v) if v else math.nan for key, v in values.items()}
            scored = {key: len(v) for key, v in values.items() if len(v) < len(per_image)}
            rows.append(
                {"dataset": dataset, "model": model, **means, "images": len(per_image)}
                | ({"scored": scored} if scored else {})
            )
    return rows


def notes(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> list[str]:
    """A line per metric mean of a dataset taken over only some of its images (see `summarize`),
    e.g. `VIF-Y of Set5 is the mean over 3 of 5 images (the others have none)`, naming the models
    unless it holds for every model of the dataset."""
    titles = {c.key: c.title for c in columns}
    models: dict[tuple[str, str, int, int], list[str]] = {}  # (title, dataset, count, images) → models
    for row in rows:
        for key, count in row.get("scored", {}).items():
            if key in titles:
                models.setdefault((titles[key], row["dataset"], count, row["images"]), []).append(row["model"])
    lines = []
    for (title, dataset, count, images), named in models.items():
        which = "" if len(named) == sum(r["dataset"] == dataset for r in rows) else f" ({', '.join(named)})"
        mean = f"is the mean over {count} of {images} images (the others have none)" if count else "has no value"
        lines.append(f"{title} of {dataset}{which} {mean}")
    return lines


def benchmark_columns(rows: Sequence[dict[str, Any]]) -> list[Column]:
    """The columns of the benchmark table: dataset, model, the metrics present, the image count."""
    metrics = [Column(key, title, decimals) for key, (title, decimals) in COLUMNS.items() if key in rows[0]]
    return [Column("dataset", "Dataset"), Column("model", "Model"), *metrics, Column("images", "Images", 0)]


# --- tables ---------------------------------------------------------------------------------------


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _cell(column: Column, value: Any) -> str:
    if value is None or _is_nan(value):
        return MISSING
    return f"{value:.{column.decimals}f}" if column.decimals is not None else str(value)


def to_markdown(rows: Sequence[dict[str, Any]], columns: Sequence[Column], *, caption: str) -> str:
    """A Markdown table under a caption line (the papers' precision: PSNR 2 decimals, SSIM 4),
    with the `notes` as a list below it."""
    lines = [f"| {' | '.join(c.title for c in columns)} |", f"|{'---|' * len(columns)}"]
    lines += [f"| {' | '.join(_cell(c, row.get(c.key)) for c in columns)} |" for row in rows]
    below = "".join(f"\n- {note}" for note in notes(rows, columns))
    return f"{caption}\n\n" + "\n".join(lines) + "\n" + (f"{below}\n" if below else "")


def to_csv(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """CSV with full-precision values (a missing value is an empty field; an infinite PSNR is
    `inf`, which float() and pandas read back)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[c.key for c in columns], lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows({key: None if _is_nan(value) else value for key, value in row.items()} for row in rows)
    return buffer.getvalue()


def rich_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column], *, caption: str) -> Table:
    """The table for the console, numbers right-aligned, titled by the caption line, with the
    `notes` below it."""
    table = Table(title=caption, caption="\n".join(notes(rows, columns)) or None)
    for column in columns:
        table.add_column(column.title, justify="left" if column.decimals is None else "right")
    for row in rows:
        table.add_row(*(_cell(c, row.get(c.key)) for c in columns))
    return table


# --- files, plots, W&B ----------------------------------------------------------------------------


def _strict_json(value: Any) -> Any:
    """NaN (VIF of an image under 41 px after the crop) and ±inf (the PSNR of an SR image equal to
    its HR image) → null, so the file is strict JSON."""
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict_json(item) for item in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_reports(
    rows: list[dict[str, Any]],
    report: dict[str, Any],
    out_dir: Path,
    *,
    columns: Sequence[Column],
    caption: str,
    stem: str = "results",
) -> list[Path]:
    """<stem>.md, <stem>.csv and <stem>.json (`report`: the rows and any detail), written as a set:
    all three are written in full beside their targets before the first replaces its old file, so
    a failed write (a full disk) leaves the previous three, never a mix of two runs."""
    texts = {
        f"{stem}.md": to_markdown(rows, columns, caption=caption),
        f"{stem}.csv": to_csv(rows, columns),
        f"{stem}.json": json.dumps(_strict_json(report), indent=2, allow_nan=False) + "\n",
    }
    for folder in (out_dir / name for name in texts if (out_dir / name).is_dir()):  # its rename would fail last
        raise UserError(f"{folder} is a folder, where the report's file goes: move it away or choose another out_dir")
    with ExitStack() as renames:  # each atomic_path renames its file on exit, once all are written
        for name, text in texts.items():
            renames.enter_context(atomic_path(out_dir / name)).write_text(text, encoding="utf-8")
    return [out_dir / name for name in texts]


def plot_perception_distortion(
    points: Sequence[tuple[str, float, float]],
    *,
    baseline: tuple[str, float, float] | None = None,
    score_label: str,
    title: str,
    path: Path,
) -> None:
    """Save a PNG of PSNR (x) against a perceptual score (y), one labelled point per model.

    `points` are (model name, PSNR in dB, score) in sweep order, joined by a line (e.g. the
    network-interpolation alphas of ESRGAN Sec. 3.4); `baseline` (bicubic) stands apart in grey.
    """
    fig = Figure(figsize=(6, 4.5), dpi=120)
    ax = fig.add_subplot()
    ax.plot([p[1] for p in points], [p[2] for p in points], "-o", color="tab:blue")
    if baseline is not None:
        ax.plot(baseline[1], baseline[2], "s", color="grey")
    for name, x, y in [*points, *([baseline] if baseline else [])]:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("PSNR on Y (dB, higher = less distortion)")
    ax.set_ylabel(score_label, fontsize=8)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format="png")


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


def log_to_wandb(
    rows: Sequence[dict[str, Any]],
    images: Sequence[Path],
    cfg: DictConfig,
    *,
    columns: Sequence[Column],
    key: str,
    more_tables: dict[str, tuple[Sequence[dict[str, Any]], Sequence[Column]]] | None = None,
    **run: Any,
) -> None:
    """The table as `key`, each of `more_tables` (key → rows, columns) as its key, and each image as
    `<key's prefix>/<file stem>`, in one W&B run built from `conf/logger/wandb.yaml` (offline by
    default); `run` overrides its settings (group, ...)."""
    logger = instantiate(cfg.logger.wandb, **run)
    prefix = key.split("/")[0]
    try:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        for name, (table, shown) in {key: (rows, columns), **(more_tables or {})}.items():
            logger.log_table(
                name, columns=[c.key for c in shown], data=[[row.get(c.key) for c in shown] for row in table]
            )
        for path in images:
            logger.log_image(f"{prefix}/{path.stem}", images=[str(path)])
    finally:
        import wandb

        wandb.finish()
