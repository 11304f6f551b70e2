"""``python -m sr_gan.compare``: training runs side by side, as a table, curves and crops.

    python -m sr_gan.compare logs/train/multiruns/<time>           # every run of a sweep
    python -m sr_gan.compare logs/train/runs/<a> logs/train/runs/<b>   # chosen runs
    python -m sr_gan.compare 'logs/train/multiruns/*'  pick=best  crop=120,40,64  logger=wandb

Arguments: run folders, folders holding runs (a sweep), or quoted glob patterns; then Hydra
overrides (key=value, see conf/compare.yaml):
  out_dir=DIR      where to write (default: <the runs' common folder>/compare)
  pick=auto|best|last   the checkpoint whose numbers and samples stand for a run: auto takes
                   last.ckpt for runs with a discriminator (a GAN stage: its PSNR-best checkpoint
                   is usually its blurriest) and best.ckpt (highest val/psnr) otherwise
  crop=auto|x,y,size    the validation crop shown across runs (auto: where bicubic and HR differ
                   most, crop_size pixels)
  plane=true|false  score the saved samples for the perception-distortion plane (lpips=auto|true|false)
  logger=wandb  stale_s=900 (a run short of its budget, silent this long, is "crashed")

Works offline from what each run folder holds (config.yaml, .hydra/, csv/metrics.csv, samples/):
no W&B account, no checkpoint loading. Writes into out_dir:
  table.md / table.csv / table.json  one row per run: the config keys that differ between the
        runs (Hydra group choices such as `loss`, then other keys), status (done, preempted,
        interrupted, failed as run.json says; else running or crashed), best and last val/psnr
        and val/ssim with the batch they come from, the bicubic baseline, batches done, wall time
        and batches/s (run.json, else file times), LPIPS if logged, the peak GPU memory of runs
        on a GPU (memory/gpu_peak_gib)
  variants.md / variants.csv / variants.json  when some runs differ only by their seed (seed,
        data.seed): one row per variant, its n done runs and the mean and sample standard deviation
        of the best and last numbers; runs not done are left out and counted (sr_gan.compare_seeds)
  curves.png   val/psnr and the smoothed G / D losses against batches, one line per run
  crops.png    the same validation crops in HR, bicubic and every run at its picked checkpoint
  perception_distortion_val.png   PSNR against LPIPS (or VIF-P without the AlexNet weights),
        scored on the saved validation samples
Runs of different scales or validation sets are refused. logger=wandb also logs all of it as one
W&B run (job_type=compare, offline unless WANDB_MODE=online) in the runs' group.
"""

from __future__ import annotations

import copy
import glob
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, open_dict
from rich.console import Console
from torch import Tensor

from sr_gan import compare_seeds as seeds
from sr_gan import evaluate_report as reports
from sr_gan.atomic import check_writable, link_outside
from sr_gan.cli import hydra_command
from sr_gan.compare_figures import (
    Strip,
    check_strips_fit,
    crop_boxes,
    crops_figure,
    curves_figure,
    read_strips,
    save_figure,
)
from sr_gan.config import register_resolvers, resolve_device
from sr_gan.errors import UserError, exit_on_user_error
from sr_gan.evaluate import BICUBIC, Scorer, as_list, lpips_metric
from sr_gan.evaluate_report import Column
from sr_gan.run_folders import Run, check_comparable, differing_keys, find_runs, read_runs, run_values, short_labels
from sr_gan.schema import COMPARE, validate

register_resolvers()  # ${wandb_offline:} of conf/logger/wandb.yaml
PICKS = ("auto", "best", "last")
PLANE_SET = "val"  # the dataset name of the perception-distortion rows: perception_distortion_val.png
# The console shows these numbers (the files all of them): the papers' PSNR / SSIM pair, LPIPS where
# logged, and progress, in a table that fits a terminal (the batch each value comes from is in the files).
CONSOLE = (
    "result", "best_psnr", "best_ssim", "best_lpips", "last_psnr", "last_ssim", "last_lpips",
    "bicubic_psnr", "bicubic_ssim", "batches", "wall_s", "batches_per_s", "gpu_peak_gib",
)  # fmt: skip


# --- the table ------------------------------------------------------------------------------------


def picked(run: Run, pick: str) -> str:
    """'best' or 'last': the checkpoint that stands for `run` (see `pick` in the help above)."""
    return pick if pick != "auto" else "last" if run.has_discriminator else "best"


def run_row(run: Run, values: dict[str, str | None], *, pick: str, stale_s: float) -> dict[str, Any]:
    """One table row: what the run is, how far it got, its best and last validation."""
    val = run.val_rows()
    best = max(val, key=lambda r: r["val/psnr"], default={})  # the first maximum, as ModelCheckpoint keeps
    last = val[-1] if val else {}
    wall = run.wall_s
    row: dict[str, Any] = {"run": run.name, "status": run.status(stale_s=stale_s), **values}
    row["result"] = picked(run, pick)
    for name, chosen in (("best", best), ("last", last)):
        row |= {f"{name}_psnr": chosen.get("val/psnr"), f"{name}_ssim": chosen.get("val/ssim")}
        row |= {f"{name}_lpips": chosen.get("val/lpips"), f"{name}_batch": chosen.get("batch")}
    row |= {"bicubic_psnr": last.get("val/psnr_bicubic"), "bicubic_ssim": last.get("val/ssim_bicubic")}
    row |= {"batches": run.batches, "budget": run.budget, "wall_s": wall}
    row["batches_per_s"] = run.batches / wall if wall else None
    row["gpu_peak_gib"] = max(
        (r["memory/gpu_peak_gib"] for r in run.metrics if "memory/gpu_peak_gib" in r), default=None
    )
    return row | {"path": str(run.path)}


def table_columns(keys: Sequence[str], rows: Sequence[dict[str, Any]]) -> list[Column]:
    """run, status, the differing keys, then the numbers (LPIPS only where some run logged it)."""
    numbers = [Column("result", "Result")]
    for name in ("best", "last"):
        numbers += [Column(f"{name}_psnr", f"{name} PSNR", 2), Column(f"{name}_ssim", f"{name} SSIM", 4)]
        if any(row[f"{name}_lpips"] is not None for row in rows):
            numbers.append(Column(f"{name}_lpips", f"{name} LPIPS", 4))
        numbers.append(Column(f"{name}_batch", f"{name} at batch", 0))
    numbers += [Column("bicubic_psnr", "bicubic PSNR", 2), Column("bicubic_ssim", "bicubic SSIM", 4)]
    numbers += [Column("batches", "batches", 0), Column("wall_s", "wall (s)", 0), Column("batches_per_s", "batch/s", 2)]
    if any(row.get("gpu_peak_gib") is not None for row in rows):  # some run trained on a GPU
        numbers.append(Column("gpu_peak_gib", "GPU peak (GiB)", 1))
    return [Column("run", "Run"), Column("status", "Status"), *(Column(k, k) for k in keys), *numbers]


def caption(scale: int | None, pick: str) -> str:
    return (
        f"x{scale} val/psnr, val/ssim as logged in training (Y channel, BT.601, {scale}-pixel border); "
        "best = best.ckpt (highest val/psnr), last = last.ckpt; Result = the run's checkpoint "
        f"(pick={pick}{': last with a discriminator, best without' if pick == 'auto' else ''}); "
        "wall time and batch/s: every training segment of the run (run.json; file times while it runs)"
    )


# --- figures --------------------------------------------------------------------------------------


def run_labels(runs: Sequence[Run], rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, str]:
    """`<run>: loss=ragan num_features=64` (keys the run lacks left out), plus the status of a
    run that is not done: the legend of curves.png and the titles of crops.png."""
    short = short_labels(keys)
    labels = {}
    for run, row in zip(runs, rows):
        words = [f"{run.name}:", *(f"{short[k]}={row[k]}" for k in keys if row[k] is not None)]
        words += [] if row["status"] == "done" else [f"({row['status'].split(' (')[0]})"]
        labels[run.name] = " ".join(words).removesuffix(":")
    return labels


def plane_rows(strips: dict[str, dict[str, Strip]], scorer: Scorer) -> list[dict[str, Any]]:
    """Perception–distortion rows (`evaluate_report.summarize` form) of every run and bicubic,
    scored on the validation images that every run saved."""
    common = sorted(set.intersection(*(set(per_image) for per_image in strips.values())))
    if not common:
        return []

    def score(sr: Tensor, hr: Tensor) -> dict[str, float]:
        return scorer(sr[None].double() / 255, hr[None].double() / 255)  # (1, 3, H, W) in [0, 1]

    first = next(iter(strips.values()))
    results = {BICUBIC: {name: score(first[name].bicubic, first[name].hr) for name in common}}
    results |= {
        run: {name: score(per_image[name].sr, per_image[name].hr) for name in common}
        for run, per_image in strips.items()
    }
    return reports.summarize({PLANE_SET: results})


def draw(
    runs: Sequence[Run],
    rows: Sequence[dict[str, Any]],
    labels: dict[str, str],
    cfg: DictConfig,
    *,
    out_dir: Path,
    scale: int,
    console: Console,
) -> tuple[list[Path], dict[str, tuple[int, int, int]], list[dict[str, Any]]]:
    """curves.png, crops.png and the perception-distortion plane (from the samples of each
    run's picked checkpoint); returns the PNGs written, the crop boxes and the sample scores."""
    # the samples are read and the crop checked against them before any figure is written: a
    # damaged sample or a crop that does not fit leaves an earlier comparison's files as they were
    folders = {r.name: r.samples.get(row[f"{row['result']}_batch"]) for r, row in zip(runs, rows)}
    check_strips_fit(list(folders.values()))  # from their headers: many small PNG bombs were gigabytes
    strips = {name: read_strips(folder) for name, folder in folders.items()}
    strips = {name: per_image for name, per_image in strips.items() if per_image}
    crops = crop_boxes(strips, _crop_arg(cfg.crop), cfg.crop_size) if strips else {}
    figures = [save_figure(curves_figure(runs, labels, smoothing=cfg.smoothing), out_dir / "curves.png")]
    if missing := [run.name for run in runs if run.name not in strips]:
        console.print(f"note: no validation samples at the picked checkpoint of {', '.join(missing)}")
    scores: list[dict[str, Any]] = []
    if strips:
        figures.append(save_figure(crops_figure(strips, crops, labels), out_dir / "crops.png"))
    if strips and cfg.plane:
        without = "perception-distortion plane on VIF-P, not LPIPS"
        lpips = lpips_metric(cfg.lpips, resolve_device(cfg.device), console, without=without)
        scores = plane_rows(strips, Scorer(scale=scale, lpips=lpips, vif=lpips is None))
        figures += reports.plot_datasets(scores, out_dir=out_dir, scale=scale, baseline=BICUBIC) if scores else []
        if not scores:
            console.print("note: no validation image has a sample of every run: no perception-distortion plane")
    for figure in (out_dir / "crops.png", out_dir / f"perception_distortion_{PLANE_SET}.png"):
        if figure not in figures:  # an earlier comparison's, in this out_dir: not of these runs
            figure.unlink(missing_ok=True)
    return figures, crops, scores


def _crop_arg(value: Any) -> tuple[int, int, int] | None:
    if value in (None, "auto"):
        return None
    parts = list(value) if isinstance(value, ListConfig | list | tuple) else str(value).split(",")
    try:
        x, y, size = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"crop={value}: use crop=auto or crop=x,y,size in HR pixels, e.g. crop=120,40,64") from None
    return x, y, size


# --- command line ---------------------------------------------------------------------------------


def _default_out_dir(runs_folder: Path) -> Path:
    """`runs_folder`/compare, refused in one line where it is a link to a folder outside `runs_folder`
    (a shared sweep's, pointing at one of yours): its tables and figures would be written, and stale
    ones removed, there."""
    out_dir = runs_folder / "compare"
    if (target := link_outside(out_dir, runs_folder)) is not None:
        raise UserError(
            f"out_dir: the default {out_dir} is a link to {target}, outside the runs' folder: pass "
            f"out_dir=<a folder of yours> (out_dir={target} to write there)"
        )
    return out_dir


def wandb_group(runs: Sequence[Run], paths: Sequence[Path]) -> str:
    """The W&B group of the runs (what they logged under), else their common folder's name."""
    groups = {str((((r.config or {}).get("logger") or {}).get("wandb") or {}).get("group") or "") for r in runs}
    groups |= set() if groups - {""} else {str((r.config or {}).get("group") or "") for r in runs}
    groups.discard("")
    return groups.pop() if len(groups) == 1 else Path(os.path.commonpath([p.absolute() for p in paths])).name


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    """Compare as configured (see conf/compare.yaml); returns the table rows."""
    console = Console()
    if not console.is_terminal:  # a log file or pipe: keep the table's rows whole rather than 80 columns wide
        console = Console(width=max(console.width, 200))
    validate(cfg, COMPARE)  # bad values fail now, before anything is written (pick and crop too)
    _crop_arg(cfg.crop)
    if cfg.pick not in PICKS:
        raise UserError(f"pick={cfg.pick}: use auto, best or last")
    paths = find_runs(as_list(cfg.runs))
    runs = read_runs(paths)
    check_comparable(runs)
    out_dir = (
        Path(cfg.out_dir) if cfg.out_dir else _default_out_dir(Path(os.path.commonpath([p.absolute() for p in paths])))
    )
    check_writable(out_dir)
    scale = next((r.config["data"]["scale"] for r in runs if r.config is not None), None)

    groups, leaves = differing_keys(runs)
    values = {run.name: run_values(run, groups, leaves) for run in runs}
    rows = [run_row(run, values[run.name], pick=cfg.pick, stale_s=cfg.stale_s) for run in runs]
    columns, text = table_columns([*groups, *leaves], rows), caption(scale, cfg.pick)
    shown = [c for c in columns if c.key in CONSOLE or c.key in ("run", "status", *groups, *leaves)]
    console.print(reports.rich_table(rows, shown, caption=text))  # before any file: nothing is lost on a write error
    pooled = seeds.variant_rows(rows, [*groups, *leaves])
    pooled_columns = seeds.variant_columns([*groups, *leaves], pooled)
    if pooled:
        console.print(reports.rich_table(pooled, pooled_columns, caption=seeds.CAPTION))

    labels = run_labels(runs, rows, [*groups, *leaves])
    figures, crops, scores = draw(runs, rows, labels, cfg, out_dir=out_dir, scale=scale or 4, console=console)
    report = {
        "caption": text,
        "pick": cfg.pick,
        "differing": {"groups": groups, "keys": leaves},
        "labels": labels,
        "rows": rows,
        "crops": {name: dict(zip("x y size".split(), box)) for name, box in crops.items()},
        "samples_scores": scores,
    }
    written = reports.write_reports(rows, report, out_dir, columns=columns, caption=text, stem="table")
    written += seeds.write_variants(pooled, pooled_columns, out_dir)
    console.print("written: " + ", ".join(str(path) for path in written + figures))
    if (cfg.get("logger") or {}).get("wandb") is not None:  # logger=wandb
        group = cfg.group or wandb_group(runs, paths)
        wandb = {"job_type": "compare", "group": group, "name": f"{cfg.task_name}-{group}", "save_dir": str(out_dir)}
        ran = copy.deepcopy(cfg)  # the config as it ran, for the W&B run's config
        with open_dict(ran):
            ran.merge_with({"group": group, "out_dir": str(out_dir), "logger": {"wandb": wandb}})
        more = {"compare/variants": (pooled, pooled_columns)} if pooled else {}
        reports.log_to_wandb(rows, figures, ran, columns=columns, key="compare/table", more_tables=more)
    return rows


_FLAGS_WITH_VALUE = {"-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name", "-cd"}
_FLAGS_WITH_VALUE |= {"--config-dir", "--experimental-rerun"}


def hydra_argv(argv: Sequence[str]) -> list[str]:
    """Hydra takes key=value overrides only: bare paths become `runs=[...]` (quoted, so any path
    parses) and `crop=x,y,size` becomes `crop=[x,y,size]` (Hydra reads a bare a,b,c as a sweep). An
    argument with a ``=`` that names existing files (``logs/lr=1e-4/run``, a glob) is a path."""
    paths, rest, after_flag = [], [], False
    for arg in argv:
        if after_flag or arg.startswith("-") or ("=" in arg and not glob.glob(arg)):
            key, _, value = arg.partition("=")
            rest.append(f"crop=[{value}]" if key == "crop" and "," in value and "[" not in value else arg)
            after_flag = arg in _FLAGS_WITH_VALUE
        else:
            paths.append(arg)
    if paths:
        quoted = ",".join("'" + p.replace("\\", "\\\\").replace("'", "\\'") + "'" for p in paths)
        rest.append(f"runs=[{quoted}]")
    return rest


@hydra_command("compare")
def _main(cfg: DictConfig) -> None:
    exit_on_user_error(run)(cfg)


def main() -> None:
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        return
    sys.argv[1:] = hydra_argv(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
