"""Training crops per second: decoding the PNGs (today's path) against prepared folders.

One crop is an HR 128 px patch (ESRGAN) and its LR x4 32 px patch at a random place of a random
image, as `TrainPatchDataset` cuts them. The images are DIV2K-like: 2040x1356 PNGs of smooth random
content (noise upsampled at five scales, gradients, a little pixel noise) that compress to about
4.7 MB, like DIV2K's 3.5 GB / 800; LR made by `bicubic_degrade`. They are generated once and cached
(with their prepared folders) under $SR_GAN_BENCH_DIR, default <tmp>/sr_gan_bench.

Per worker (one process, one thread): raw = decode HR + LR PNG, then crop; prepared = crop of the
memory-mapped arrays. Then a DataLoader in batches of 16 with N workers. `--candidates` adds the
storages that lost (BasicSR sub-images, one flat file): the numbers quoted in sr_gan.data.prepared.

    python -m benchmarks.bench_data [--images 8] [--workers 8 2] [--candidates]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.io import write_png

from sr_gan.atomic import atomic_path
from sr_gan.data.datasets import read_image
from sr_gan.data.prepared import PreparedImages, prepare_folder
from sr_gan.ops import bicubic_degrade

HEIGHT, WIDTH, SCALE, PATCH, BATCH = 1356, 2040, 4, 128, 16  # DIV2K's usual size; ESRGAN's crop and batch
DATA_VERSION = 1  # bump when the generated images change


def bench_dir() -> Path:
    return Path(os.environ.get("SR_GAN_BENCH_DIR") or Path(tempfile.gettempdir()) / "sr_gan_bench")


def div2k_like(seed: int, size: tuple[int, int] = (HEIGHT, WIDTH)) -> Tensor:
    """A uint8 (3, 1356, 2040) image (or `size`): smooth at every scale, so PNG compresses it as it
    does a photo."""
    height, width = size
    g = torch.Generator().manual_seed(seed)
    image = torch.zeros(1, 3, height, width)
    for cells, amplitude in ((4, 0.5), (16, 0.25), (64, 0.12), (256, 0.06), (1024, 0.03)):
        cells = min(cells, width)
        noise = torch.rand(1, 3, max(2, cells * height // width), cells, generator=g)
        image += amplitude * F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)
    image += 0.3 * torch.linspace(0, 1, height).view(1, 1, -1, 1) * torch.rand(1, 3, 1, 1, generator=g)
    image += 0.3 * torch.linspace(0, 1, width).view(1, 1, 1, -1) * torch.rand(1, 3, 1, 1, generator=g)
    image += 0.02 * torch.randn(1, 3, height, width, generator=g)
    image = (image - image.amin()) / (image.amax() - image.amin())
    return (image[0] * 255).round().to(torch.uint8)


def make_images(n: int, size: tuple[int, int] = (HEIGHT, WIDTH)) -> tuple[Path, Path]:
    """(HR folder, LR folder) of `n` DIV2K-like PNGs (`size` HR) with DIV2K names, made once and cached."""
    shape = "" if size == (HEIGHT, WIDTH) else f"_{size[0]}x{size[1]}"
    root = bench_dir() / f"div2k_like_v{DATA_VERSION}_{n}{shape}"
    hr_dir, lr_dir = root / "HR", root / f"LR_bicubic/X{SCALE}"
    for i in range(n):
        hr_path, lr_path = hr_dir / f"{i + 1:04d}.png", lr_dir / f"{i + 1:04d}x{SCALE}.png"
        if hr_path.is_file() and lr_path.is_file():
            continue
        hr = div2k_like(i, size)
        lr = (bicubic_degrade(hr[None] / 255, SCALE)[0] * 255).round().to(torch.uint8)  # (3, H/4, W/4)
        for image, path in ((hr, hr_path), (lr, lr_path)):
            with atomic_path(path) as partial:
                write_png(image, str(partial))
    return hr_dir, lr_dir


def crops_per_second(crop: Callable[[], object], seconds: float, *, min_crops: int = 5) -> float:
    """Crops per second of `crop()` in one thread, over at least `seconds` and `min_crops` crops."""
    crop()  # warm-up: first map, first decode
    n, start = 0, time.perf_counter()
    while n < min_crops or time.perf_counter() - start < seconds:
        crop()
        n += 1
    return n / (time.perf_counter() - start)


def corner(rng: np.random.Generator, lr_sizes: Sequence[tuple[int, int]]) -> tuple[int, int, int]:
    """(image, top, left) of a random LR crop, given each image's LR (height, width); the HR crop
    is at (top, left) x SCALE."""
    i, lr_patch = int(rng.integers(len(lr_sizes))), PATCH // SCALE
    height, width = lr_sizes[i]
    return i, int(rng.integers(height - lr_patch + 1)), int(rng.integers(width - lr_patch + 1))


def raw_crop(
    hr_files: list[Path], lr_files: list[Path], rng: np.random.Generator, lr_sizes: Sequence[tuple[int, int]]
) -> tuple[Tensor, Tensor]:
    """Today's TrainPatchDataset item (cache: false): decode the whole HR and LR PNGs, crop both."""
    i, y, x = corner(rng, lr_sizes)
    lr_patch = PATCH // SCALE
    hr, lr = read_image(hr_files[i]), read_image(lr_files[i])  # (3, H, W), (3, H/4, W/4)
    hr_patch = hr[:, y * SCALE : y * SCALE + PATCH, x * SCALE : x * SCALE + PATCH]
    return hr_patch, lr[:, y : y + lr_patch, x : x + lr_patch]


class PreparedPairs(Dataset):
    """Random HR/LR crop pairs from prepared folders, as a training dataset would cut them."""

    def __init__(self, hr: PreparedImages, lr: PreparedImages, length: int) -> None:
        self.hr, self.lr, self.length = hr, lr, length
        self.lr_sizes = [lr.size(i) for i in range(len(lr))]
        self.rng = np.random.default_rng()  # each worker reseeds in worker_init

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        i, y, x = corner(self.rng, self.lr_sizes)
        lr_patch = PATCH // SCALE
        return {
            "hr": self.hr.crop(i, y * SCALE, x * SCALE, PATCH, PATCH),  # (3, 128, 128)
            "lr": self.lr.crop(i, y, x, lr_patch, lr_patch),  # (3, 32, 32)
        }


def _reseed(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    info.dataset.rng = np.random.default_rng(info.seed)


def loader_crops_per_second(dataset: PreparedPairs, workers: int, seconds: float) -> float:
    """Crops per second delivered by a DataLoader in batches of 16, after its workers started."""
    loader = DataLoader(dataset, batch_size=BATCH, num_workers=workers, worker_init_fn=_reseed if workers else None)
    with warnings.catch_warnings():  # more workers than cores is what we measure here
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        batches = iter(loader)
    for _ in range(2 * max(workers, 1)):  # every worker has started and filled its prefetch
        next(batches)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(batches)
        n += 1
    elapsed = time.perf_counter() - start
    del batches  # stops the workers
    return n * BATCH / elapsed


def _flat_file(images: PreparedImages, path: Path) -> list[np.ndarray]:
    """Candidate: every image in one flat uint8 file, mapped once; returns a view per image."""
    if not path.is_file():
        with atomic_path(path) as partial, partial.open("wb") as file:
            for i in range(len(images)):
                file.write(images.image(i).numpy().tobytes())
    flat = np.memmap(path, dtype=np.uint8, mode="r")
    views, offset = [], 0
    for i in range(len(images)):
        h, w = images.size(i)
        views.append(np.asarray(flat[offset : offset + h * w * 3]).reshape(3, h, w))
        offset += h * w * 3
    return views


def _sub_images(images: PreparedImages, folder: Path, size: int, step: int) -> list[list[Path]]:
    """Candidate: BasicSR extract_subimages (windows of `size` every `step`, the last one flush with
    the border, PNG compression level 3); returns the files of each image."""
    files = []
    for i, name in enumerate(images.names):
        h, w = images.size(i)
        tops = sorted({*range(0, h - size + 1, step), h - size})
        lefts = sorted({*range(0, w - size + 1, step), w - size})
        paths = []
        for top in tops:
            for left in lefts:
                path = folder / f"{Path(name).stem}_{top}_{left}.png"
                if not path.is_file():
                    with atomic_path(path) as partial:
                        write_png(images.crop(i, top, left, size, size), str(partial), compression_level=3)
                paths.append(path)
        files.append(paths)
    return files


def _candidates(hr: PreparedImages, lr: PreparedImages, root: Path, seconds: float) -> dict[str, float]:
    """Crops/s per worker of the storages that lost to per-image memory-mapped arrays."""
    rng, lr_patch = np.random.default_rng(0), PATCH // SCALE
    lr_sizes = [lr.size(i) for i in range(len(lr))]
    flat_hr, flat_lr = _flat_file(hr, root / "flat_hr.bin"), _flat_file(lr, root / "flat_lr.bin")

    def flat() -> None:
        i, y, x = corner(rng, lr_sizes)
        torch.from_numpy(np.array(flat_hr[i][:, y * SCALE : y * SCALE + PATCH, x * SCALE : x * SCALE + PATCH]))
        torch.from_numpy(np.array(flat_lr[i][:, y : y + lr_patch, x : x + lr_patch]))

    # BasicSR's DIV2K settings: HR 480 px every 240, LR x4 120 px every 60 (same grid / 4)
    sub_hr, sub_lr = _sub_images(hr, root / "sub_HR", 480, 240), _sub_images(lr, root / "sub_LR", 120, 60)

    def sub() -> None:
        i = int(rng.integers(len(sub_hr)))
        k = int(rng.integers(len(sub_hr[i])))
        y, x = int(rng.integers(120 - lr_patch + 1)), int(rng.integers(120 - lr_patch + 1))
        read_image(sub_hr[i][k])[:, y * SCALE : y * SCALE + PATCH, x * SCALE : x * SCALE + PATCH]
        read_image(sub_lr[i][k])[:, y : y + lr_patch, x : x + lr_patch]

    return {
        "BasicSR sub-images (PNG)": crops_per_second(sub, seconds),
        "one flat file, mapped once": crops_per_second(flat, seconds),
    }


def measure(
    n_images: int,
    workers: list[int],
    *,
    seconds: float = 1.5,
    candidates: bool = False,
    size: tuple[int, int] = (HEIGHT, WIDTH),
) -> dict:
    """Every figure of this benchmark, in crops per second (`size`: of the generated HR images)."""
    hr_dir, lr_dir = make_images(n_images, size)
    hr = PreparedImages(prepare_folder(hr_dir, progress=False))
    lr = PreparedImages(prepare_folder(lr_dir, progress=False))
    hr_files, lr_files = sorted(hr_dir.glob("*.png")), sorted(lr_dir.glob("*.png"))
    pairs = PreparedPairs(hr, lr, length=10**9)
    pairs.rng = np.random.default_rng(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        rng = np.random.default_rng(0)
        raw = lambda: raw_crop(hr_files, lr_files, rng, pairs.lr_sizes)  # noqa: E731
        per_worker = {"raw PNG decode": crops_per_second(raw, seconds)}
        if candidates:
            per_worker.update(_candidates(hr, lr, hr_dir.parent, seconds))
        per_worker["prepared, maps kept open"] = crops_per_second(lambda: pairs[0], seconds)
        # DIV2K's 800 images outnumber max_open under a 1024-descriptor limit: most crops map again
        cold = PreparedPairs(PreparedImages(hr.folder, max_open=0), PreparedImages(lr.folder, max_open=0), 1)
        cold.rng = np.random.default_rng(0)
        per_worker["prepared, a map per crop"] = crops_per_second(lambda: cold[0], seconds)
    finally:
        torch.set_num_threads(threads)
    loader = {n: loader_crops_per_second(pairs, n, 2 * seconds) for n in workers}
    return {"images": n_images, "size": list(size), "per_worker": per_worker, "loader": loader}


def print_figures(figures: dict, console: Console | None = None) -> None:
    console = console or Console()
    raw = figures["per_worker"]["raw PNG decode"]
    height, width = figures.get("size", (HEIGHT, WIDTH))
    title = f"training crops/s (HR {PATCH} + LR {PATCH // SCALE} px, {figures['images']} {width}x{height} PNGs)"
    table = Table(title=title)
    for column in ("path", "crops/s", "vs raw"):
        table.add_column(column)
    for name, rate in figures["per_worker"].items():
        table.add_row(f"1 worker: {name}", f"{rate:,.0f}", f"{rate / raw:,.1f}x")
    for workers, rate in figures["loader"].items():
        table.add_row(f"DataLoader, {workers} workers, batch {BATCH}, prepared", f"{rate:,.0f}", "")
    console.print(table)


def run(workers: tuple[int, ...] = (8, 2), n_images: int = 8) -> list[dict]:
    """`python -m benchmarks` rows (ms per crop, prepared vs raw); prints the loader figures too."""
    figures = measure(n_images, list(workers))
    print_figures(figures)
    raw = figures["per_worker"]["raw PNG decode"]
    return [
        {
            "name": f"training crop HR {PATCH} + LR {PATCH // SCALE} px, 1 worker ({label})",
            "device": "cpu",
            "ours_ms": 1e3 / figures["per_worker"][f"prepared, {label}"],
            "baseline_ms": 1e3 / raw,
            "baseline": "PNG decode",
        }
        for label in ("maps kept open", "a map per crop")
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_data", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="DIV2K-like images to generate (cached)")
    parser.add_argument("--workers", type=int, nargs="+", default=[8, 2], help="DataLoader worker counts")
    parser.add_argument("--seconds", type=float, default=1.5, help="time per figure")
    parser.add_argument("--candidates", action="store_true", help="also time the storages that lost")
    args = parser.parse_args()
    print_figures(measure(args.images, args.workers, seconds=args.seconds, candidates=args.candidates))


if __name__ == "__main__":
    main()
