"""Image files: the streaming PNG writer round-trips every kind, and oversized images are refused from
their header (decompression bombs) with our message, never Pillow's."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

import sr_gan.imageio as imageio
from sr_gan.errors import UserError
from sr_gan.imageio import DataError, image_size, read_image, read_picture, write_image
from tests.helpers import png_bomb as bomb


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_writer_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, channels: int, dtype) -> None:
    """Pixels come back exactly, read by torchvision and by Pillow, over several row steps and chunks."""
    monkeypatch.setattr(imageio, "_ROWS_PER_STEP", 7)
    monkeypatch.setattr(imageio, "_IDAT_BYTES", 1000)
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, np.iinfo(dtype).max + 1, (45, 31, channels)).astype(dtype)  # (H, W, C)
    write_image(tmp_path / "x.png", pixels, fmt="png")
    decoded = decode_image(str(tmp_path / "x.png"), mode=ImageReadMode.UNCHANGED)  # (C, H, W)
    assert decoded.dtype == (torch.uint16 if dtype == np.uint16 else torch.uint8)
    assert np.array_equal(decoded.permute(1, 2, 0).numpy(), pixels)
    with Image.open(tmp_path / "x.png") as image:
        image.load()  # Pillow checks every chunk's CRC and the zlib stream
        if dtype == np.uint8:
            assert np.array_equal(np.asarray(image).reshape(pixels.shape), pixels)
    assert not [p for p in tmp_path.iterdir() if p.name != "x.png"]  # no temporary file left


def test_jpeg_cannot_take_16_bits(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="format=jpg stores 8 bits"):
        write_image(tmp_path / "x.jpg", np.zeros((4, 4, 3), np.uint16), fmt="jpg")


# --- decompression bombs ---------------------------------------------------------------------------


def test_huge_header_is_refused_before_decoding(tmp_path: Path) -> None:
    path = bomb(tmp_path / "bomb.png", 100_000, 100_000)  # 10**10 pixels claimed in 100 bytes
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning would fail here
        for read in (image_size, read_image):
            with pytest.raises(DataError, match=r"bomb\.png is 100000x100000 .* raise data\.max_image_pixels") as err:
                read(path)
            assert "\n" not in str(err.value)
        with pytest.raises(DataError, match=r"bomb\.png .* raise max_pixels"):
            read_picture(path, max_pixels=2**26, key="max_pixels")
        with pytest.raises(DataError, match=r"above the limit of 1,000"):
            image_size(path, max_pixels=1000)


def test_our_limit_not_pillows_decides(tmp_path: Path) -> None:
    """200 M pixels: above Pillow's default error threshold (179 M), below ours; Pillow's stays set."""
    path = bomb(tmp_path / "panorama.png", 20_000, 10_000)
    pillow_limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image_size(path) == (10_000, 20_000)
        assert image_size(path, max_pixels=None) == (10_000, 20_000)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # restored after each open
    with pytest.raises(DataError, match="raise data.max_image_pixels"):
        image_size(path, max_pixels=10**8)


@pytest.mark.parametrize("read", [read_image, read_picture])
def test_a_truncated_png_is_named_with_the_decoders_reason_only(tmp_path: Path, read) -> None:  # noqa: ANN001
    whole = tmp_path / "whole.png"
    write_image(whole, np.full((64, 64, 3), 100, dtype=np.uint8), fmt="png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(DataError) as info:
        read(cut)
    message = str(info.value)
    assert message.startswith(f"cannot read image {cut}: ") and ".cpp" not in message and "\n" not in message


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "GIF"])
@pytest.mark.parametrize("name", ["photo.png", "photo.jpg", "photo.bmp"])
def test_the_decoder_follows_the_content_not_the_name(tmp_path: Path, fmt: str, name: str) -> None:
    """A BMP, TIFF or GIF saved under any image extension reads as its pixels (torchvision's decoder,
    picked by the name, refused a BMP named .png with 'Unsupported image file')."""
    pixels = np.random.default_rng(0).integers(0, 4, (9, 7, 3)).astype(np.uint8) * 60  # few colours: GIF is exact
    Image.fromarray(pixels).save(tmp_path / name, format=fmt)
    assert torch.equal(read_image(tmp_path / name), torch.from_numpy(pixels).permute(2, 0, 1))


@pytest.mark.parametrize("where", ["operator()", "decode_image", "read_file"])
def test_the_decoders_source_location_is_cut_from_the_reason(tmp_path: Path, where: str) -> None:
    err = RuntimeError(f"{where}, /__w/vision/torchvision/csrc/io/image/cpu/x.cpp:67, Unsupported image file")
    assert (
        str(imageio._unreadable(tmp_path / "a.png", err))
        == f"cannot read image {tmp_path / 'a.png'}: Unsupported image file"
    )
