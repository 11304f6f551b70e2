"""``python -m sr_gan.evaluate``: the papers' benchmark table for one or more generators.

    python -m sr_gan.evaluate ckpt=runs/last.ckpt datasets=[Set5,Set14,BSD100]
    python -m sr_gan.evaluate ckpt=[psnr.safetensors,a05.safetensors,gan.safetensors] plot=true
    python -m sr_gan.evaluate ckpt=bicubic datasets=[path/to/photos]

Protocol (SRGAN Sec. 3.1, ESRGAN code; see docs): HR mod-cropped to the scale; LR from the
dataset's `LR_bicubic/X<s>` folder, else MATLAB-bicubic `imresize(HR, 1/s)` rounded to 8 bits;
SR clamped and rounded to 8 bits; `s` border pixels cropped; PSNR and SSIM on the BT.601 Y
channel in float64. Each dataset gets a bicubic row (`imresize(LR, s)`) and one row per model.
Results go to the console (rich) and to `out_dir` as Markdown, CSV and JSON (with per-image
scores), optionally a perception–distortion PNG per dataset and a W&B table (`evaluate_report`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from omegaconf import DictConfig, ListConfig
from rich.console import Console
from rich.progress import Progress

from sr_gan.atomic import check_writable
from sr_gan.cli import hydra_command
from sr_gan.config import register_resolvers, resolve_device
from sr_gan.data.datasets import ValImageDataset
from sr_gan.data.download import BENCHMARK_SETS
from sr_gan.errors import UserError, exit_on_user_error
from sr_gan.evaluate_report import (
    PerImage,
    benchmark_columns,
    log_to_wandb,
    plot_datasets,
    rich_table,
    summarize,
    write_reports,
)
from sr_gan.imageio import MAX_IMAGE_PIXELS
from sr_gan.metrics import crop_border, psnr, quantize, ssim
from sr_gan.ops import bicubic_degrade, imresize
from sr_gan.perception import load_lpips, lpips_backbone_path, lpips_score, vif_y
from sr_gan.schema import EVALUATE, validate
from sr_gan.tiling import tiled_forward
from sr_gan.weights import as_generator_config, cached_download, is_url, load_generator

Upscaler = Callable[[torch.Tensor], torch.Tensor]  # LR (1, 3, h, w) float64 in [0, 1] → SR (1, 3, H, W)

BICUBIC = "bicubic"
register_resolvers()  # ${wandb_offline:} of conf/logger/wandb.yaml


# --- datasets -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Benchmark:
    """An evaluation set: HR folder and, if the dataset ships one, its bicubic LR folder."""

    name: str
    hr_dir: Path
    lr_dir: Path | None  # None: LR = imresize(HR, 1/scale) rounded to 8 bits


def _layout(root: Path, scale: int) -> tuple[Path, Path]:
    """(HR folder, candidate LR folder) of the known layouts rooted at `root`."""
    if (root / "HR").is_dir():  # benchmark sets: Set5/HR, Set5/LR_bicubic/X4
        return root / "HR", root / "LR_bicubic" / f"X{scale}"
    if (root / "DIV2K_valid_HR").is_dir():  # DIV2K/DIV2K_valid_HR, DIV2K_valid_LR_bicubic/X4
        return root / "DIV2K_valid_HR", root / "DIV2K_valid_LR_bicubic" / f"X{scale}"
    if root.name.endswith("_HR"):  # the HR folder itself: DIV2K_valid_HR
        return root, root.with_name(root.name.removesuffix("_HR") + "_LR_bicubic") / f"X{scale}"
    return root, root / "LR_bicubic" / f"X{scale}"  # a plain folder of HR images


def find_benchmark(entry: str, *, scale: int, data_dir: Path) -> Benchmark:
    """Resolve a `datasets` entry: a folder, or a name under `<data_dir>/benchmark` or `<data_dir>`
    (where `python -m sr_gan.data.download` puts them; BSD100 is the archive's `B100`)."""
    in_archive = BENCHMARK_SETS.get(entry, f"benchmark/{entry}")
    candidates = [Path(entry), data_dir / in_archive, data_dir / entry]
    root = next((path for path in candidates if path.is_dir()), None)
    if root is None:
        raise UserError(
            f"datasets: {entry!r} is neither a folder nor a data set under {data_dir}/benchmark or {data_dir}: "
            f"fetch it with `python -m sr_gan.data.download benchmarks --root {data_dir}`, pass a folder of "
            "HR images, or set paths.data_dir (env SR_GAN_DATA)"
        )
    hr_dir, lr_dir = _layout(root, scale)
    return Benchmark(name=Path(entry).name, hr_dir=hr_dir, lr_dir=lr_dir if lr_dir.is_dir() else None)


def iter_pairs(dataset: ValImageDataset, *, device: torch.device) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, LR, HR) float64 images in [0, 1], (1, 3, h, w) and (1, 3, h·s, w·s), on `device`."""
    scale = dataset.scale
    for item in dataset:
        hr = item["hr"].to(device).unsqueeze(0).double() / 255  # (1, 3, H, W)
        if "lr" in item:
            lr = item["lr"].to(device).unsqueeze(0).double() / 255
        else:  # the standard protocol: MATLAB bicubic, stored as an 8-bit image
            lr = bicubic_degrade(hr, scale)  # (1, 3, H/s, W/s)
        yield item["name"], lr, hr


# --- models ---------------------------------------------------------------------------------------


def bicubic_upscaler(scale: int) -> Upscaler:
    """The bicubic baseline: MATLAB-compatible `imresize(LR, scale)`, kept in float64 up to the
    8-bit rounding (a float32 copy can move values that sit next to a .5 level)."""
    return lambda lr: imresize(lr.double(), scale)


def network_upscaler(model: torch.nn.Module, *, scale: int, tile: int, overlap: int, batch_size: int) -> Upscaler:
    """A generator run on the whole LR image, or tile by tile when `tile` > 0."""
    return lambda lr: tiled_forward(model, lr.float(), scale=scale, tile=tile, overlap=overlap, batch_size=batch_size)


def model_names(paths: Sequence[Path]) -> list[str]:
    """Row names: the file stem (`psnr.safetensors` → psnr), or the file name for two files of one
    stem in one folder (`g.safetensors`, `g.pth`), after its run for a checkpoint in a run's
    `checkpoints/` folder (`runA/checkpoints/best.ckpt` → runA/best), with more parent folders in
    front until no two names are equal. A file given twice is refused."""
    stems = [(*p.absolute().parent.parts, p.stem) for p in paths]
    parts = [
        (*own[:-1], p.name) if any(o == own and q.resolve() != p.resolve() for q, o in zip(paths, stems)) else own
        for p, own in zip(paths, stems)
    ]
    parts = [(*head[:-2], head[-1]) if head[-2:-1] == ("checkpoints",) else head for head in parts]  # drop it
    names = []
    for i, own in enumerate(parts):
        others = [other for j, other in enumerate(parts) if j != i]
        k = min(2 if paths[i].parent.name == "checkpoints" else 1, len(own))
        while k < len(own) and any(other[-k:] == own[-k:] for other in others):
            k += 1
        names.append("/".join(own[-k:]))
    if len(set(names)) < len(names):
        twice = sorted({str(p) for p, n in zip(paths, names) if names.count(n) > 1})
        raise UserError(f"ckpt lists {', '.join(twice)} twice: give each checkpoint once")
    return names


def load_models(
    ckpts: Mapping[str, str],
    *,
    scale: int | None,
    device: torch.device,
    generator: Mapping[str, Any] | DictConfig | None,
) -> tuple[dict[str, torch.nn.Module], int]:
    """Load every checkpoint (row name: local file, eval mode, on `device`) and agree on one scale.

    `scale=None` takes the checkpoints' scale; a given scale must match every checkpoint.
    `generator` (the `generator` key) overrides the config stored in the files.
    """
    models, scales = {}, set()
    for name, path in ckpts.items():
        if name == BICUBIC:
            raise UserError(f"ckpt={path}: a row named 'bicubic' would hide the baseline; rename the file")
        try:
            model, info = load_generator(path, generator_config=generator)
        except ValueError as err:  # also UnsafeCheckpointError: the message names the file
            raise UserError(f"ckpt: {err}") from None
        if scale is not None and info["scale"] != scale:
            raise UserError(f"ckpt {path} is a x{info['scale']} model but scale={scale}: set scale={info['scale']}")
        models[name] = model.to(device)
        scales.add(info["scale"])
    if len(scales) > 1:
        raise UserError(f"ckpt: the checkpoints have different scales {sorted(scales)}: evaluate one scale at a time")
    return models, scale or (scales.pop() if scales else 4)


# --- scoring --------------------------------------------------------------------------------------


@dataclass
class Scorer:
    """Per-image scores of one SR image against its HR image, all on the same `scale` crop."""

    scale: int
    rgb: bool = False
    lpips: torch.nn.Module | None = None
    vif: bool = False

    def __call__(self, sr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        sr = quantize(sr) / 255  # what an 8-bit image file would hold
        scores = {
            "psnr_y": psnr(sr, hr, crop_border=self.scale),
            "ssim_y": ssim(sr, hr, crop_border=self.scale),
        }
        if self.rgb:
            scores["psnr_rgb"] = psnr(sr, hr, crop_border=self.scale, test_y_channel=False)
        if self.lpips is not None:
            scores["lpips"] = lpips_score(self.lpips, crop_border(sr, self.scale), crop_border(hr, self.scale))
        if self.vif:
            scores["vif_y"] = vif_y(sr, hr, crop_border=self.scale)
        return {key: float(value.reshape(())) for key, value in scores.items()}


@torch.no_grad()
def evaluate(
    benchmarks: Sequence[Benchmark],
    upscalers: dict[str, Upscaler],
    scorer: Scorer,
    *,
    device: torch.device,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> PerImage:
    """Score every model on every image; each image is read once and passed to all models. Images
    above `max_pixels` (None: no limit) are refused from their headers."""
    keys = {"scale_key": "scale", "pixels_key": "max_pixels"}  # evaluate's own keys in the datasets' errors
    datasets = {
        b.name: ValImageDataset(hr_dir=b.hr_dir, lr_dir=b.lr_dir, scale=scorer.scale, max_pixels=max_pixels, **keys)
        for b in benchmarks
    }
    results: PerImage = {name: {model: {} for model in upscalers} for name in datasets}
    with Progress(transient=True) as progress:
        task = progress.add_task("evaluating", total=sum(len(d) for d in datasets.values()))
        for dataset_name, dataset in datasets.items():
            for image, lr, hr in iter_pairs(dataset, device=device):
                for model, upscale in upscalers.items():
                    results[dataset_name][model][image] = scorer(upscale(lr), hr)
                progress.advance(task)
    return results


# --- command line ---------------------------------------------------------------------------------


def as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, ListConfig | list | tuple) else [str(value)]


def lpips_metric(
    setting: Any, device: torch.device, console: Console, *, without: str = "no LPIPS column"
) -> torch.nn.Module | None:
    """LPIPS per `lpips=auto|true|false`; never downloads, never fakes a value. `without` says
    what the user gets instead when the weights are absent."""
    if setting is False:  # (the schema allows auto, true and false only)
        return None
    metric = load_lpips(device)
    if metric is None:
        hint = (
            f"LPIPS needs torchvision's ImageNet AlexNet at {lpips_backbone_path()} (fetch it once "
            "online: python -c \"import torchvision; torchvision.models.alexnet(weights='DEFAULT')\")"
        )
        if setting is True:
            raise UserError(f"lpips=true but {hint}, or set lpips=auto")
        console.print(f"note: {without}: {hint}")
    return metric


def _check_datasets(entries: list[str]) -> None:
    """Fail fast, before any model is loaded."""
    if not entries:
        raise UserError("datasets is empty: pass datasets=[Set5,Set14] or datasets=[path/to/hr_images]")
    if len({Path(e).name for e in entries}) < len(entries):
        raise UserError(f"datasets={entries}: two entries have the same folder name; rename one")


def _check_ckpts(ckpts: list[str]) -> None:
    """Every `ckpt` entry is an existing file: all are checked before the first model is loaded."""
    for ckpt in map(Path, ckpts):
        if ckpt.is_dir():
            raise UserError(
                f"ckpt={ckpt} is a folder: pass a weight file, e.g. ckpt={ckpt / 'checkpoints' / 'best.ckpt'} "
                "for a training run's folder"
            )
        if not ckpt.is_file():
            raise UserError(
                f"ckpt={ckpt}: no such file; pass a .ckpt, .safetensors or .pth file (or ckpt=bicubic for the baseline)"
            )


def _out_dir(cfg: DictConfig) -> Path:
    """`out_dir` as a Path; null (or unset) is refused: the reports need a folder."""
    if cfg.get("out_dir") is None:
        raise UserError("out_dir is not set: add out_dir=eval (the folder for results.md, .csv and .json)")
    return Path(str(cfg.out_dir))


def run(cfg: DictConfig) -> list[dict[str, Any]]:
    """Evaluate as configured (see conf/evaluate.yaml); returns the table rows."""
    validate(cfg, EVALUATE)
    generator = as_generator_config(cfg.generator)
    console = Console()
    if not console.is_terminal:  # a log file or pipe: keep the table's rows whole rather than 80 columns wide
        console = Console(width=max(console.width, 200))
    ckpts = [c for c in as_list(cfg.ckpt) if c != BICUBIC]  # the bicubic row is always there
    entries = as_list(cfg.datasets)
    _check_datasets(entries)
    out_dir = _out_dir(cfg)
    check_writable(out_dir)  # before hours of scoring, not after
    # a URL's row is named after its file (not after torch.hub's cache folder, which it is read from)
    names = model_names([Path(urlsplit(c).path) if is_url(c) else Path(c) for c in ckpts])
    local = [str(cached_download(c, key="ckpt")) if is_url(c) else c for c in ckpts]  # released weights by URL
    _check_ckpts(local)  # all of them, before the first is loaded
    device = resolve_device(cfg.device)
    models, scale = load_models(
        dict(zip(names, local, strict=True)), scale=cfg.scale, device=device, generator=generator
    )
    benchmarks = [find_benchmark(e, scale=scale, data_dir=Path(cfg.paths.data_dir)) for e in entries]
    lpips = lpips_metric(cfg.lpips, device, console)
    scorer = Scorer(scale=scale, rgb=cfg.rgb, lpips=lpips, vif=cfg.plot and lpips is None)
    upscalers = {BICUBIC: bicubic_upscaler(scale)} | {
        name: network_upscaler(model, scale=scale, tile=cfg.tile, overlap=cfg.tile_overlap, batch_size=cfg.tile_batch)
        for name, model in models.items()
    }

    results = evaluate(benchmarks, upscalers, scorer, device=device, max_pixels=cfg.max_pixels)
    rows = summarize(results)
    protocol = (
        f"x{scale}, Y channel (BT.601) unless marked RGB, {scale}-pixel border cropped, "
        "SR rounded to 8 bits, bicubic = MATLAB imresize"
    )
    report = {
        "scale": scale,
        "crop_border": scale,
        "protocol": protocol,
        "lr": {b.name: str(b.lr_dir) if b.lr_dir else "imresize(HR, 1/scale), 8-bit" for b in benchmarks},
        "ckpt": dict(zip(models, ckpts, strict=True)),
        "rows": rows,
        "per_image": results,
    }
    columns = benchmark_columns(rows)
    console.print(rich_table(rows, columns, caption=protocol))  # before any file: nothing computed is lost
    written = write_reports(rows, report, out_dir, columns=columns, caption=protocol)
    plots = plot_datasets(rows, out_dir=out_dir, scale=scale, baseline=BICUBIC) if cfg.plot else []
    console.print("written: " + ", ".join(str(path) for path in written + plots))
    if (cfg.get("logger") or {}).get("wandb") is not None:  # logger=wandb; other loggers add nothing here
        log_to_wandb(rows, plots, cfg, columns=columns, key="eval/results")
    return rows


@hydra_command("evaluate")
def main(cfg: DictConfig) -> None:
    exit_on_user_error(run)(cfg)


if __name__ == "__main__":
    main()
