"""Peak memory of `sr_gan.upscale` at 1x, 4x and 16x the pixels (tiny random RRDBNet, x4, tiled).

Each size runs in a fresh process: it loads the model, upscales a small image once (imports and
allocator warm-up), notes its resident memory (RSS), upscales the measured photo and reports its
peak RSS (VmHWM on Linux) minus that RSS. Streaming tiles into the output image keeps the growth at
the output in its file dtype (3 bytes per pixel for 8-bit RGB) plus a tile-sized constant; a
float32 output with full-size copies costs several times that.

    python -m benchmarks.bench_upscale_memory [--device cpu] [--sizes 500x375 1000x750] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

from benchmarks.timing import resolve_device

SCALE = 4
LR_SIZES = ((500, 375), (1000, 750), (2000, 1500))  # (W, H): 1x, 4x, 16x the pixels
TINY = {"num_features": 8, "num_blocks": 1, "growth_channels": 4}  # random weights: memory, not quality
TILE, OVERLAP = 128, 16  # small tiles: the tile term (about 100 MiB here) does not hide the output term
MB = 2**20


def _status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status (Linux) in bytes, else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _rss_bytes() -> int:
    """Current resident memory of this process, else the peak so far."""
    return _status_bytes("VmRSS") or _peak_bytes()


def _peak_bytes() -> int:
    """Peak resident memory of this program. Linux: VmHWM, the high-water mark of the current address
    space. Not ``ru_maxrss``: Linux keeps it across fork + exec, so a child started by a big parent
    (``make bench`` after the training benchmarks: 1.6 GiB) reported the parent's size as its peak."""
    hwm = _status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def child(ckpt: str, image: str, warmup: str, out_dir: str, device: str, tile: str, overlap: str) -> None:
    """In a fresh process: upscale `warmup`, note RSS, upscale `image`, print the numbers as JSON."""
    from omegaconf import OmegaConf

    import sr_gan
    from sr_gan.upscale import run

    conf = Path(sr_gan.__file__).resolve().parents[2] / "conf" / "upscale.yaml"
    settings = {"ckpt": ckpt, "device": device, "tile": int(tile), "tile_overlap": int(overlap)}
    base = OmegaConf.merge(OmegaConf.load(conf), settings)
    assert run(OmegaConf.merge(base, {"input": warmup, "out_dir": out_dir})) == []
    before = _rss_bytes()
    start = time.perf_counter()
    assert run(OmegaConf.merge(base, {"input": image, "out_dir": out_dir})) == []
    seconds = time.perf_counter() - start
    print(json.dumps({"rss_before": before, "peak": _peak_bytes(), "seconds": seconds}))


def _photo(width: int, height: int) -> np.ndarray:
    """A natural-looking (H, W, 3) uint8 image of any size: the astronaut, resized."""
    return np.asarray(Image.fromarray(skdata.astronaut()).resize((width, height), Image.BICUBIC))


def measure(
    folder: Path,
    device: str,
    *,
    sizes: tuple[tuple[int, int], ...] = LR_SIZES,
    tile: int = TILE,
    overlap: int = OVERLAP,
    features: int = TINY["num_features"],
    src: Path | None = None,
) -> list[dict]:
    """Peak RSS growth per LR (W, H) size; `src` runs another checkout's sr_gan (to compare versions)."""
    import torch

    from sr_gan.archs import RRDBNet
    from sr_gan.weights import save_generator_file

    torch.manual_seed(0)
    ckpt = folder / "tiny_rrdbnet.safetensors"
    network = TINY | {"num_features": features}
    config = {"_target_": "sr_gan.archs.RRDBNet", **network, "scale": SCALE}
    save_generator_file(ckpt, RRDBNet(**network, scale=SCALE).state_dict(), config=config, scale=SCALE)
    Image.fromarray(_photo(48, 40)).save(folder / "warmup.png")
    root = Path(__file__).resolve().parents[1]
    path = [str(src)] if src else []
    env = {"PYTHONPATH": ":".join([*path, str(root / "src"), str(root)]), "OMP_NUM_THREADS": "2"}
    rows = []
    for width, height in sizes:
        image = folder / f"photo_{width}x{height}.png"
        Image.fromarray(_photo(width, height)).save(image)
        command = [sys.executable, "-m", "benchmarks.bench_upscale_memory", "--child"]
        command += [
            str(ckpt),
            str(image),
            str(folder / "warmup.png"),
            str(folder / "out"),
            device,
            str(tile),
            str(overlap),
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, check=False)
        if done.returncode:
            raise RuntimeError(f"upscaling {image.name} failed:\n{done.stderr[-3000:]}")
        numbers = json.loads(done.stdout.strip().splitlines()[-1])
        output = width * height * SCALE**2 * 3  # 8-bit RGB bytes
        growth = numbers["peak"] - numbers["rss_before"]
        rows.append(
            {
                "name": f"upscale x{SCALE} {width}x{height} -> {width * SCALE}x{height * SCALE}",
                "output_mb": output / MB,
                "growth_mb": growth / MB,
                "per_output": growth / output,
                "seconds": numbers["seconds"],
            }
        )
    return rows


def run(device: str) -> list[dict]:
    """The rows of `make bench`: the three sizes at the default tile."""
    with tempfile.TemporaryDirectory() as folder:
        return measure(Path(folder), str(resolve_device(device)))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_upscale_memory", description=__doc__)
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs="+", default=[f"{w}x{h}" for w, h in LR_SIZES], help="LR sizes WxH")
    parser.add_argument("--tile", type=int, default=TILE)
    parser.add_argument("--overlap", type=int, default=OVERLAP)
    parser.add_argument("--features", type=int, default=TINY["num_features"], help="RRDBNet num_features")
    parser.add_argument("--src", type=Path, help="measure the sr_gan of another checkout's src/ folder")
    parser.add_argument("--json", action="store_true", help="one JSON line per size")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    sizes = tuple(tuple(int(n) for n in size.split("x")) for size in args.sizes)
    with tempfile.TemporaryDirectory() as folder:
        rows = measure(
            Path(folder),
            args.device,
            sizes=sizes,
            tile=args.tile,
            overlap=args.overlap,
            features=args.features,
            src=args.src,
        )
        for row in rows:
            if args.json:
                print(json.dumps(row))
                continue
            print(
                f"{row['name']}: output {row['output_mb']:.0f} MiB, peak RSS growth {row['growth_mb']:.0f} MiB "
                f"({row['per_output']:.2f}x the output), {row['seconds']:.1f} s"
            )


if __name__ == "__main__":
    main()
