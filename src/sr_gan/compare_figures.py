"""The pictures of ``python -m sr_gan.compare``: training curves and the same crops across runs.

Figures are built with matplotlib's object API (no pyplot: no global state, no display needed) and
returned, so that callers (and tests) can inspect them before `save_figure` writes the PNG.
Validation crops come from the strips the runs saved (`samples/val_<batches>/<image>.png`,
bicubic | SR | HR side by side, 8-bit), so no checkpoint is loaded and no network is run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch.nn.functional as F
from matplotlib import colormaps
from matplotlib.figure import Figure
from torch import Tensor

from sr_gan.atomic import atomic_path
from sr_gan.errors import UserError
from sr_gan.imageio import DataError, image_size, read_image
from sr_gan.metrics import psnr
from sr_gan.run_folders import Run

T = TypeVar("T")

TILE_INCHES = 1.8  # one crop tile in crops.png
LEGEND_CHARS_PER_INCH = 13  # characters of 8-point text per inch, about: how many legend columns fit


def save_figure(fig: Figure, path: Path) -> Path:
    """Write `fig` as a PNG, atomically."""
    with atomic_path(path) as temporary:
        fig.savefig(temporary, format="png")
    return path


def _color(i: int) -> tuple[tuple[float, ...], str]:
    """A colour and line style per run: ten colours, then the same with dashes."""
    return colormaps["tab10"](i % 10), "-" if i < 10 else "--"


# --- curves ---------------------------------------------------------------------------------------


def smooth(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing (W&B's "smoothing" slider):
    s_t = w s_(t-1) + (1 - w) x_t, divided by 1 - w^t so that early points are not pulled to 0."""
    out, average = [], 0.0
    for t, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**t) if weight > 0 else value)
    return out


def _loss_series(run: Run, prefix: str) -> tuple[list[float], list[float]]:
    """(batches, total loss) from the rows that logged `prefix*` terms (weighted, so they add up)."""
    points = [
        (row["batch"], sum(v for k, v in row.items() if k.startswith(prefix)))
        for row in run.metrics
        if any(k.startswith(prefix) for k in row)
    ]
    return [p[0] for p in points], [p[1] for p in points]


def curves_figure(runs: Sequence[Run], labels: Mapping[str, str], *, smoothing: float) -> Figure:
    """val/psnr against batches (bicubic dashed), and the smoothed generator and discriminator
    losses (sum of the logged weighted terms) where any run logged them; one line per run."""
    panels = [("val/psnr", "val/psnr on Y (dB)")]
    panels += [(p, t) for p, t in (("train/l_g_", "G loss (smoothed)"), ("train/l_d_", "D loss (smoothed)"))
               if any(_loss_series(run, p)[0] for run in runs)]  # fmt: skip
    fig = Figure(figsize=(5 * len(panels), 4.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for i, run in enumerate(runs):
        color, style = _color(i)
        val = run.val_rows()
        axes[0].plot([r["batch"] for r in val], [r["val/psnr"] for r in val], style, marker="o", ms=3,
                     color=color, label=labels[run.name])  # fmt: skip
        for ax, (prefix, _) in zip(axes[1:], panels[1:]):
            batches, losses = _loss_series(run, prefix)
            ax.plot(batches, smooth(losses, smoothing), style, color=color)
    bicubic = next((r["val/psnr_bicubic"] for run in runs for r in run.val_rows() if "val/psnr_bicubic" in r), None)
    if bicubic is not None:
        axes[0].axhline(bicubic, color="grey", linestyle=":", label=f"bicubic {bicubic:.2f} dB")
    for ax, (prefix, title) in zip(axes, panels):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training batches")
        ax.grid(alpha=0.3)
        if prefix != "val/psnr" and all(y > 0 for line in ax.lines for y in line.get_ydata()):
            ax.set_yscale("log")
    longest = max(len(label) for label in [*labels.values(), "bicubic 00.00 dB"])
    columns = int(fig.get_figwidth() * LEGEND_CHARS_PER_INCH // (longest + 6))  # + the line sample
    fig.legend(loc="outside lower center", ncols=max(1, min(columns, len(runs) + 1)), fontsize=8)
    return fig


# --- crops ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Strip:
    """One saved validation strip split into its three (3, H, W) uint8 images."""

    bicubic: Tensor
    sr: Tensor
    hr: Tensor


# The pixels of all the strips compare holds at once (each run's picked samples): 2**30 is 3 GiB as
# 8-bit RGB, 30 runs x 4 strips of a DIV2K validation image (3 x 2040 x 1404 px). A strip is at
# most 2**28 pixels, and 1 KB of PNG decodes to 1 MB: a few small files were gigabytes.
MAX_STRIP_PIXELS = 2**30


def check_strips_fit(folders: Sequence[Path | None]) -> None:
    """A one-line UserError, from the PNG headers alone, when the strips of `folders` (None: no
    samples) hold more than `MAX_STRIP_PIXELS` pixels in all."""
    sizes = {path: _strip_read(path, image_size) for folder in folders for path in _strip_paths(folder)}
    if (total := sum(h * w for h, w in sizes.values())) > MAX_STRIP_PIXELS:
        largest = max(sizes, key=lambda path: sizes[path][0] * sizes[path][1])
        height, width = sizes[largest]
        raise UserError(
            f"compare: the sample strips of the picked checkpoints hold {total:,} pixels (the largest: {largest}, "
            f"{width}x{height}), more than the {MAX_STRIP_PIXELS:,} compare reads at once: compare fewer runs at once, "
            "or remove the PNGs in samples/ that the runs did not write"
        )


def read_strips(folder: Path | None) -> dict[str, Strip]:
    """The strips of one `samples/val_<batches>` folder by image name (empty if there is none)."""
    strips = {}
    for path in _strip_paths(folder):
        image = _strip_read(path, read_image)  # (3, H, 3W)
        width = image.shape[-1] // 3
        strips[path.stem] = Strip(*(image[..., i * width : (i + 1) * width] for i in range(3)))
    return strips


def _strip_paths(folder: Path | None) -> list[Path]:
    return sorted(folder.glob("*.png")) if folder is not None else []


def _strip_read(path: Path, reader: Callable[[Path], T]) -> T:
    """`reader(path)`; a damaged strip is a one-line UserError naming it and the fix."""
    try:
        return reader(path)
    except DataError as err:
        raise UserError(f"{err}: delete the damaged sample (compare then leaves it out)") from None


def auto_crop(strip: Strip, size: int) -> tuple[int, int, int]:
    """(x, y, size) of the square where bicubic differs most from HR (mean absolute difference),
    searched on a grid of `size / 4` pixels; `size` shrinks to fit the image."""
    height, width = strip.hr.shape[-2:]
    size = min(size, height, width)
    diff = (strip.bicubic.float() - strip.hr.float()).abs().mean(0)[None, None]  # (1, 1, H, W)
    stride = max(1, size // 4)
    pooled = F.avg_pool2d(diff, size, stride=stride)[0, 0]  # (rows, cols) of window means
    row, col = divmod(int(pooled.argmax()), pooled.shape[1])
    return col * stride, row * stride, size


def check_crop(crop: tuple[int, int, int], name: str, strip: Strip) -> tuple[int, int, int]:
    x, y, size = crop
    height, width = strip.hr.shape[-2:]
    if size <= 0 or x < 0 or y < 0 or x + size > width or y + size > height:
        raise UserError(
            f"crop={x},{y},{size} does not fit validation image {name} ({width} x {height} px): "
            f"pass x + size <= {width} and y + size <= {height}, or crop=auto"
        )
    return crop


def _tile(image: Tensor, crop: tuple[int, int, int]) -> Tensor:
    x, y, size = crop
    return image[:, y : y + size, x : x + size]  # (3, size, size)


def _crop_psnr(sr: Tensor, hr: Tensor) -> float:
    return float(psnr(sr[None].double() / 255, hr[None].double() / 255, crop_border=0)[0])


def crops_figure(
    strips: Mapping[str, Mapping[str, Strip]], crops: Mapping[str, tuple[int, int, int]], labels: Mapping[str, str]
) -> Figure:
    """One row per image of `crops`, columns HR, bicubic, then each run of `strips` (run name →
    image → strip); under each tile its PSNR on Y against the HR crop. HR and bicubic come from
    the first run that has the image (they are the same in every run of one validation set)."""
    names = list(crops)
    fig = Figure(figsize=(TILE_INCHES * (2 + len(strips)), TILE_INCHES * len(names) + 1), dpi=100, layout="constrained")
    axes = fig.subplots(len(names), 2 + len(strips), squeeze=False)
    titles = ["HR", "bicubic", *("\n".join(labels[run].split()) for run in strips)]
    for row, name in zip(axes, names):
        reference = next(per_image[name] for per_image in strips.values() if name in per_image)
        hr = _tile(reference.hr, crops[name])
        images = [hr, _tile(reference.bicubic, crops[name])]
        images += [
            _tile(per_image[name].sr, crops[name]) if name in per_image else None for per_image in strips.values()
        ]
        for column, (ax, image) in enumerate(zip(row, images)):
            ax.set_xticks([])
            ax.set_yticks([])
            if image is None:
                ax.text(0.5, 0.5, "no sample", ha="center", va="center", transform=ax.transAxes, fontsize=8)
                continue
            ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")  # (size, size, 3)
            if column > 0:
                ax.set_xlabel(f"{_crop_psnr(image, hr):.2f} dB", fontsize=8)
        x, y, size = crops[name]
        row[0].set_ylabel(f"{name}\nx={x} y={y}, {size} px", fontsize=8)
    for ax, title in zip(axes[0], titles):
        ax.set_title(title, fontsize=7)
    return fig


def crop_boxes(
    strips: Mapping[str, Mapping[str, Strip]], crop: tuple[int, int, int] | None, size: int
) -> dict[str, tuple[int, int, int]]:
    """The crop of every image that some run saved: `crop` checked against each, else automatic."""
    reference = {name: strip for per_image in reversed(list(strips.values())) for name, strip in per_image.items()}
    return {
        name: check_crop(crop, name, strip) if crop is not None else auto_crop(strip, size)
        for name, strip in sorted(reference.items())
    }
