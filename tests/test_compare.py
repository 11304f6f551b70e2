"""``python -m sr_gan.compare``: run folders → table, curves, crops, perception–distortion, W&B.

Most tests write run folders the way `sr_gan.train` does (config.yaml, .hydra/, csv/metrics.csv,
checkpoints/, samples/val_<batches>/) with known numbers; one real tiny sweep, made once per
session, proves that compare reads what training actually writes.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from skimage import data as skdata
from torchvision.io import read_image, write_png

from sr_gan.compare import _main, hydra_argv, main, run, run_row, table_columns, wandb_group
from sr_gan.compare_figures import Strip, auto_crop, crops_figure, curves_figure, read_strips, smooth
from sr_gan.errors import UserError
from sr_gan.evaluate import run as evaluate
from sr_gan.evaluate_report import to_markdown
from sr_gan.imageio import image_size
from sr_gan.metrics import psnr
from sr_gan.run_folders import differing_keys, find_runs, format_value, read_metrics, read_runs, short_labels
from tests.helpers import LAUGHS, png_bomb, run_module, wandb_records

ROOT = Path(__file__).resolve().parents[1]
SIZE = 48  # HR size of the synthetic validation images (VIF needs 41 px after the border crop)


# --- synthetic run folders ------------------------------------------------------------------------


def _images() -> dict[str, torch.Tensor]:
    """Two HR validation images (3, SIZE, SIZE) uint8."""
    photos = {
        "astronaut": skdata.astronaut()[100 : 100 + SIZE, 180 : 180 + SIZE],
        "coffee": skdata.coffee()[150:198, 200:248],
    }
    return {name: torch.from_numpy(pixels.copy()).permute(2, 0, 1) for name, pixels in photos.items()}


def _blur(hr: torch.Tensor) -> torch.Tensor:
    small = torch.nn.functional.avg_pool2d(hr[None].float(), 4)
    return torch.nn.functional.interpolate(small, scale_factor=4, mode="nearest")[0].round().to(torch.uint8)


def _sr(hr: torch.Tensor, noise: float, seed: int) -> torch.Tensor:
    """A fake SR image: HR plus noise of the given strength, so each run/step has its own PSNR."""
    generator = torch.Generator().manual_seed(seed)
    return (hr.float() + noise * torch.randn(hr.shape, generator=generator)).clamp(0, 255).round().to(torch.uint8)


def write_run(
    folder: Path,
    *,
    loss: str = "l1",
    features: int = 8,
    scale: int = 2,
    val_dir: str = "/data/val",
    gan: bool = False,
    psnrs: tuple[float, ...] = (20.0, 22.0),
    budget: int = 4,
    last_ckpt: bool = True,
    config: bool = True,
    age_s: float = 0,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A run folder as `sr_gan.train` leaves it: validation every 2 batches with the given
    val/psnr values, samples at each validation (SR noise falls as PSNR rises)."""
    (folder / ".hydra").mkdir(parents=True)
    disc = {"_target_": "sr_gan.archs.VGGStyleDiscriminator", "num_features": 8} if gan else None
    generator = {"_target_": "sr_gan.archs.RRDBNet", "num_features": features, "num_blocks": 1, "scale": scale}
    choices = {"experiment": "demo", "hydra": "default", "logger": "csv", "loss": loss, "model": "rrdb"}
    choices |= {"discriminator": "vgg128" if gan else "none", "data": "folder", "hydra/launcher": "basic"}
    resolved = {
        "task_name": "train",
        "group": "demo",
        "seed": 42,
        "optim": {"generator": {"lr": 1e-3, "betas": [0.9, 0.999]}, "scheduler": {"milestones": [100, 150]}},
        "module": {"generator": generator, "scale": scale, "pixel_weight": 1.0},
        "paths": {"output_dir": str(folder), "log_dir": "logs"},
        "data": {"scale": scale, "val_hr_dir": val_dir, "val_lr_dir": None, "patch_size": 32},
        "model": {"generator": generator, "ema_decay": 0.99},
        "discriminator": disc,
        "loss": {"pixel": {"_target_": f"torch.nn.{'L1Loss' if loss == 'l1' else 'MSELoss'}"}, "pixel_weight": 1.0},
        "trainer": {"max_steps": budget, "val_check_interval": 2, "default_root_dir": str(folder)},
        "callbacks": {"last_checkpoint": {"dirpath": f"{folder}/checkpoints", "filename": "last"}},
        "logger": {"csv": {"save_dir": str(folder), "name": "csv"}},
    } | (extra or {})
    hydra = {"hydra": {"runtime": {"choices": choices}}}
    (folder / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    overrides = [f"loss={loss}", f"model.generator.num_features={features}", "trainer.max_steps=4", "logger=csv"]
    overrides += [f"{key}={value}" for key, value in (extra or {}).items()]  # set on the command line
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if not config:  # stopped at its config checks
        return folder
    (folder / "config.yaml").write_text(yaml.safe_dump(resolved))
    (folder / "csv").mkdir()
    rows: list[dict[str, Any]] = []
    for i, value in enumerate(psnrs):
        batch = 2 * (i + 1)
        terms = {"train/l_g_pix": 0.5 / batch} | ({"train/l_g_gan": 0.01, "train/l_d_real": 0.3} if gan else {})
        rows += [{"step": batch - 2, **terms}, {"step": batch - 1, **terms}]
        rows.append({"step": batch - 1, "val/psnr": value, "val/ssim": value / 40, "val/psnr_bicubic": 18.5})
        for name, hr in _images().items():
            strip = torch.cat([_blur(hr), _sr(hr, 60 - 2 * value, batch + features), hr], dim=-1)  # (3, H, 3W)
            (folder / "samples" / f"val_{batch:07d}").mkdir(parents=True, exist_ok=True)
            write_png(strip, str(folder / "samples" / f"val_{batch:07d}" / f"{name}.png"))
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(folder / "csv" / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", *keys])
        writer.writeheader()
        writer.writerows({"epoch": 0, **row} for row in rows)
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "best.ckpt").write_bytes(b"")
    if last_ckpt:
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"")
    if age_s:
        past = time.time() - age_s
        for path in folder.rglob("*"):
            os.utime(path, (past, past))
    return folder


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A 2 x 2 sweep: loss=l1,mse x model.generator.num_features=4,8, jobs 0..3, all done."""
    folder = tmp_path / "multiruns" / "2026-11-26_10-00-00"
    for job, (loss, features) in enumerate([("l1", 4), ("l1", 8), ("mse", 4), ("mse", 8)]):
        write_run(folder / str(job), loss=loss, features=features, psnrs=(20.0 + job, 21.0 + job))
    (folder / "multirun.yaml").write_text("hydra: {}\n")
    return folder


def _cfg(*runs: Path, **overrides: Any) -> DictConfig:
    """conf/compare.yaml for these runs, on the CPU, without the perception-distortion scoring
    (VIF in float64 costs seconds here) unless `plane=True`."""
    cfg = OmegaConf.load(ROOT / "conf" / "compare.yaml")
    cfg.runs = [str(r) for r in runs]
    cfg.device = "cpu"
    cfg.lpips = False
    cfg.plane = False
    del cfg.defaults
    return OmegaConf.merge(cfg, overrides)


# --- the table ------------------------------------------------------------------------------------


def test_sweep_table_shows_only_the_keys_that_differ(sweep: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = run(_cfg(sweep))
    console = capsys.readouterr().out  # the terminal's table: the papers' PSNR / SSIM pairs, not the batches
    lines = console.splitlines()  # 2 caption lines, the top border, the header, a rule, then runs 0 to 3
    header, row = ([cell.strip() for cell in lines[i].split(lines[i][0])[1:-1]] for i in (3, 8))
    assert header[4:9] == ["Result", "best PSNR", "best SSIM", "last PSNR", "last SSIM"]
    assert header[9:11] == ["bicubic PSNR", "bicubic SSIM"]
    assert row[:9] == ["3", "done", "mse", "8", "best", "24.00", "0.6000", "24.00", "0.6000"]
    out = sweep / "compare"
    assert [r["run"] for r in rows] == ["0", "1", "2", "3"]
    with open(out / "table.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    header = list(table[0])
    assert header[:4] == ["run", "status", "loss", "model.generator.num_features"]  # and no constant key
    assert not {"seed", "module.generator.num_features", "paths.output_dir", "trainer.default_root_dir"} & set(header)
    assert [(t["loss"], t["model.generator.num_features"]) for t in table] == [
        ("l1", "4"),
        ("l1", "8"),
        ("mse", "4"),
        ("mse", "8"),
    ]
    assert {t["status"] for t in table} == {"done"}
    first = rows[0]  # val/psnr 20 at batch 2, 21 at batch 4: best = last = batch 4
    assert (first["result"], first["best_psnr"], first["best_batch"], first["last_psnr"]) == ("best", 21.0, 4, 21.0)
    assert (first["bicubic_psnr"], first["batches"], first["budget"]) == (18.5, 4, 4)
    assert first["batches_per_s"] == pytest.approx(4 / first["wall_s"])
    markdown = (out / "table.md").read_text()
    assert "| Run | Status | loss | model.generator.num_features | Result | best PSNR |" in markdown
    assert "| 3 | done | mse | 8 | best | 24.00 | 0.6000 |" in markdown
    report = json.loads((out / "table.json").read_text())
    assert report["differing"] == {"groups": ["loss"], "keys": ["model.generator.num_features"]}
    assert report["labels"]["2"] == "2: loss=mse num_features=4"
    assert {p.name for p in out.iterdir()} == {
        "table.md",
        "table.csv",
        "table.json",
        "curves.png",
        "crops.png",
    }  # the perception-distortion plane (plane=true): see the GAN test


def test_best_is_the_first_of_equal_highest_psnrs_as_best_ckpt_is(tmp_path: Path) -> None:
    """ModelCheckpoint replaces best.ckpt only on a strictly higher val/psnr: of two equal highest values
    the first is best.ckpt, so its batch (and its samples) stand for "best"."""
    folder = write_run(tmp_path / "a", psnrs=(22.0, 24.0, 24.0, 23.0), budget=8)
    row = run_row(read_runs([folder])[0], {}, pick="best", stale_s=900)
    assert (row["best_psnr"], row["best_batch"], row["last_psnr"], row["last_batch"]) == (24.0, 4, 23.0, 8)


def test_an_lpips_column_when_any_run_logged_it() -> None:
    rows = [{"best_lpips": None, "last_lpips": None}, {"best_lpips": 0.21, "last_lpips": None}]
    keys = [column.key for column in table_columns([], rows)]
    assert "best_lpips" in keys and "last_lpips" not in keys


def test_the_peak_gpu_memory_is_a_column_when_a_run_trained_on_a_gpu(tmp_path: Path) -> None:
    """memory/gpu_peak_gib (logged on a GPU on the logging interval, each resumed segment from 0): a
    run's figure is the highest logged; the column shows only when some run has one."""
    gpu, cpu = write_run(tmp_path / "gpu"), write_run(tmp_path / "cpu")
    metrics = gpu / "csv" / "metrics.csv"
    with open(metrics, newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row, peak in zip(rows, ("3.5", "", "", "7.25", "6.0", "")):
        row["memory/gpu_peak_gib"] = peak
    with open(metrics, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = [run_row(run, {}, pick="best", stale_s=900) for run in read_runs([gpu, cpu])]
    assert [row["gpu_peak_gib"] for row in table] == [7.25, None]
    assert "gpu_peak_gib" in [column.key for column in table_columns([], table)]
    assert "gpu_peak_gib" not in [column.key for column in table_columns([], table[1:])]
    header, _, *lines = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in to_markdown(table, table_columns([], table), caption="x").splitlines()[2:]
    ]
    peak = header.index("GPU peak (GiB)")  # in GiB to a tenth: 7.25 shows as 7.2 (even rounding)
    assert [line[peak] for line in lines] == ["7.2", "–"]  # the CPU run: none


def test_smoothing_is_the_debiased_moving_average() -> None:
    """TensorBoard's debiased EMA: a constant stays itself, the second point is (w x1 + x2) / (1 + w)."""
    assert smooth([3.0, 3.0, 3.0], 0.9) == pytest.approx([3.0, 3.0, 3.0])
    assert smooth([1.0, 2.0], 0.6) == pytest.approx([1.0, (0.6 * 1 + 2) / 1.6])
    assert smooth([1.0, 2.0], 0) == [1.0, 2.0]


def test_curves_and_crops_hold_one_line_and_one_tile_per_run(sweep: Path) -> None:
    runs = read_runs(sorted(p for p in sweep.iterdir() if p.is_dir()))
    labels = {r.name: f"run {r.name}" for r in runs}
    curves = curves_figure(runs, labels, smoothing=0.6)
    psnr_axes, loss_axes = curves.axes  # no discriminator: no D panel
    assert len(psnr_axes.lines) == 4 + 1  # a line per run and the bicubic baseline
    assert list(psnr_axes.lines[3].get_ydata()) == [23.0, 24.0]
    assert len(loss_axes.lines) == 4

    strips = {r.name: read_strips(r.samples[4]) for r in runs}
    crops = {"astronaut": (0, 0, 32), "coffee": (16, 8, 32)}
    figure = crops_figure(strips, crops, labels)
    assert len(figure.axes) == 2 * (2 + 4)  # images x (HR, bicubic, 4 runs)
    assert [ax.get_title() for ax in figure.axes[:6]] == ["HR", "bicubic", "run\n0", "run\n1", "run\n2", "run\n3"]
    shown = figure.axes[6 + 3].get_images()[0].get_array()  # coffee, run 1
    expected = strips["1"]["coffee"].sr[:, 8:40, 16:48].permute(1, 2, 0).numpy()
    assert (shown == expected).all()

    run(_cfg(sweep))  # the saved PNG has the figure's size: 6 tiles wide
    png = read_image(str(sweep / "compare" / "crops.png"))
    assert png.shape[-1] == pytest.approx(100 * 1.8 * 6, abs=2)


def test_gan_runs_stand_for_their_last_checkpoint(tmp_path: Path) -> None:
    """pick=auto: a run with a discriminator is its last.ckpt (best PSNR at batch 2, last at 4),
    and its crops and perception-distortion point come from the samples of that step."""
    gan = write_run(tmp_path / "runs" / "gan", loss="ragan", gan=True, psnrs=(25.0, 23.0))
    psnr_run = write_run(tmp_path / "runs" / "psnr", psnrs=(25.0, 23.0))
    rows = run(_cfg(gan, psnr_run, plane=True))
    assert [(r["run"], r["result"], r["best_batch"], r["last_batch"]) for r in rows] == [
        ("gan", "last", 2, 4),
        ("psnr", "best", 2, 4),
    ]
    assert (tmp_path / "runs" / "compare" / "perception_distortion_val.png").is_file()
    report = json.loads((tmp_path / "runs" / "compare" / "table.json").read_text())
    scores = {row["model"]: row["psnr_y"] for row in report["samples_scores"]}

    def sample_psnr(folder: Path, batch: int) -> float:
        strips = read_strips(folder / "samples" / f"val_{batch:07d}")
        values = [psnr(s.sr[None].double() / 255, s.hr[None].double() / 255, crop_border=2) for s in strips.values()]
        return float(torch.cat(values).mean())

    assert scores["gan"] == pytest.approx(sample_psnr(gan, 4))
    assert scores["psnr"] == pytest.approx(sample_psnr(psnr_run, 2))
    assert scores["psnr"] != pytest.approx(sample_psnr(psnr_run, 4))

    rows = run(_cfg(gan, psnr_run, pick="best"))
    assert [r["result"] for r in rows] == ["best", "best"]
    curves = curves_figure(read_runs([gan, psnr_run]), {"gan": "gan", "psnr": "psnr"}, smoothing=0)
    assert [ax.get_title() for ax in curves.axes] == ["val/psnr on Y (dB)", "G loss (smoothed)", "D loss (smoothed)"]


def test_an_ended_run_takes_its_wall_time_from_its_record(tmp_path: Path) -> None:
    """run.json's wall time (every segment of a resumed run) wins over file times, which a relaunch
    rewrites; a run still going (no ended record) is timed by its files."""
    ended = write_run(tmp_path / "runs" / "ended", age_s=5)
    (ended / "run.json").write_text(json.dumps({"status": "done", "wall_s": 1234.5, "batches": 4}))
    going = write_run(tmp_path / "runs" / "going", loss="mse", age_s=5)
    (going / "run.json").write_text(json.dumps({"status": "running", "wall_s": 0.0}))
    ended_run, going_run = read_runs([ended, going])
    assert ended_run.wall_s == 1234.5
    assert going_run.wall_s == pytest.approx(going_run.updated - going_run.started)


def test_an_ended_run_takes_its_batches_from_its_record(tmp_path: Path) -> None:
    """A run stopped between logging intervals (Ctrl-C after batch 3: rows logged at 2) saved its
    last.ckpt after the batch its run.json records: batches done and batches/s say that batch, as the
    run's own closing line did; a run still going has only its metrics rows to go by."""
    ended = write_run(tmp_path / "ended", psnrs=(20.0,), age_s=5)  # rows up to batch 2 of 4
    (ended / "run.json").write_text(json.dumps({"status": "interrupted", "wall_s": 6.0, "batches": 3}))
    going = write_run(tmp_path / "going", psnrs=(20.0,), age_s=5)
    (going / "run.json").write_text(json.dumps({"status": "running", "wall_s": 0.0, "batches": 0}))
    ended_run, going_run = read_runs([ended, going])
    assert (ended_run.batches, going_run.batches) == (3, 2)
    assert run_row(ended_run, {}, pick="auto", stale_s=900)["batches_per_s"] == 0.5


def test_a_run_that_recorded_how_it_ended_is_reported_so(tmp_path: Path) -> None:
    """Runs short of their budget whose files are an hour old: each that recorded how it ended in
    run.json (pre-empted, interrupted, failed) is shown so, not as "crashed" guessed from file times."""
    recorded = {"preempted": None, "interrupted": None, "failed": "CUDA out of memory"}
    for status, error in recorded.items():
        folder = write_run(tmp_path / status, psnrs=(20.0,), age_s=3600)  # 2 of 4 batches
        (folder / "run.json").write_text(json.dumps({"status": status, "error": error, "wall_s": 60.0}))
    runs = read_runs([tmp_path / status for status in recorded])
    assert [r.status(stale_s=900) for r in runs] == ["preempted", "interrupted", "failed (CUDA out of memory)"]


def test_how_a_run_was_started_is_not_a_column(tmp_path: Path) -> None:
    """A demo GAN run (resumable, tested, started from the cached PSNR stage) beside that stage: the
    columns are what they train (loss, discriminator), not ckpt_path / test / demo_psnr_init, nor
    the W&B group (each sweep's own: `compare 'logs/train/multiruns/*'` showed it), nor the recorded
    environment (a run recorded before it had none: eleven columns beside a run that has one)."""
    stage = write_run(
        tmp_path / "stage", extra={"ckpt_path": None, "test": False, "demo_psnr_init": False, "group": "demo"}
    )
    environment = {"commit": "0123abc-dirty", "torch": "2.9.1", "torch_threads": "2"}
    gan = write_run(
        tmp_path / "gan",
        loss="ragan",
        gan=True,
        extra={
            "ckpt_path": "last",
            "test": True,
            "demo_psnr_init": True,
            "group": "demo-2026-11-27_22-57-42",
            "environment": environment,
        },
    )
    groups, keys = differing_keys(read_runs([stage, gan]))
    assert sorted(groups) == ["discriminator", "loss"] and keys == []


def test_crashed_and_running_runs_are_reported(sweep: Path) -> None:
    write_run(sweep / "4", psnrs=(20.0,), last_ckpt=False, age_s=3600)  # stopped at batch 2 of 4, an hour ago
    write_run(sweep / "5", psnrs=(20.0,), last_ckpt=False)  # the same, but written just now
    write_run(sweep / "6", config=False)  # failed its start-up checks
    rows = {r["run"]: r for r in run(_cfg(sweep))}
    assert rows["4"]["status"] == "crashed (2/4 batches, no last.ckpt)"
    assert rows["5"]["status"] == "running (2/4 batches, no last.ckpt)"
    assert rows["6"]["status"] == "crashed (before training: no config.yaml)"
    assert (rows["6"]["loss"], rows["6"]["best_psnr"]) == ("l1", None)
    assert (rows["6"]["wall_s"], rows["6"]["batches_per_s"]) == (None, None)  # was -1.8e9 s: 0 minus its start
    assert rows["0"]["status"] == "done"
    markdown = (sweep / "compare" / "table.md").read_text()
    assert "| 4 | crashed (2/4 batches, no last.ckpt) |" in markdown
    labels = json.loads((sweep / "compare" / "table.json").read_text())["labels"]
    assert (labels["4"], labels["5"], labels["0"]) == (
        "4: loss=l1 num_features=8 (crashed)",
        "5: loss=l1 num_features=8 (running)",
        "0: loss=l1 num_features=4",
    )


@pytest.fixture
def seed_sweep(tmp_path: Path) -> Path:
    """`-m loss=mse,l1 seed=1,2,3` with jobs in Hydra's order (mse first): val/psnr at batches 2 and 4
    (best, last) of mse: (22, 21), (23, 21.5), (24, 22); of l1: (25, 24), (26, 24), and seed 3
    stopped at batch 2 of 4 an hour ago (crashed) with 30 dB."""
    folder = tmp_path / "multiruns" / "2026-11-28_10-00-00"
    psnrs = {("mse", 1): (22.0, 21.0), ("mse", 2): (23.0, 21.5), ("mse", 3): (24.0, 22.0)}
    psnrs |= {("l1", 1): (25.0, 24.0), ("l1", 2): (26.0, 24.0)}
    for job, (loss, seed) in enumerate([("mse", 1), ("l1", 1), ("mse", 2), ("l1", 2), ("mse", 3)]):
        write_run(folder / str(job), loss=loss, psnrs=psnrs[loss, seed], extra={"seed": seed})
    write_run(folder / "5", loss="l1", psnrs=(30.0,), last_ckpt=False, age_s=3600, extra={"seed": 3})
    return folder


def test_runs_that_differ_only_by_their_seed_are_pooled_per_variant(
    seed_sweep: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One row per variant, in the per-run table's order: n done runs, the mean and the sample
    standard deviation (n - 1) of each headline number; the crashed run is left out and counted;
    printed after the per-run table, written as variants.*, and logged to W&B beside compare/table."""
    tables: dict[str, tuple[list[str], list[list[Any]]]] = {}

    class Recorder:
        def log_hyperparams(self, params: dict[str, Any]) -> None: ...

        def log_table(self, key: str, columns: list[str], data: list[list[Any]]) -> None:
            tables[key] = (columns, data)

        def log_image(self, key: str, images: list[str]) -> None: ...

    monkeypatch.setattr("sr_gan.evaluate_report.instantiate", lambda node, **run: Recorder())
    rows = run(_cfg(seed_sweep, logger={"wandb": {"_target_": "unused"}}))
    assert [r["seed"] for r in rows] == ["1", "1", "2", "2", "3", "3"]  # the per-run table as before
    out = seed_sweep / "compare"
    report = json.loads((out / "variants.json").read_text())
    mse, l1 = report["rows"]
    assert (mse["loss"], mse["n"], mse["left_out"], mse["runs"]) == ("mse", 3, None, "0 2 4")
    assert (l1["loss"], l1["n"], l1["left_out"], l1["runs"]) == ("l1", 2, "1 crashed", "1 3 5")
    # by hand: mse best 22, 23, 24 -> 23 +- 1; last 21, 21.5, 22 -> 21.5 +- 0.5 (SSIM = PSNR / 40)
    # l1 best 25, 26 -> 25.5 +- sqrt(0.5); last 24, 24 -> 24 +- 0 (the crashed run's 30 left out)
    expected = {
        "mse": {"best_psnr": (23.0, 1.0), "last_psnr": (21.5, 0.5), "best_ssim": (0.575, 0.025)},
        "l1": {"best_psnr": (25.5, 0.5**0.5), "last_psnr": (24.0, 0.0), "last_ssim": (0.6, 0.0)},
    }
    for row in (mse, l1):
        for metric, (mean, sd) in expected[row["loss"]].items():
            assert (row[f"{metric}_mean"], row[f"{metric}_sd"]) == (pytest.approx(mean), pytest.approx(sd, abs=1e-12))
        assert row["best_lpips_mean"] is None
    assert "seed" not in mse and "data.seed" not in mse
    with open(out / "variants.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0])[:5] == ["loss", "n", "left_out", "best_psnr_mean", "best_psnr_sd"]
    assert "| mse | 3 | – | 23.000 | 1.000 | 0.5750 | 0.0250 | 21.500 | 0.500 |" in (out / "variants.md").read_text()
    console = capsys.readouterr().out
    pooled = next(line for line in console.splitlines() if " l1 " in line and " 1 crashed " in line)
    assert console.index(pooled) > console.index(" crashed (2/4 batches, no last.ckpt) ")  # below the per-run table
    assert "25.500" in pooled and "0.707" in pooled
    columns, data = tables["compare/variants"]
    assert [dict(zip(columns, values))["n"] for values in data] == [3, 2]
    assert [values[:2] for values in tables["compare/table"][1]] == [[r["run"], r["status"]] for r in rows]


def test_a_done_run_without_validation_is_left_out_of_n(seed_sweep: Path) -> None:
    """A run that trained its whole budget but never validated (its metrics.csv has no val/ rows)
    has no numbers: n counts the runs behind the means, and it is counted in `left out`."""
    write_run(seed_sweep / "6", loss="mse", psnrs=(0.0, 0.0), extra={"seed": 4})
    metrics = seed_sweep / "6" / "csv" / "metrics.csv"
    with open(metrics, newline="") as handle:
        kept = [row for row in csv.DictReader(handle) if not row["val/psnr"]]
    with open(metrics, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["epoch", "step", "train/l_g_pix"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
    rows = {r["run"]: r for r in run(_cfg(seed_sweep))}
    assert (rows["6"]["status"], rows["6"]["best_psnr"], rows["6"]["last_psnr"]) == ("done", None, None)
    mse = json.loads((seed_sweep / "compare" / "variants.json").read_text())["rows"][0]
    assert (mse["n"], mse["left_out"], mse["runs"]) == (3, "1 without validation", "0 2 4 6")
    assert mse["best_psnr_mean"] == pytest.approx(23.0)


def test_no_variant_table_without_repeated_seeds(seed_sweep: Path, tmp_path: Path) -> None:
    """Seeds that differ with no variant run twice, or no seed that differs: no variants.*; one
    left from comparing the whole sweep into the same folder goes (it described other runs)."""
    run(_cfg(seed_sweep))
    assert (seed_sweep / "compare" / "variants.md").is_file()
    run(_cfg(seed_sweep / "0", seed_sweep / "3"))  # mse seed 1, l1 seed 2: into <sweep>/compare
    assert not list((seed_sweep / "compare").glob("variants.*"))
    assert (seed_sweep / "compare" / "table.md").is_file()
    run(_cfg(seed_sweep / "0", seed_sweep / "2", out_dir=str(tmp_path / "out")))  # mse seeds 1, 2: pooled
    assert json.loads((tmp_path / "out" / "variants.json").read_text())["rows"][0]["n"] == 2


def test_stale_s_decides_when_a_silent_run_is_crashed(tmp_path: Path) -> None:
    """The run 4 above, silent for an hour, with stale_s=7200: still running."""
    write_run(tmp_path / "4", psnrs=(20.0,), last_ckpt=False, age_s=3600)
    (row,) = run(_cfg(tmp_path / "4", stale_s=7200))
    assert row["status"] == "running (2/4 batches, no last.ckpt)"


def test_the_budget_of_an_accumulating_run_counts_its_batches(tmp_path: Path) -> None:
    """trainer.max_steps=2 iterations of optim.accumulate_batches=2 batches: a run killed after batch 2
    (its last.ckpt there, no run.json end) is 2 of 4 batches in, not done."""
    optim = {"generator": {"lr": 1e-3}, "accumulate_batches": 2}
    write_run(tmp_path / "k2", psnrs=(20.0,), budget=2, age_s=3600, extra={"optim": optim})
    (row,) = run(_cfg(tmp_path / "k2"))
    assert row["status"] == "crashed (2/4 batches)"
    assert row["budget"] == 4


def test_runs_of_other_scales_or_validation_sets_are_refused(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a")
    b = write_run(tmp_path / "b", scale=4)
    c = write_run(tmp_path / "c", val_dir="/data/other")
    with pytest.raises(UserError, match=r"differ in data.scale \(a: 2, b: 4\): compare one scale at a time"):
        run(_cfg(a, b))
    with pytest.raises(UserError, match="differ in data.val_hr_dir"):
        run(_cfg(a, c))
    with pytest.raises(UserError, match="pick=worst: use auto, best or last"):
        run(_cfg(a, pick="worst"))
    with pytest.raises(UserError, match="crop=1,2: use crop=auto or crop=x,y,size"):
        run(_cfg(a, crop="1,2"))
    assert not (tmp_path / "a" / "compare").exists()  # nothing written
    with pytest.raises(UserError, match="matches nothing"):
        run(_cfg(tmp_path / "nothing*"))
    with pytest.raises(UserError, match="no run folder"):
        run(_cfg(tmp_path / "a" / "csv"))


def _exit_message(cfg: DictConfig, capsys: pytest.CaptureFixture[str]) -> str:
    """What the CLI (`python -m sr_gan.compare`'s Hydra task) prints when it refuses `cfg`: exit 2, one line."""
    with pytest.raises(SystemExit) as exited:
        _main(cfg)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    return err.removeprefix("error: ").strip()


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("smoothing", "abc", "a number >= 0 and < 1"),
        ("smoothing", 1, "a number >= 0 and < 1"),  # the EMA weight: 1 would divide by zero
        ("smoothing", 5, "a number >= 0 and < 1"),
        ("crop_size", "abc", "an integer >= 1"),
        ("crop_size", -5, "an integer >= 1"),
        ("stale_s", "abc", "a number >= 0"),
    ],
)
def test_bad_values_stop_before_out_dir_is_made(
    key: str, value: Any, allowed: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = write_run(tmp_path / "a")
    message = _exit_message(_cfg(a, **{key: value}), capsys)
    assert message == f"{key}={value} is not allowed: {key} must be {allowed}"
    assert not (a / "compare").exists()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("data: {scale: 2\n", "is not valid YAML (line 2: expected ',' or '}'"),
        ("- data\n- trainer\n", "holds a list, not a mapping"),
        ("", "is empty"),
        ("trainer: {max_steps: 4}\n", "has no data.scale"),
        ("data: {patch_size: 32}\n", "has no data.scale"),
        (LAUGHS, "is not valid YAML (line 1: its aliases expand it past 100,000 values)"),  # 10**9 hung compare
        ("data: &a {scale: 2, again: *a}\n", "is not valid YAML (line 1: an alias makes it hold itself)"),
        ("data: {scale: 2}\nx: " + "[" * 100_000 + "]" * 100_000 + "\n", "is not valid YAML (maximum recursion"),
    ],
)
def test_a_damaged_run_config_is_named_in_one_line(
    text: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", features=4)
    (b / "config.yaml").write_text(text)
    message = _exit_message(_cfg(a, b), capsys)
    assert message.startswith(f"runs: {b / 'config.yaml'} {problem}")
    assert message.endswith(f"{b} is not a complete sr-gan run; remove it from the runs or restore its config.yaml")
    assert not (tmp_path / "compare").exists()


def test_a_default_out_dir_linking_outside_the_runs_folder_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shared sweep's compare/ that is a link to a folder of yours had compare write its tables and
    figures there (and remove stale variants.* there): refused in one line, that folder untouched;
    given as out_dir, or a link within the runs' folder, it is written."""
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", features=4)
    mine = tmp_path.parent / f"{tmp_path.name}-mine"
    mine.mkdir()
    (mine / "table.md").write_text("mine")
    (tmp_path / "compare").symlink_to(mine, target_is_directory=True)
    message = _exit_message(_cfg(a, b), capsys)
    assert message == (
        f"out_dir: the default {tmp_path / 'compare'} is a link to {mine}, outside the runs' folder: pass "
        f"out_dir=<a folder of yours> (out_dir={mine} to write there)"
    )
    assert [p.name for p in mine.iterdir()] == ["table.md"] and (mine / "table.md").read_text() == "mine"
    (tmp_path / "compare").unlink()
    (tmp_path / "compare").symlink_to("a", target_is_directory=True)  # within the runs' folder
    run(_cfg(a, b))
    assert (a / "table.md").is_file()


def test_a_damaged_record_or_sample_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A damaged run.json is a warning (the run is compared without its record); a damaged sample strip
    (empty file) is one line naming it and the fix."""
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", features=4)
    (b / "run.json").write_text('{"status": "runn')
    with pytest.warns(UserWarning, match=r"run\.json is damaged"):
        assert [r["run"] for r in run(_cfg(a, b))] == ["a", "b"]
    sample = sorted((b / "samples").glob("val_*/*.png"))[-1]
    sample.write_bytes(b"")
    message = _exit_message(_cfg(a, b), capsys)
    assert message.startswith(f"cannot read image {sample}: ")
    assert message.endswith(": delete the damaged sample (compare then leaves it out)")
    sample.unlink()
    with pytest.warns(UserWarning, match=r"run\.json is damaged"):
        assert [r["run"] for r in run(_cfg(a, b))] == ["a", "b"]


def test_sample_strips_past_the_pixel_budget_are_refused_from_their_headers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """compare held every picked strip decoded at once: 8 PNGs of 147 KB (12288 x 4096 px of zeros) took
    1.7 GB more. Strips past MAX_STRIP_PIXELS in all are refused in one line from their headers (these
    claim 5 x 2**28 pixels with no data behind: decoded, the first would be a damaged sample)."""
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", features=4)
    picked = sorted((b / "samples").glob("val_*"))[-1]
    for i in range(5):
        png_bomb(picked / f"bomb{i}.png", 16384, 16384)
    message = _exit_message(_cfg(a, b), capsys)
    strips = [p for r in (a, b) for p in (r / picked.relative_to(b)).glob("*.png") if "bomb" not in p.name]
    total = 5 * 2**28 + sum(math.prod(image_size(p)) for p in strips)
    assert message == (
        f"compare: the sample strips of the picked checkpoints hold {total:,} pixels (the largest: "
        f"{picked / 'bomb0.png'}, 16384x16384), more than the 1,073,741,824 compare reads at once: compare fewer "
        "runs at once, or remove the PNGs in samples/ that the runs did not write"
    )
    assert not (tmp_path / "compare").exists()


def test_crops_are_where_bicubic_is_worst_or_where_asked(tmp_path: Path) -> None:
    hr = torch.full((3, 40, 60), 128, dtype=torch.uint8)
    bicubic = hr.clone()
    bicubic[:, 20:36, 36:52] = 0  # the only place bicubic misses
    assert auto_crop(Strip(bicubic, hr, hr), 16) == (36, 20, 16)
    assert auto_crop(Strip(bicubic, hr, hr), 100) == (20, 0, 40)  # shrunk to fit, still holding the defect

    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", features=4)
    run(_cfg(a, b, crop=[8, 4, 24]))
    report = json.loads((tmp_path / "compare" / "table.json").read_text())
    assert report["crops"] == {name: {"x": 8, "y": 4, "size": 24} for name in ("astronaut", "coffee")}
    with pytest.raises(UserError, match=r"crop=30,4,24 does not fit validation image astronaut \(48 x 48 px\)"):
        run(_cfg(a, b, crop="30,4,24"))


def test_a_crop_that_does_not_fit_leaves_the_earlier_comparison_untouched(tmp_path: Path) -> None:
    """The crop is checked against the samples before any figure is written: a refused compare
    must not replace curves.png beside the table and crops of an earlier comparison."""
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", features=4)
    run(_cfg(a, b))
    out = tmp_path / "compare"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    c = write_run(tmp_path / "c", features=2, psnrs=(10.0, 11.0))
    with pytest.raises(UserError, match=r"does not fit validation image"):
        run(_cfg(a, c, crop="30,4,24"))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_wandb_group_is_the_runs_group_else_their_folder(tmp_path: Path) -> None:
    a, b = write_run(tmp_path / "sweep" / "0"), write_run(tmp_path / "sweep" / "1", features=4)
    runs = read_runs([a, b])
    assert wandb_group(runs, [a, b]) == "demo"  # the `group` both runs were trained under
    for i, r in enumerate(runs):
        r.config["logger"]["wandb"] = {"group": f"g{i}"}  # type: ignore[index]
    assert wandb_group(runs, [a, b]) == "sweep"  # two groups: the common folder's name
    runs[1].config["logger"]["wandb"]["group"] = "g0"  # type: ignore[index]
    assert wandb_group(runs, [a, b]) == "g0"


def test_runs_are_named_by_their_shortest_distinct_path_joined_with_slashes(tmp_path: Path) -> None:
    paths = [
        write_run(tmp_path / "a" / "x" / "run"),
        write_run(tmp_path / "b" / "x" / "run"),
        write_run(tmp_path / "c"),
    ]
    assert [r.name for r in read_runs(paths)] == ["a/x/run", "b/x/run", "c"]


def test_no_run_given_or_a_glob_of_folders_holding_none_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^no runs given: python -m sr_gan\.compare logs/train/multiruns/<time>"):
        find_runs([])
    (tmp_path / "notes" / "drafts").mkdir(parents=True)
    with pytest.raises(UserError, match=rf"^runs: {tmp_path}/\* holds no run folder \(config\.yaml or \.hydra/\)$"):
        find_runs([f"{tmp_path}/*"])
    run = write_run(tmp_path / "run")
    assert find_runs([f"{tmp_path}/*"]) == [run]  # the folder of none is passed over


def test_a_metrics_line_cut_short_by_a_crash_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    path.write_text("step,lr\n1,2.5e-05\n3,2.5e\n5,2.5e-06\n")  # the middle line was cut mid-number
    assert read_metrics(path) == [
        {"step": 1.0, "lr": 2.5e-05, "batch": 2},
        {"step": 5.0, "lr": 2.5e-06, "batch": 6},
    ]


def test_labels_use_the_shortest_unambiguous_key() -> None:
    keys = ["loss", "model.generator.num_features", "discriminator.num_features", "optim.generator.lr"]
    assert list(short_labels(keys).values()) == ["loss", "generator.num_features", "discriminator.num_features", "lr"]


def test_command_line_paths_become_the_runs_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert hydra_argv(["logs/a", "it's/b*", "pick=best", "crop=1,2,3", "--cfg", "job"]) == [
        "pick=best",
        "crop=[1,2,3]",
        "--cfg",
        "job",
        "runs=['logs/a','it\\'s/b*']",
    ]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lr=1e-4" / "run").mkdir(parents=True)  # a sweep's override-named folders
    assert hydra_argv(["lr=1e-4/run", "lr=1e-4/*", "pick=best"]) == ["pick=best", "runs=['lr=1e-4/run','lr=1e-4/*']"]


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_is_the_module_text(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], flag: str
) -> None:
    monkeypatch.setattr("sys.argv", ["compare", flag])
    main()  # returns before Hydra parses anything
    out = capsys.readouterr().out
    assert "python -m sr_gan.compare logs/train/multiruns/<time>" in out and "pick=auto|best|last" in out


# --- a real sweep, made once --------------------------------------------------------------------


@pytest.fixture(scope="session")
def real_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`sr_gan.train -m loss=l1,mse model.generator.num_features=4,8` on two small validation
    photos, 2 batches each: what training really writes."""
    root = tmp_path_factory.mktemp("real_sweep")
    for split, crops in {
        "train": {"a": skdata.astronaut()[:96, :96], "b": skdata.coffee()[:96, :96]},
        "val": {"chelsea": skdata.chelsea()[:64, :96], "rocket": skdata.rocket()[100:164, 100:164]},
    }.items():
        (root / split).mkdir()
        for name, pixels in crops.items():
            Image.fromarray(pixels).save(root / split / f"{name}.png")
    result = run_module(
        "sr_gan.train",
        "-m",
        "loss=l1,mse",
        "model.generator.num_features=4,8",
        "model.generator.num_blocks=1",
        "data=folder",
        f"data.train_hr_dir={root / 'train'}",
        f"data.val_hr_dir={root / 'val'}",
        "data.patch_size=32",
        "data.batch_size=2",
        "data.num_workers=0",
        "trainer.accelerator=cpu",
        "trainer.max_steps=2",
        "trainer.val_check_interval=1",
        "trainer.log_every_n_steps=1",
        "trainer.enable_progress_bar=false",
        "module.num_samples=2",
        "logger=csv",
        "test=true",  # its metrics row lands one step past the last batch: not a batch done
        f"hydra.sweep.dir={root / 'sweep'}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "sweep"


@pytest.mark.slow
def test_real_sweep_compares_offline_and_in_wandb(real_sweep: Path, tmp_path: Path) -> None:
    runs = read_runs(sorted(p for p in real_sweep.iterdir() if p.is_dir()))
    for r in runs:  # the metrics rows and the sample folders count batches alike
        assert sorted(r.samples) == [row["batch"] for row in r.val_rows()] == [1, 2]
    out = tmp_path / "cmp"
    args = [str(real_sweep), f"out_dir={out}", "logger=wandb", "group=sweep-xyz", "plane=false"]
    result = run_module("sr_gan.compare", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model.generator.num_features" in result.stdout and "done" in result.stdout
    with open(out / "table.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(t["run"], t["loss"], t["model.generator.num_features"], t["status"]) for t in table] == [
        ("0", "l1", "4", "done"),
        ("1", "l1", "8", "done"),
        ("2", "mse", "4", "done"),
        ("3", "mse", "8", "done"),
    ]
    assert list(table[0])[:5] == ["run", "status", "loss", "model.generator.num_features", "result"]
    assert float(table[0]["bicubic_psnr"]) > 20 and table[0]["batches"] == "2"

    (wandb_run,) = (out / "wandb").glob("offline-run-*")
    (table_file,) = (wandb_run / "files" / "media" / "table" / "compare").glob("table_*.table.json")
    logged = json.loads(table_file.read_text())
    assert logged["columns"][:4] == ["run", "status", "loss", "model.generator.num_features"]
    assert [row[:3] for row in logged["data"]] == [
        [str(i), "done", loss] for i, loss in enumerate(["l1"] * 2 + ["mse"] * 2)
    ]
    images = {p.name.split("_")[0] for p in (wandb_run / "files" / "media" / "images" / "compare").iterdir()}
    assert images == {"curves", "crops"}
    bad = run_module("sr_gan.compare", str(tmp_path / "no_such_run"), cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "no_such_run does not exist" in bad.stderr
    (record,) = [r.run for r in wandb_records(next(wandb_run.glob("run-*.wandb"))) if r.HasField("run")]
    assert (record.run_group, record.job_type, record.display_name) == ("sweep-xyz", "compare", "compare-sweep-xyz")
    again = run_module("sr_gan.compare", *args)  # into the same out_dir: the same W&B run, a second segment
    assert again.returncode == 0, again.stderr[-3000:]
    segments = sorted((out / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and {s.name.rsplit("-", 1)[1] for s in segments} == {record.run_id}


@pytest.mark.slow
def test_evaluate_names_two_runs_best_checkpoints_by_run(real_sweep: Path, tmp_path: Path) -> None:
    cfg = OmegaConf.load(ROOT / "conf" / "evaluate.yaml")
    ckpts = [str(real_sweep / job / "checkpoints" / "best.ckpt") for job in ("1", "3")]
    cfg = OmegaConf.merge(cfg, {"ckpt": ckpts, "datasets": [str(real_sweep.parent / "val")], "lpips": False})
    cfg.paths = {"data_dir": str(tmp_path)}
    cfg.out_dir, cfg.device = str(tmp_path / "eval"), "cpu"
    rows = evaluate(cfg)
    assert [r["model"] for r in rows] == ["bicubic", "1/best", "3/best"]
    assert (tmp_path / "eval" / "results.md").is_file()


def test_crops_figure_labels_each_tile_with_its_psnr_against_hr_and_marks_a_missing_sample() -> None:
    """Row labels name the image and its crop (x, y, size); under each tile but HR its PSNR on Y
    against the HR crop; a run without a sample of an image gets a "no sample" tile in its own
    column, so that every later run stays under its title."""
    generator = torch.Generator().manual_seed(0)

    def image() -> torch.Tensor:
        return torch.randint(0, 256, (3, 24, 40), dtype=torch.uint8, generator=generator)

    hr, bicubic = image(), image()
    sr = {run: image() for run in "ab"}
    strips = {  # run a has no sample of y
        "a": {"x": Strip(bicubic=bicubic, sr=sr["a"], hr=hr)},
        "b": {name: Strip(bicubic=bicubic, sr=sr["b"], hr=hr) for name in "xy"},
    }
    crops = {"x": (16, 4, 16), "y": (0, 8, 16)}
    figure = crops_figure(strips, crops, {"a": "run a", "b": "run b"})
    (x_row, y_row) = (figure.axes[:4], figure.axes[4:])

    def tile_psnr(tile: torch.Tensor, crop: tuple[int, int, int]) -> str:
        x, y, size = crop
        ref = hr[:, y : y + size, x : x + size][None].double() / 255
        return f"{float(psnr(tile[:, y : y + size, x : x + size][None].double() / 255, ref, crop_border=0)[0]):.2f} dB"

    assert x_row[0].get_ylabel() == "x\nx=16 y=4, 16 px" and y_row[0].get_ylabel() == "y\nx=0 y=8, 16 px"
    assert [ax.get_xlabel() for ax in x_row] == [
        "",
        tile_psnr(bicubic, crops["x"]),
        tile_psnr(sr["a"], crops["x"]),
        tile_psnr(sr["b"], crops["x"]),
    ]
    assert not y_row[2].get_images() and [t.get_text() for t in y_row[2].texts] == ["no sample"]
    assert y_row[3].get_xlabel() == tile_psnr(sr["b"], crops["y"])
    shown = y_row[3].get_images()[0].get_array()
    assert (shown == sr["b"][:, 8:24, 0:16].permute(1, 2, 0).numpy()).all()


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        (3.304463634024566e-05, "3.304e-05"),
        (0.015751320499779727, "0.01575"),
        (1e-4, "0.0001"),
        (5e-3, "0.005"),
        (2.5e-06, "2.5e-06"),
        (0.123456, "0.123456"),
        (True, "true"),
        (None, "null"),
        (64, "64"),
        ([1e-4, 0.0002110151383845], "[0.0001, 0.000211]"),
    ],
)
def test_a_float_cell_keeps_its_exponent_in_a_narrow_column(value: object, cell: str) -> None:
    """An Optuna trial's learning rate, 3.304463634024566e-05, was cut by the table to
    '3.304463634024566e…'; values as written in a config stay as written."""
    assert format_value(value) == cell


def test_runs_without_samples_or_without_a_common_image_get_curves_and_no_plane(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Samples of no common image: the crops, but no perception-distortion plane (its scores compare
    the same images). No run kept samples: the curves alone, and a note naming the runs. An earlier
    comparison's crops and plane in the same out_dir are removed, not left as if of these runs."""
    a, b = write_run(tmp_path / "a"), write_run(tmp_path / "b", features=4)
    figures = tmp_path / "compare"
    run(_cfg(a, b, plane=True))
    assert sorted(p.name for p in figures.glob("*.png")) == ["crops.png", "curves.png", "perception_distortion_val.png"]
    for run_folder, other in ((a, "coffee"), (b, "astronaut")):  # a keeps astronaut, b coffee
        for folder in (run_folder / "samples").iterdir():
            (folder / f"{other}.png").unlink()
    run(_cfg(a, b, plane=True))
    assert sorted(p.name for p in figures.glob("*.png")) == ["crops.png", "curves.png"]
    assert (
        "note: no validation image has a sample of every run: no perception-distortion plane" in capsys.readouterr().out
    )
    for png in [*a.glob("samples/*/*.png"), *b.glob("samples/*/*.png")]:
        png.unlink()
    run(_cfg(a, b, plane=True))
    assert sorted(p.name for p in figures.glob("*.png")) == ["curves.png"]
    assert "note: no validation samples at the picked checkpoint of a, b" in capsys.readouterr().out
