"""Image files in and out: training data, users' photos and the upscaled outputs.

Reading: `read_image` gives the uint8 RGB that training and evaluation use; `read_picture` keeps a
photo's kind (grey, alpha, 16 bits, EXIF rotation) for `sr_gan.upscale`. Both read the size from
the header first and refuse images above a pixel limit before any pixel is decoded: a small file
can claim a huge size (a decompression bomb). Pillow's own limit is off while we open a file (our
check replaces it), so users never see its DecompressionBombError or warning instead of ours.

Writing: `write_image` stores an (H, W, C) uint8 / uint16 array as PNG with a streaming encoder
(no full-size copy of the image), or as JPEG / WebP through Pillow. Files are written atomically.
"""

from __future__ import annotations

import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image, read_file
from torchvision.transforms.v2.functional import pil_to_tensor, to_dtype

from sr_gan.atomic import atomic_path
from sr_gan.errors import InputWarning, UserError
from sr_gan.png_check import check_png_file

# 2**28 = 16384 x 16384 pixels: above any camera frame, 768 MiB as decoded 8-bit RGB. Pillow's
# default (89.5 M pixels, warning; error at twice that) would refuse large genuine panoramas.
MAX_IMAGE_PIXELS = 2**28
WRITE_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}  # format key → Pillow writer
MAX_SIDE = {"JPEG": 65500, "WEBP": 16383}  # the longest side each writer can store, in pixels (PNG: 2**31 - 1)
_NATIVE = ("PNG", "JPEG", "WEBP")  # decoded by torchvision with their bit depth and channels kept
TIFF_BITS_PER_SAMPLE = 258  # the TIFF tag: one value per channel


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def list_images(folder: str | Path) -> list[Path]:
    """The image files of a folder (png, jpg, jpeg, bmp, webp), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist: check the data.*_dir paths")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not images:
        raise FileNotFoundError(f"image folder {folder} holds no {'/'.join(IMAGE_EXTENSIONS)} files")
    return images


class DataError(UserError, ValueError):
    """A data file that cannot be used as it is (unreadable, wrong size); the message names it."""


# --- reading ---------------------------------------------------------------------------------------


class UnreadableImage(DataError):
    """An image file that cannot be decoded (no image, truncated, gone); the message names it."""


def _unreadable(path: Path, err: Exception) -> UnreadableImage:
    """The one-line error for an image that cannot be decoded: its path and the first line of why."""
    reason = (str(err).strip() or type(err).__name__).splitlines()[0]
    # Pillow and Python repeat the path ("cannot identify image file '<path>'", "No such file or
    # directory: '<path>'"): name it once
    reason = reason.replace(f": '{path}'", "").replace(f" '{path}'", "").replace(f" {path}", "")
    # torchvision prefixes its C++ source location: "operator(), /.../decode_png.cpp:79, <why>",
    # "read_file, /.../read_write_file.cpp:83, <why>"
    reason = re.sub(r"^\S*, \S+\.cpp:\d+, ", "", reason)
    return UnreadableImage(f"cannot read image {path}: {reason}")


@contextmanager
def _open(path: Path, *, max_pixels: int | None, key: str) -> Iterator[Image.Image]:
    """Pillow's lazy open (header only), our pixel limit checked before anything is decoded."""
    pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # checked below instead
    try:
        image = Image.open(path)  # not an image → OSError (UnidentifiedImageError)
    except OSError as err:
        raise _unreadable(path, err) from None
    finally:
        Image.MAX_IMAGE_PIXELS = pillow_limit
    with image:
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise DataError(
                f"image {path} is {width}x{height} = {width * height:,} pixels, above the limit of "
                f"{max_pixels:,} (a small file claiming a huge size is a decompression bomb): if the image "
                f"is genuine, raise {key}"
            )
        yield image


def image_size(
    path: Path, *, max_pixels: int | None = MAX_IMAGE_PIXELS, key: str = "data.max_image_pixels"
) -> tuple[int, int]:
    """(H, W) of an image from its header alone; above `max_pixels` (None: no limit) a DataError
    whose fix names the config `key`."""
    with _open(Path(path), max_pixels=max_pixels, key=key) as image:
        width, height = image.size
    return height, width


def read_image(
    path: str | Path, *, max_pixels: int | None = MAX_IMAGE_PIXELS, key: str = "data.max_image_pixels"
) -> Tensor:
    """Decode an image file to uint8 RGB (3, H, W): grey → RGB, alpha dropped, 16-bit → 8-bit (its high
    byte); floating-point pixels are refused (a DataError)."""
    path = Path(path)
    with _open(path, max_pixels=max_pixels, key=key) as image:
        try:
            if image.format not in _NATIVE:  # BMP, TIFF, GIF, ... whatever the file is named
                _refuse_float(image, path)  # convert("RGB") clipped them: a 0..1 float TIFF read black
                if image.mode.startswith("I"):  # 16-bit greys (PGM, TIFF), which convert("RGB") clipped at 255
                    grey = torch.from_numpy(_sixteen_bits(np.asarray(image), path))  # (H, W) uint16
                    return to_dtype(grey.expand(3, *grey.shape), torch.uint8, scale=True)  # (3, H, W)
                return pil_to_tensor(image.convert("RGB"))  # (3, H, W) uint8
            pixels = _decode_native(path, image.format, mode=ImageReadMode.RGB)  # (3, H, W) uint8 or uint16
        except (RuntimeError, OSError) as err:
            raise _unreadable(path, err) from None
    return to_dtype(pixels, torch.uint8, scale=True)  # a 16-bit PNG keeps its 8 high bits


def _decode_native(path: Path, image_format: str, **options: object) -> Tensor:
    """torchvision's decode of the file `path` (PNG, JPEG, WebP), a PNG checked first (`check_png_file`)."""
    data = read_file(str(path))  # (N,) uint8: the file's bytes, read once
    if image_format == "PNG":
        check_png_file(path, memoryview(data.numpy()))  # the same memory, no copy
    return decode_image(data, **options)  # type: ignore[arg-type]


def decode(path: Path, *, max_pixels: int | None, key: str) -> tuple[Tensor, bytes | None]:
    """(C, H, W) uint8 or uint16 with C = 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA), EXIF
    orientation applied, and the file's ICC colour profile (None: none); torchvision keeps 16 bits
    and alpha, Pillow reads palettes and the rest. A PNG's transparent colour (tRNS of a grey or
    RGB image, which torchvision drops) is the alpha."""
    with _open(path, max_pixels=max_pixels, key=key) as image:
        _check_samples(image, path)
        icc = image.info.get("icc_profile") or None  # read with the header (PNG iCCP, JPEG APP2, WebP, TIFF)
        return _decode_pixels(image, path), icc


def _decode_pixels(image: Image.Image, path: Path) -> Tensor:
    """The pixels of `decode`, from `image`, the open file `path`."""
    colour_key = image.info.get("transparency") if image.mode in ("L", "RGB", "I;16", "I") else None
    try:
        if image.format in _NATIVE and image.mode not in ("P", "PA", "CMYK"):
            pixels = _decode_native(path, image.format, mode=ImageReadMode.UNCHANGED, apply_exif_orientation=True)
            return pixels if colour_key is None else _keyed_alpha(pixels, colour_key)
        image = ImageOps.exif_transpose(image)  # phone photos: pixels as viewers show them
        if not image.mode.startswith("I"):
            alpha = "A" in image.getbands() or "transparency" in image.info
            grey = image.mode in ("1", "L", "LA")
            return pil_to_tensor(image.convert(("L" if grey else "RGB") + ("A" if alpha else "")))
        grey_levels = np.asarray(image)  # (H, W): uint16 (I;16, e.g. TIFF) or int32 (I: 16-bit PGM, 32-bit TIFF)
    except (OSError, RuntimeError, ValueError) as err:
        raise _unreadable(path, err) from None
    return torch.from_numpy(_sixteen_bits(grey_levels, path))[None]  # (1, H, W) uint16


def _check_samples(image: Image.Image, path: Path) -> None:
    """Refuse floating-point pixels; warn that a 16-bit colour TIFF is read as 8 bits. From the header.

    Mode F (32-bit float, e.g. a float TIFF) is refused rather than guessed: nothing in the file says
    whether 1.0 is white (0..1) or a level of 255 or 65535, or the image is HDR with values above
    white, and a wrong guess gives a black, washed-out or clipped picture without a word (Pillow's
    convert("L") clipped 0..1 to black). Pillow reads a 16-bit RGB(A) TIFF as 8 bits (the high byte).
    """
    _refuse_float(image, path)
    bits = getattr(image, "tag_v2", {}).get(TIFF_BITS_PER_SAMPLE, 8)  # TIFF only: an int or one per channel
    depth = max(bits) if isinstance(bits, tuple) else bits
    if image.mode in ("RGB", "RGBA") and depth > 8:
        warnings.warn(
            f"{path} is a {depth}-bit colour TIFF, which is read as 8 bits: save it as a 16-bit PNG to keep 16",
            InputWarning,
            stacklevel=2,
        )


def _refuse_float(image: Image.Image, path: Path) -> None:
    """A DataError for floating-point pixels (`_check_samples` says why they are not read)."""
    if image.mode == "F":
        raise DataError(
            f"image {path} holds floating-point pixels, which sr-gan does not read (their range is not in the "
            "file): save it as a 16-bit PNG or TIFF"
        )


def _sixteen_bits(levels: np.ndarray, path: Path) -> np.ndarray:
    """Grey `levels` (Pillow's mode I;16 or I) as uint16; a value outside 0..65535 raises a DataError.

    Pillow reads 16-bit greys of some formats (PGM, some TIFFs) as 32-bit integers: they stay 16-bit.
    A copy in native byte order (Pillow's array is read-only, big-endian for I;16B)."""
    if levels.dtype.kind == "i" and levels.size and (levels.min() < 0 or levels.max() > 65535):
        raise DataError(
            f"image {path} holds 32-bit integer pixels from {levels.min()} to {levels.max()}, beyond the 16 bits "
            "(0..65535) sr-gan reads: save it as a 16-bit PNG or TIFF"
        )
    return levels.astype(np.uint16)


def _keyed_alpha(pixels: Tensor, colour: int | tuple[int, ...]) -> Tensor:
    """`pixels` (C, H, W), C = 1 or 3, with an alpha channel after them: 0 where a pixel has the
    transparent `colour` (a PNG's tRNS, in the file's bit depth: Pillow compares a 16-bit key with
    pixels it read as 8 bits, and found none), else opaque."""
    values = pixels.to(torch.int32)  # (C, H, W); uint16 has few operations
    opaque = (values != torch.tensor(colour, dtype=torch.int32).reshape(-1, 1, 1)).any(0, keepdim=True)
    full = 65535 if pixels.dtype == torch.uint16 else 255
    return torch.cat([values, opaque.to(torch.int32) * full]).to(pixels.dtype)  # (C + 1, H, W)


@dataclass
class Picture:
    """A photo as the network sees it, with what is needed to write it back the same way."""

    rgb: Tensor  # (1, 3, H, W) float in [0, 1]; grey replicated
    alpha: Tensor | None  # (1, 1, H, W) float in [0, 1]
    grey: bool
    bits: int  # 8 or 16
    icc: bytes | None = None  # the file's ICC colour profile, for the output: its colours as the input's


def read_picture(path: Path, *, max_pixels: int | None = MAX_IMAGE_PIXELS, key: str = "max_pixels") -> Picture:
    """Decode `path` into a Picture; an unreadable or too large file raises a DataError naming it."""
    pixels, icc = decode(path, max_pixels=max_pixels, key=key)
    bits = 16 if pixels.dtype == torch.uint16 else 8
    x = pixels.float()[None].div_(2**bits - 1)  # (1, C, H, W); in place: one LR-sized float copy
    colour, alpha = (x[:, :1], x[:, 1:]) if x.shape[1] in (1, 2) else (x[:, :3], x[:, 3:])
    grey = colour.shape[1] == 1
    return Picture(
        rgb=colour.expand(-1, 3, -1, -1) if grey else colour,
        alpha=alpha if alpha.shape[1] else None,
        grey=grey,
        bits=bits,
        icc=icc if icc is not None and _icc_colour_space(icc) == ("GRAY" if grey else "RGB") else None,
    )


def _icc_colour_space(icc: bytes) -> str:
    """The colour space an ICC profile describes ("RGB", "GRAY", "CMYK", ...: header bytes 16-19).
    A profile is kept only for pixels of its space: a CMYK photo is read as RGB, and its profile
    would misdescribe those."""
    return icc[16:20].decode("latin-1").strip()


# --- writing ---------------------------------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels → grey, grey+alpha, RGB, RGBA
_PNG_UP = 2  # filter type "Up": each byte minus the byte above it
_IDAT_BYTES = 1 << 20  # compressed bytes per IDAT chunk
_ROWS_PER_STEP = 64  # image rows filtered and compressed at a time


def _png_chunk(file: BinaryIO, tag: bytes, data: bytes) -> None:
    file.write(struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data)))


def encode_png(file: BinaryIO, pixels: np.ndarray, *, level: int = 6, icc: bytes | None = None) -> None:
    """Write (H, W, C) uint8 or uint16 pixels, C = 1, 2, 3 or 4, to `file` as an 8- or 16-bit PNG,
    with the ICC colour profile `icc` (an iCCP chunk) if given.

    Streams: rows are filtered and deflated `_ROWS_PER_STEP` at a time, so memory beyond `pixels`
    is a few rows. Pillow and torchvision copy the whole image first (and neither writes 16-bit
    colour). Every row uses the Up filter: on an upscaled photo that is within 2 % of Pillow's
    adaptive filtering (astronaut x4: 3.13 vs 3.19 MB; 10 % larger on noise-like GAN texture), and
    far smaller than no filter (7.3 MB).
    """
    height, width, channels = pixels.shape
    bit_depth = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}[pixels.dtype]
    file.write(_PNG_SIGNATURE)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, _PNG_COLOUR_TYPES[channels], 0, 0, 0)
    _png_chunk(file, b"IHDR", header)
    if icc is not None:  # before the image data (PNG spec 11.3.3.3): a name, compression method 0, zlib data
        _png_chunk(file, b"iCCP", b"ICC profile\0\0" + zlib.compress(icc))
    deflate = zlib.compressobj(level)
    above = np.zeros((1, width * channels * bit_depth // 8), np.uint8)  # the row before the first is zero
    pending = b""
    for top in range(0, height, _ROWS_PER_STEP):
        rows = pixels[top : top + _ROWS_PER_STEP].astype(">u2" if bit_depth == 16 else np.uint8)
        rows = rows.reshape(rows.shape[0], -1).view(np.uint8)  # (n, W·C·bytes), big-endian samples
        filtered = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)  # filter byte + row
        filtered[:, 0] = _PNG_UP
        np.subtract(rows, np.concatenate([above, rows[:-1]]), out=filtered[:, 1:])  # wraps mod 256
        above = rows[-1:]
        pending += deflate.compress(filtered)
        if len(pending) >= _IDAT_BYTES:
            _png_chunk(file, b"IDAT", pending)
            pending = b""
    _png_chunk(file, b"IDAT", pending + deflate.flush())
    _png_chunk(file, b"IEND", b"")


def write_image(
    path: Path, pixels: np.ndarray, *, fmt: str, quality: int | None = None, icc: bytes | None = None
) -> None:
    """Write (H, W, C) pixels atomically: `fmt` png (8 or 16 bit, streamed), jpg or webp (8 bit),
    with the ICC colour profile `icc` (None: none, which viewers take for sRGB).

    JPEG and WebP go through Pillow, which copies the image once more (no streaming writer there),
    with `quality` 1-100 (None: `_pillow_options`' defaults; PNG is lossless and has none).
    """
    if WRITE_FORMATS[fmt] != "PNG" and pixels.dtype != np.uint8:
        raise UserError(f"format={fmt} stores 8 bits per sample, not {pixels.dtype}: use format=png")
    with atomic_path(path) as temporary:
        if WRITE_FORMATS[fmt] == "PNG":
            with open(temporary, "wb") as file:
                encode_png(file, pixels, icc=icc)
        else:
            image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
            options = _pillow_options(WRITE_FORMATS[fmt], quality) | ({"icc_profile": icc} if icc else {})
            image.save(temporary, format=WRITE_FORMATS[fmt], **options)


# The default of format=jpg. On astronaut enlarged to 1024 px (bicubic), against the pixels written:
# 46.3 dB at 95 with 4:4:4 chroma, 38.9 dB at Pillow's default (75, 4:2:0); 3.3x the bytes.
JPEG_QUALITY = 95


def _pillow_options(writer: str, quality: int | None) -> dict[str, int | bool]:
    """Pillow's save options for a super-resolved picture, whose fine detail is the point of it: JPEG at
    `quality` (None: JPEG_QUALITY) with full-resolution chroma (4:4:4, not Pillow's 4:2:0); WebP
    lossless, or lossy at `quality`."""
    if writer == "JPEG":
        return {"quality": JPEG_QUALITY if quality is None else quality, "subsampling": 0}
    return {"lossless": True} if quality is None else {"quality": quality}
