"""``python -m sr_gan.upscale``: super-resolve your own images with a trained generator.

    python -m sr_gan.upscale ckpt=generator.safetensors input=photo.jpg
    python -m sr_gan.upscale ckpt=last.ckpt input=photos/ out_dir=photos_x4 tile=256 precision=bf16
    python -m sr_gan.upscale ckpt=last.ckpt input='shots/**/*.png'

Each image keeps its kind: grey in → grey out (the network sees it replicated to RGB and its
output is turned back to luma), an alpha channel is enlarged on its own with MATLAB bicubic and
re-attached, 16-bit PNGs give 16-bit PNGs, EXIF rotation is applied. Outputs are
`<stem><suffix>.<format>`, next to each input unless `out_dir` is set, written atomically. An
output path that is one of the inputs is refused (that file fails: no input is ever overwritten;
an earlier output is replaced). With a folder or glob input, files whose stem already ends in the
suffix (outputs of an earlier run) are skipped. A file that cannot be read or written is reported
in one line and the others go on; the exit status is then 1.
"""

from __future__ import annotations

import glob
import struct
import sys
import zlib
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, ImageOps
from rich.console import Console
from rich.progress import Progress
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2.functional import pil_to_tensor, rgb_to_grayscale

from sr_gan.atomic import atomic_path
from sr_gan.config import path_arg
from sr_gan.data.datasets import IMAGE_EXTENSIONS
from sr_gan.errors import UserError, exit_on_user_error
from sr_gan.ops import imresize
from sr_gan.tiling import resolve_device, tiled_forward
from sr_gan.weights import load_generator

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}  # format key → PIL writer
EXTENSIONS = (*IMAGE_EXTENSIONS, ".tif", ".tiff")
_NATIVE = ("PNG", "JPEG", "WEBP")  # decoded by torchvision with their bit depth and channels kept


# --- reading and writing --------------------------------------------------------------------------


@dataclass
class Picture:
    """An image as the network sees it, with what is needed to write it back the same way."""

    rgb: torch.Tensor  # (1, 3, H, W) float in [0, 1]; grey replicated
    alpha: torch.Tensor | None  # (1, 1, H, W) float in [0, 1]
    grey: bool
    bits: int  # 8 or 16


def _decode(path: Path) -> torch.Tensor:
    """(C, H, W) uint8 or uint16 with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA), EXIF
    orientation applied; torchvision keeps 16 bits and alpha, PIL reads palettes and the rest."""
    with Image.open(path) as image:  # reads the header only; not an image → OSError
        if image.format in _NATIVE and image.mode not in ("P", "PA", "CMYK"):
            return decode_image(str(path), mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
        image = ImageOps.exif_transpose(image)  # phone photos: pixels as viewers show them
        if image.mode.startswith("I;16"):  # 16-bit grey outside PNG (e.g. TIFF)
            return torch.from_numpy(np.asarray(image, dtype=np.uint16).copy())[None]
        alpha = "A" in image.getbands() or "transparency" in image.info
        grey = image.mode in ("1", "L", "LA", "I", "F")
        return pil_to_tensor(image.convert(("L" if grey else "RGB") + ("A" if alpha else "")))


def read_picture(path: Path) -> Picture:
    """Decode `path` into a Picture; an unreadable file raises a UserError that names it."""
    try:
        pixels = _decode(path)
    except (OSError, RuntimeError, ValueError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"cannot read image {path}: {reason}") from None
    bits = 16 if pixels.dtype == torch.uint16 else 8
    x = pixels.float()[None] / (2**bits - 1)  # (1, C, H, W)
    colour, alpha = (x[:, :1], x[:, 1:]) if x.shape[1] in (1, 2) else (x[:, :3], x[:, 3:])
    grey = colour.shape[1] == 1
    return Picture(
        rgb=colour.expand(-1, 3, -1, -1) if grey else colour,
        alpha=alpha if alpha.shape[1] else None,
        grey=grey,
        bits=bits,
    )


def encode_png16(pixels: np.ndarray) -> bytes:
    """A 16-bit PNG of (H, W, C) uint16, C = 1, 2, 3 or 4 (PNG spec, filter 0 on every row).

    Hand-written because Pillow writes no 16-bit colour PNG and torchvision's encoder takes uint8.
    """
    height, width, channels = pixels.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]  # grey, grey+alpha, RGB, RGBA
    rows = pixels.astype(">u2").reshape(height, -1).view(np.uint8)  # big-endian samples
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()  # filter byte 0

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def write_picture(picture: Picture, path: Path, *, fmt: str) -> None:
    """Write `picture` to `path` atomically: 16 bits only as PNG, alpha never as JPEG."""
    if FORMATS[fmt] == "JPEG" and picture.alpha is not None:
        raise UserError(f"format={fmt} cannot store the alpha channel of {path.name}: use format=png")
    colour = rgb_to_grayscale(picture.rgb) if picture.grey else picture.rgb  # (1, C, H, W)
    x = colour if picture.alpha is None else torch.cat([colour, picture.alpha], dim=1)
    bits = picture.bits if fmt == "png" else 8
    pixels = x[0].clamp(0, 1).mul(2**bits - 1).round().permute(1, 2, 0).numpy()  # (H, W, C)
    with atomic_path(path) as temporary:
        if bits == 16:
            temporary.write_bytes(encode_png16(pixels.astype(np.uint16)))
        else:
            pixels = pixels.astype(np.uint8)
            Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(temporary, format=FORMATS[fmt])


# --- the job --------------------------------------------------------------------------------------


def find_inputs(pattern: str, *, suffix: str) -> list[Path]:
    """The image files named by `pattern`: one file, a folder's images, or a glob's images.

    From folders and globs, files with an image extension are taken, except earlier outputs
    (stem ending in `suffix`).
    """
    path = Path(pattern)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = [p for p in path.iterdir() if p.is_file()]
    else:
        found = [Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()]
    images = sorted(p for p in found if p.suffix.lower() in EXTENSIONS and not p.stem.endswith(suffix))
    if not images:
        raise UserError(
            f"input={pattern} names no image file ({'/'.join(EXTENSIONS)}): pass a file, a folder or a "
            "quoted glob such as input='photos/*.png'"
        )
    return images


def plan_outputs(inputs: list[Path], *, out_dir: Path | None, suffix: str, fmt: str) -> dict[Path, Path | str]:
    """input → output path, or → the reason it is refused (it would overwrite an input or an
    earlier output of this run)."""
    sources = {p.resolve() for p in inputs}
    plan: dict[Path, Path | str] = {}
    taken: dict[Path, Path] = {}
    for source in inputs:
        target = (out_dir or source.parent) / f"{source.stem}{suffix}.{fmt}"
        if target.resolve() in sources:
            plan[source] = f"output {target} would overwrite an input: set suffix= or out_dir="
        elif target.resolve() in taken:
            plan[source] = f"output {target} is also the output of {taken[target.resolve()]}: set out_dir= or rename"
        else:
            plan[source] = target
            taken[target.resolve()] = source
    return plan


@torch.no_grad()
def upscale_picture(
    model: torch.nn.Module,
    picture: Picture,
    *,
    scale: int,
    tile: int,
    overlap: int,
    batch_size: int = 1,
    dtype: torch.dtype | None = None,
) -> Picture:
    """The network on the RGB part (in `dtype` autocast), MATLAB bicubic on the alpha channel."""
    device_type = next(model.parameters()).device.type
    with torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext():
        sr = tiled_forward(model, picture.rgb, scale=scale, tile=tile, overlap=overlap, batch_size=batch_size)
    alpha = None if picture.alpha is None else imresize(picture.alpha.double(), scale).float()
    return Picture(rgb=sr.clamp(0, 1), alpha=alpha, grey=picture.grey, bits=picture.bits)  # (1, 3, sH, sW)


def upscale_file(
    model: torch.nn.Module, source: Path, target: Path | str, *, scale: int, cfg: DictConfig
) -> str | None:
    """Read, upscale and write one file; returns None, or a one-line message saying why it failed."""
    if isinstance(target, str):  # refused by plan_outputs
        return target
    try:
        picture = read_picture(source)
        sr = upscale_picture(
            model,
            picture,
            scale=scale,
            tile=cfg.tile,
            overlap=cfg.tile_overlap,
            batch_size=cfg.tile_batch,
            dtype=PRECISIONS[cfg.precision],
        )
        write_picture(sr, target, fmt=cfg.format)
    except UserError as err:  # names the file already
        return str(err)
    except OSError as err:  # e.g. a full disk or a folder without write permission
        return f"cannot write {target}: {err}"
    except torch.OutOfMemoryError:
        return (
            f"{source}: out of memory at tile={cfg.tile}, tile_batch={cfg.tile_batch}: lower them (tile=0 is no tiling)"
        )
    return None


def _check(cfg: DictConfig, device: torch.device) -> None:
    if cfg.precision not in PRECISIONS:
        raise UserError(f"precision={cfg.precision}: use fp32, bf16 or fp16")
    if cfg.precision == "fp16" and device.type == "cpu":
        raise UserError("precision=fp16 needs a CUDA device: use precision=bf16 or fp32 on the CPU")
    if cfg.format not in FORMATS:
        raise UserError(f"format={cfg.format}: use one of {', '.join(FORMATS)}")


def run(cfg: DictConfig) -> list[str]:
    """Upscale as configured (see conf/upscale.yaml); returns the one-line failure messages."""
    console = Console(stderr=True, soft_wrap=True)  # one line per message, however long
    device = resolve_device(cfg.device)
    _check(cfg, device)
    ckpt = path_arg(cfg, "ckpt", example="generator.safetensors", must_exist=True)
    if cfg.input is None:
        raise UserError("input is not set: add input=photos/ (a file, a folder or a quoted glob)")
    try:
        model, info = load_generator(ckpt)
    except ValueError as err:  # the message names the file and what is wrong
        raise UserError(f"ckpt: {err}") from None
    model, scale = model.to(device), info["scale"]
    suffix = str(cfg.suffix).format(scale=scale)
    inputs = find_inputs(str(cfg.input), suffix=suffix)
    out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else None
    plan = plan_outputs(inputs, out_dir=out_dir, suffix=suffix, fmt=cfg.format)
    failures = []
    with Progress(console=console) as progress:
        for source in progress.track(inputs, description=f"x{scale} on {device}"):
            if (failure := upscale_file(model, source, plan[source], scale=scale, cfg=cfg)) is not None:
                progress.console.print(f"error: {failure}")
                failures.append(failure)
    done = len(inputs) - len(failures)
    console.print(f"{done} of {len(inputs)} image(s) written" + (f" to {out_dir}" if out_dir else ""))
    return failures


@hydra.main(version_base="1.3", config_path="../../conf", config_name="upscale")
def main(cfg: DictConfig) -> None:
    failures = exit_on_user_error(run)(cfg)
    if failures:
        print(f"error: {len(failures)} image(s) failed:\n" + "\n".join(failures), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
