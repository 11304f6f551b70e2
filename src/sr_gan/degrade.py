"""Preview what a model will be trained on: one HR image under n random degradations, in a grid.

    python -m sr_gan.degrade input=photo.png n=8 out=preview.png [seed=0] [degradation=realesrgan]

The first tile is the HR training target (USM-sharpened when the degradation sharpens it); each
other tile is one LR draw, enlarged with nearest-neighbour so its pixels stay visible, with the
parameters drawn for it written under it. The degradation is the training one
(conf/degradation/<name>.yaml), run on one batch of n copies of the (centre-cropped) image, so the
tiles show n samples of one training batch.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from sr_gan.atomic import atomic_output
from sr_gan.cli import hydra_command
from sr_gan.config import path_arg, resolve_device
from sr_gan.errors import UserError, exit_on_user_error
from sr_gan.imageio import read_image
from sr_gan.ops.realesrgan import KERNEL_FAMILIES
from sr_gan.ops.resize import RESIZE_MODES
from sr_gan.schema import DEGRADE, validate

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
_FONT_SIZE = 11
_LINE_HEIGHT = 14
_MARGIN = 4


def _blur(p: dict[str, float], stage: str) -> str:
    """The blur of one order, e.g. 'aniso k21 s=2.44/1.75 rot=-83deg' or 'sinc k15 wc=2.51'."""
    if not p[f"{stage}/blur"]:
        return "no blur"
    size = int(p[f"{stage}/kernel_size"])
    if p[f"{stage}/sinc"]:
        return f"sinc k{size} wc={p[f'{stage}/cutoff']:.2f}"
    family = KERNEL_FAMILIES[int(p[f"{stage}/kernel_family"])]
    text = f"{family} k{size} s={p[f'{stage}/sigma_x']:.2f}"
    if family.endswith("aniso"):
        text += f"/{p[f'{stage}/sigma_y']:.2f} rot={math.degrees(p[f'{stage}/theta']):.0f}deg"
    return text + ("" if family in ("iso", "aniso") else f" b={p[f'{stage}/beta']:.2f}")


def _resize_noise(p: dict[str, float], stage: str) -> str:
    """The resize and noise of one order, e.g. 'x0.65 area, poisson x2.13 grey'."""
    grey = " grey" if p[f"{stage}/grey"] else ""
    noise = (
        f"gauss {p[f'{stage}/sigma']:.1f}/255" if p[f"{stage}/gaussian"] else f"poisson x{p[f'{stage}/poisson']:.2f}"
    )
    return f"x{p[f'{stage}/resize_factor']:.2f} {RESIZE_MODES[int(p[f'{stage}/resize_mode'])]}, {noise}{grey}"


def describe(params: dict[str, Tensor], index: int) -> list[str]:
    """The drawn parameters of sample `index` as short lines, in the order they were applied."""
    if not params:
        return ["bicubic (MATLAB), 8-bit: no random draw"]
    p = {key: value[index].item() for key, value in params.items()}
    sinc = f" + sinc k{int(p['final/kernel_size'])} wc={p['final/cutoff']:.2f}" if p["final/sinc"] else ""
    resize = f"{RESIZE_MODES[int(p['final/resize_mode'])]}{sinc}"
    jpeg = f"JPEG q{p['final/jpeg_quality']:.0f}"
    return [
        f"1st: {_blur(p, 'first')}",
        f"  {_resize_noise(p, 'first')}, JPEG q{p['first/jpeg_quality']:.0f}",
        f"2nd: {_blur(p, 'second')}",
        f"  {_resize_noise(p, 'second')}",
        "end: " + (f"{jpeg}, {resize}" if p["final/jpeg_first"] else f"{resize}, {jpeg}"),
    ]


def _to_pil(image: Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] → an 8-bit PIL image."""
    return Image.fromarray((image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy())


def make_grid(target: Tensor, lr: Tensor, captions: list[list[str]], *, title: str) -> Image.Image:
    """HR target then each LR (nearest-enlarged to HR size) with its caption under it, in rows."""
    height, width = target.shape[-2:]
    font = ImageFont.load_default(size=_FONT_SIZE)
    tiles = [(_to_pil(target), [title])]
    tiles += [(_to_pil(image).resize((width, height), Image.NEAREST), lines) for image, lines in zip(lr, captions)]
    text_height = _LINE_HEIGHT * max(len(lines) for _, lines in tiles) + _MARGIN
    text_width = max(font.getlength(line) for _, lines in tiles for line in lines)
    columns = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    cell_w, cell_h = max(width, math.ceil(text_width)) + 3 * _MARGIN, height + text_height + _MARGIN
    grid = Image.new("RGB", (columns * cell_w + _MARGIN, rows * cell_h + _MARGIN), "white")
    draw = ImageDraw.Draw(grid)
    for i, (tile, lines) in enumerate(tiles):
        left, top = _MARGIN + (i % columns) * cell_w, _MARGIN + (i // columns) * cell_h
        grid.paste(tile, (left, top))
        for j, line in enumerate(lines):
            draw.text((left, top + height + 2 + j * _LINE_HEIGHT), line, fill="black", font=font)
    return grid


def _centre_crop(image: Tensor, crop: int, scale: int, source: Path) -> Tensor:
    """The centre crop x crop (0: the whole image), cut to multiples of `scale`."""
    height, width = image.shape[-2:]
    if crop and (height < crop or width < crop):
        raise UserError(f"input={source} is {width}x{height}, smaller than crop={crop}: lower crop or use crop=0")
    if height < scale or width < scale:  # crop=0 (a crop is a positive multiple of the scale)
        raise UserError(
            f"input={source} is {width}x{height}, smaller than scale={scale}: "
            f"use an image of at least {scale}x{scale} pixels or a lower scale"
        )
    out_h, out_w = (crop, crop) if crop else (height, width)
    out_h, out_w = out_h - out_h % scale, out_w - out_w % scale
    top, left = (height - out_h) // 2, (width - out_w) // 2
    return image[..., top : top + out_h, left : left + out_w]


def preview(cfg: DictConfig) -> Path:
    """Build the grid the config asks for and write it atomically to `out`; returns the path."""
    source = path_arg(cfg, "input", example="photo.png", must_exist=True)
    out = path_arg(cfg, "out", example="preview.png", output=True)
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"out={out} must end in one of {', '.join(FORMATS)}: e.g. out=preview.png")
    if out.resolve() == source.resolve():
        raise UserError(f"out={out} is also the input: choose another output file")
    validate(cfg, DEGRADE)
    scale = cfg.degradation.scale
    if cfg.crop % scale:
        raise UserError(f"crop={cfg.crop!r} must be 0 (whole image) or a positive multiple of the scale ({scale})")
    device = resolve_device(cfg.device)
    image = read_image(source, max_pixels=cfg.max_pixels, key="max_pixels")  # (3, H, W) uint8
    hr = _centre_crop(image, cfg.crop, scale, source).float().div(255).to(device)  # (3, H, W)
    degradation = instantiate(cfg.degradation)
    generator = torch.Generator(device).manual_seed(cfg.seed)
    batch = hr[None].expand(cfg.n, -1, -1, -1).contiguous()  # (n, 3, H, W): one batch of n copies
    lr, target, params = degradation(batch, generator=generator, return_params=True)
    captions = [[f"#{i + 1}  LR {lr.shape[-1]}x{lr.shape[-2]}", *describe(params, i)] for i in range(cfg.n)]
    sharpened = getattr(degradation, "usm_sharpen", False)
    title = f"HR target {hr.shape[-1]}x{hr.shape[-2]}" + (" (USM-sharpened)" if sharpened else "")
    grid = make_grid(target[0], lr, captions, title=title)
    with atomic_output(out) as temporary:  # a full disk: one line
        grid.save(temporary, format=FORMATS[out.suffix.lower()])
    return out


@hydra_command("degrade")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    out = preview(cfg)
    print(f"wrote {out}: {cfg.n} degradations of {cfg.input} (seed={cfg.seed})")


if __name__ == "__main__":
    main()
