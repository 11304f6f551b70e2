"""``python -m sr_gan.upscale``: super-resolve your own images with a trained generator.

    python -m sr_gan.upscale ckpt=generator.safetensors input=photo.jpg
    python -m sr_gan.upscale ckpt=last.ckpt input=photos/ out_dir=photos_x4 tile=256 precision=bf16
    python -m sr_gan.upscale ckpt=last.ckpt input='shots/**/*.png'

Each image keeps its kind: grey in → grey out (the network sees it replicated to RGB and its output
is turned back to luma), an alpha channel is enlarged on its own with MATLAB bicubic and
re-attached, 16-bit PNGs give 16-bit PNGs, EXIF rotation is applied, the ICC colour profile is kept.
Outputs are `<stem><suffix>.<format>`, next to each input unless `out_dir` is set, written
atomically; a file already at an output's path is replaced (an earlier output). So beside the inputs
the suffix may not be empty: outputs would take the inputs' own names there and replace any picture
of the same stem (photo.jpg → the user's photo.png). An output path that is one of the inputs is
refused (that file fails): no input is ever overwritten. With a folder or glob input, files whose
stem already ends in a non-empty suffix (outputs of an earlier run) are skipped, said in one line.
Images above `max_pixels` are refused from their header. An output folder that cannot be written to
(out_dir, or an input's folder when it is unset) stops the run in one line before any image is
upscaled. Temporary files that a run killed mid-write left beside this run's outputs (`.<output
name>.<hex>.tmp`) are removed first (a second run writing the same outputs at that moment would see
its write fail, reported). A file that cannot be read or written is reported in one line and the
others go on; the exit status is then 1. Ctrl-C stops the run in one line saying how many images
were written (exit status 130). Memory: the output image in its file's dtype plus one tile.
"""

from __future__ import annotations

import glob
import sys
import warnings
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from string import Formatter

import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.progress import Progress
from torchvision.transforms.v2.functional import rgb_to_grayscale

from sr_gan.atomic import check_writable, remove_stale_temporaries
from sr_gan.cli import hydra_command
from sr_gan.config import path_arg, resolve_device
from sr_gan.errors import INTERRUPTED_EXIT_CODE, InputWarning, UserError, exit_on_user_error
from sr_gan.imageio import IMAGE_EXTENSIONS, MAX_SIDE, WRITE_FORMATS, Picture, read_picture, write_image
from sr_gan.ops.imresize import resize_taps  # the MATLAB bicubic weights, applied in row strips
from sr_gan.schema import UPSCALE, validate
from sr_gan.tiling import sr_tiles
from sr_gan.weights import as_generator_config, load_generator

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
EXTENSIONS = (*IMAGE_EXTENSIONS, ".tif", ".tiff")
ALPHA_STRIP_ROWS = 64  # output rows of alpha enlarged at a time


# --- pixels ---------------------------------------------------------------------------------------


def _levels(x: torch.Tensor, bits: int) -> np.ndarray:
    """(C, H, W) float → (H, W, C) float32 integer levels: clamped to [0, 1], scaled, rounded.

    In place: `x` must be a tensor of the caller's own (a tile's worth of memory saved)."""
    return x.clamp_(0, 1).mul_(2**bits - 1).round_().permute(1, 2, 0).numpy()


def _alpha_strips(alpha: torch.Tensor, scale: int, rows: int) -> Iterator[tuple[int, torch.Tensor]]:
    """MATLAB-bicubic `imresize(alpha, scale)` of (h, w) float64, `rows` output rows at a time.

    Yields (top, strip (rows, w·scale)). Each output pixel is a weighted sum of P = 6 input pixels
    per axis (`resize_taps`): the input rows a strip reads (about rows/scale + 5) are enlarged along
    W, each output column summed from its taps, then each output row is summed from its taps among
    those. Memory: a few strips; time linear in the output pixels. Equal, to float64 rounding, to
    weight_h @ alpha @ weight_w^T with imresize's dense (side·s, side) matrices, which cost
    (h·s)·h·w multiplications: a 3000x4000 alpha at x4 took 42 s and 886 MiB that way, 3.5 s and
    50 MiB this way (one CPU core).
    """
    height, width = alpha.shape
    weights_h, columns_h = resize_taps(height, height * scale, float(scale), True)  # (sh, P) each
    weights_w, columns_w = resize_taps(width, width * scale, float(scale), True)  # (sw, P) each
    weights_h, weights_w = weights_h.to(alpha), weights_w.to(alpha)
    columns_h, columns_w = columns_h.to(alpha.device), columns_w.to(alpha.device)
    for top in range(0, height * scale, rows):
        taps_h, at_h = weights_h[top : top + rows], columns_h[top : top + rows]  # (r, P)
        first, last = int(at_h.min()), int(at_h.max())
        source = alpha[first : last + 1]  # (k, w): the input rows this strip reads
        wide = alpha.new_zeros(len(source), width * scale)  # (k, sw)
        for p in range(weights_w.shape[1]):
            wide.addcmul_(source.index_select(1, columns_w[:, p]), weights_w[:, p])
        strip = alpha.new_zeros(len(taps_h), width * scale)  # (r, sw)
        for p in range(taps_h.shape[1]):
            strip.addcmul_(wide.index_select(0, at_h[:, p] - first), taps_h[:, p, None])
        yield top, strip


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
    bits: int | None = None,
) -> np.ndarray:
    """The upscaled image (H·s, W·s, C) in its file dtype: uint8, or uint16 at `bits` = 16.

    The network runs on the RGB part tile by tile (in `dtype` autocast); each tile is clamped,
    turned to grey if the picture is grey, rounded to `bits` (default: the picture's) and stored,
    so no float image of the output size exists. The alpha channel is enlarged with MATLAB
    bicubic in strips of output rows. Memory: this array plus one tile (and one alpha strip).
    """
    bits = picture.bits if bits is None else bits
    colours = 1 if picture.grey else 3
    height, width = picture.rgb.shape[-2:]
    channels = colours + (picture.alpha is not None)
    out = np.empty((height * scale, width * scale, channels), np.uint16 if bits == 16 else np.uint8)
    device_type = next(model.parameters()).device.type
    with torch.autocast(device_type, dtype=dtype) if dtype is not None else nullcontext():
        tiles = sr_tiles(model, picture.rgb, scale=scale, tile=tile, overlap=overlap, batch_size=batch_size)
        for top, left, core in tiles:  # core: (1, 3, h, w) float32, a view of the window's output
            core = core[0].clamp(0, 1)  # a copy, rounded in place below
            core = rgb_to_grayscale(core) if picture.grey else core  # (C, h, w)
            out[top : top + core.shape[-2], left : left + core.shape[-1], :colours] = _levels(core, bits)
            del core  # free it before the next window runs
    if picture.alpha is not None:
        for top, strip in _alpha_strips(picture.alpha[0, 0].double(), scale, ALPHA_STRIP_ROWS):
            out[top : top + strip.shape[0], :, colours:] = _levels(strip.float()[None], bits)
    return out


# --- the job --------------------------------------------------------------------------------------


def find_inputs(pattern: str, *, suffix: str) -> tuple[list[Path], list[Path]]:
    """The image files named by `pattern` (one file, a folder's images, or a glob's images), and those
    skipped: from folders and globs, files with an image extension are taken except earlier outputs
    (stem ending in a non-empty `suffix`). Both sorted; no image taken is a UserError saying why."""
    path = Path(pattern)
    if path.is_file():
        return [path], []
    if path.is_dir():
        found = [p for p in path.iterdir() if p.is_file()]
    else:
        found = [Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file()]
    candidates = sorted(p for p in found if p.suffix.lower() in EXTENSIONS)
    skipped = [p for p in candidates if suffix and p.stem.endswith(suffix)]
    images = [p for p in candidates if p not in skipped]
    if not images and skipped:
        raise UserError(
            f"input={pattern}: all its {len(skipped)} image file(s) end in the output suffix '{suffix}' (outputs "
            f"of an earlier run?), e.g. {skipped[0]}: name one file as input= to upscale it, or set another suffix="
        )
    if not images:
        raise UserError(
            f"input={pattern} names no image file ({'/'.join(EXTENSIONS)}): pass a file, a folder or a "
            "quoted glob such as input='photos/*.png'"
        )
    return images, skipped


# How a suffix with {scale} is typed on a command line: Hydra reads an unquoted brace as a dict.
SUFFIX_EXAMPLE = "\"suffix='_x{scale}'\""


def check_suffix(suffix: str) -> None:
    """Refuse in one line a `suffix` setting that holds a field other than `{scale}` (str.format would
    fail with a traceback) or a path separator (outputs would land outside out_dir or their folder)."""
    try:
        fields = [
            (name, spec, conversion) for _, name, spec, conversion in Formatter().parse(suffix) if name is not None
        ]
    except ValueError:  # an unmatched brace
        fields = [("", "", None)]
    if any(field != ("scale", "", None) for field in fields):
        raise UserError(
            f"suffix={suffix}: only {{scale}} may be used (e.g. {SUFFIX_EXAMPLE}); write a brace as {{{{ or }}}}"
        )
    if "/" in suffix or "\\" in suffix:
        raise UserError(
            f"suffix={suffix} holds a path separator: a suffix only extends the name (e.g. {SUFFIX_EXAMPLE}); "
            "choose the folder with out_dir="
        )


def check_empty_suffix(suffix: str, inputs: list[Path], out_dir: Path | None) -> None:
    """Refuse an empty `suffix` when outputs go beside an input (out_dir unset, or out_dir one of the
    inputs' folders): photo.jpg → photo.png would replace the user's own photo.png there."""
    if suffix or (out_dir is not None and out_dir.resolve() not in {p.parent.resolve() for p in inputs}):
        return
    where = "with out_dir unset" if out_dir is None else f"with out_dir={out_dir}, a folder of the inputs,"
    raise UserError(
        f"suffix='' {where} names each output like its input, beside it (photo.jpg → photo.png), replacing any "
        "picture of that name there: drop suffix= (its default _x{scale}) or set out_dir= to another folder"
    )


def plan_outputs(inputs: list[Path], *, out_dir: Path | None, suffix: str, fmt: str) -> dict[Path, Path | str]:
    """input → output path, or → the reason it is refused (it would overwrite an input or an
    earlier output of this run)."""
    sources = {p.resolve() for p in inputs}
    plan: dict[Path, Path | str] = {}
    taken: dict[Path, Path] = {}
    for source in inputs:
        target = (out_dir or source.parent) / f"{source.stem}{suffix}.{fmt}"
        if target.resolve() in sources:
            plan[source] = (
                f"output {target} would overwrite an input: keep a suffix (drop suffix=: its default _x{{scale}}) "
                "or set out_dir= to another folder"
            )
        elif (first := taken.get(target.resolve())) is not None:
            plan[source] = f"output {target} is also the output of {first}{_parting(first, source, out_dir)}"
        else:
            plan[source] = target
            taken[target.resolve()] = source
    return plan


def _parting(first: Path, second: Path, out_dir: Path | None) -> str:
    """The end of the refusal of `second`, whose output name `first` took: what parts them.

    Beside the inputs, two files can only meet in one folder (photo.jpg, photo.bmp), and no setting
    parts them; in out_dir, pictures of one name from two folders do, and two runs with their own
    out_dir part those."""
    if first.parent.resolve() == second.parent.resolve():
        return ", a picture of the same name in the same folder: rename one of them"
    return (
        f", a picture of the same name in another folder, both upscaled into out_dir={out_dir}: rename one, or "
        "upscale each folder in a run of its own with its own out_dir="
    )


def prepare_targets(targets: list[Path], *, beside_inputs: bool) -> None:
    """Before any image is upscaled: fail in one line when a folder the outputs go to (out_dir, or
    each input's folder when it is unset: `beside_inputs`) cannot be written to, not after all the
    compute; then remove the temporary files of these outputs that a run killed mid-write left."""
    for folder in sorted({target.parent for target in targets}):
        try:
            check_writable(folder)
        except UserError:
            if not beside_inputs:
                raise
            raise UserError(
                f"cannot write the outputs beside the inputs in {folder}: set out_dir= to a folder you can write to"
            ) from None
    remove_stale_temporaries(targets)


def upscale_file(
    model: torch.nn.Module, source: Path, target: Path | str, *, scale: int, cfg: DictConfig
) -> str | None:
    """Read, upscale and write one file; returns None, or a one-line message saying why it failed."""
    if isinstance(target, str):  # refused by plan_outputs
        return target
    try:
        picture = read_picture(source, max_pixels=cfg.max_pixels, key="max_pixels")
        writer, (height, width) = WRITE_FORMATS[cfg.format], picture.rgb.shape[-2:]
        if writer == "JPEG" and picture.alpha is not None:
            raise UserError(f"format={cfg.format} cannot store the alpha channel of {source.name}: use format=png")
        if (limit := MAX_SIDE.get(writer)) is not None and max(height, width) * scale > limit:  # before the compute
            raise UserError(
                f"{source.name}: its x{scale} output, {width * scale}x{height * scale} px, is larger than "
                f"format={cfg.format} can store ({limit} px a side): use format=png"
            )
        pixels = upscale_picture(
            model,
            picture,
            scale=scale,
            tile=cfg.tile,
            overlap=cfg.tile_overlap,
            batch_size=cfg.tile_batch,
            dtype=PRECISIONS[cfg.precision],
            bits=picture.bits if cfg.format == "png" else 8,
        )
        write_image(target, pixels, fmt=cfg.format, quality=cfg.quality, icc=picture.icc)
    except UserError as err:  # names the file already
        return str(err)
    except OSError as err:  # e.g. a full disk or a folder without write permission
        return f"cannot write {target}: {err}"
    except torch.OutOfMemoryError:
        return (
            f"{source}: out of memory at tile={cfg.tile}, tile_batch={cfg.tile_batch}: lower them (tile=0 is no tiling)"
        )
    except MemoryError:  # the output image itself does not fit in RAM
        return f"{source}: not enough memory for its x{scale} output image: upscale a smaller image (or crop it)"
    return None


def _check(cfg: DictConfig, device: torch.device) -> None:
    validate(cfg, UPSCALE)
    check_suffix(str(cfg.suffix))
    if cfg.quality is not None and WRITE_FORMATS[cfg.format] == "PNG":
        raise UserError(
            f"quality={cfg.quality} sets the compression of format=jpg or webp; format=png is lossless: drop "
            "quality= or choose format=jpg or webp"
        )
    if cfg.precision == "fp16" and device.type == "cpu":
        raise UserError("precision=fp16 needs a CUDA device: use precision=bf16 or fp32 on the CPU")


def run(cfg: DictConfig) -> list[str]:
    """Upscale as configured (see conf/upscale.yaml); returns the one-line failure messages."""
    console = Console(stderr=True, soft_wrap=True)  # one line per message, however long
    device = resolve_device(cfg.device)
    _check(cfg, device)
    generator = as_generator_config(cfg.generator)
    ckpt = path_arg(cfg, "ckpt", example="generator.safetensors", must_exist=True, url=True)
    if cfg.input is None:
        raise UserError("input is not set: add input=photos/ (a file, a folder or a quoted glob)")
    try:
        model, info = load_generator(ckpt, generator_config=generator)
    except ValueError as err:  # the message names the file and what is wrong
        raise UserError(f"ckpt: {err}") from None
    model, scale = model.to(device), info["scale"]
    suffix = str(cfg.suffix).format(scale=scale)
    inputs, skipped = find_inputs(str(cfg.input), suffix=suffix)
    if skipped:
        console.print(
            f"skipped {len(skipped)} file(s) whose names end in the output suffix '{suffix}' (outputs of an "
            f"earlier run?): {skipped[0]}{', ...' if len(skipped) > 1 else ''}"
        )
    out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else None
    check_empty_suffix(suffix, inputs, out_dir)
    plan = plan_outputs(inputs, out_dir=out_dir, suffix=suffix, fmt=cfg.format)
    prepare_targets([target for target in plan.values() if isinstance(target, Path)], beside_inputs=out_dir is None)
    failures: list[str] = []
    finished = 0  # inputs written or failed
    try:
        with Progress(console=console) as progress:
            for source in progress.track(inputs, description=f"x{scale} on {device}"):
                with warnings.catch_warnings(record=True) as warned:
                    warnings.simplefilter("always", InputWarning)  # each file's own (a 16-bit colour TIFF)
                    failure = upscale_file(model, source, plan[source], scale=scale, cfg=cfg)
                _show_warnings(warned, progress.console)
                if failure is not None:
                    progress.console.print(f"error: {failure}")
                    failures.append(failure)
                finished += 1
    except KeyboardInterrupt:  # the output being written is absent: atomic_path removed its temporary file
        done = finished - len(failures)
        console.print(
            f"Ctrl-C: stopped with {done} of {len(inputs)} image(s) written{_where(out_dir, done)}, each whole; "
            "the one in progress and the rest were not"
        )
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None
    done = len(inputs) - len(failures)
    console.print(f"{done} of {len(inputs)} image(s) written{_where(out_dir, done)}")
    return failures


def _show_warnings(warned: list[warnings.WarningMessage], console: Console) -> None:
    """An InputWarning as one line, `warning: <message>`, above the progress bar; others as Python shows them."""
    for warning in warned:
        if issubclass(warning.category, InputWarning):
            console.print(f"warning: {warning.message}")
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


def _where(out_dir: Path | None, done: int) -> str:
    """The summary's " to <out_dir>", or "" (out_dir unset, or nothing written: it may not exist)."""
    return f" to {out_dir}" if out_dir and done else ""


@hydra_command("upscale")
def main(cfg: DictConfig) -> None:
    try:
        failures = exit_on_user_error(run)(cfg)
    except KeyboardInterrupt:  # before the first image (loading the weights); run reports one during the images
        print("Ctrl-C: stopped before any image was upscaled", file=sys.stderr)
        raise SystemExit(INTERRUPTED_EXIT_CODE) from None
    if failures:
        print(f"error: {len(failures)} image(s) failed:\n" + "\n".join(failures), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
