"""Image files: the streaming PNG writer round-trips every kind, and oversized images are refused from
their header (decompression bombs) with our message, never Pillow's."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin
from torchvision.io import ImageReadMode, decode_image

import sr_gan.imageio as imageio
import sr_gan.png_check as png_check
from sr_gan.errors import InputWarning, UserError
from sr_gan.imageio import DataError, image_size, list_images, read_image, read_picture, write_image
from sr_gan.png_check import check_png
from tests.helpers import child_env, keyed_png
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


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_jpeg_and_webp_cannot_take_16_bits(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(UserError, match=f"format={fmt} stores 8 bits"):
        write_image(tmp_path / f"x.{fmt}", np.zeros((4, 4, 3), np.uint16), fmt=fmt)


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_grey_pixels_are_written_as_that_grey_picture_by_pillow(tmp_path: Path, fmt: str) -> None:
    """(H, W, 1) pixels, as `upscale` hands a grey picture to the writer, stored by Pillow's writers."""
    pixels = np.tile(np.linspace(40, 200, 16).round().astype(np.uint8), (12, 1))[..., None]  # a smooth ramp
    write_image(tmp_path / f"g.{fmt}", pixels, fmt=fmt)
    with Image.open(tmp_path / f"g.{fmt}") as image:
        back = np.asarray(image.convert("L")).astype(int)
    assert back.shape == (12, 16) and np.abs(back - pixels[..., 0]).max() <= 6  # the codec's loss


def test_jpeg_is_written_at_quality_95_with_full_chroma_and_webp_lossless(tmp_path: Path) -> None:
    """Pillow's defaults were JPEG quality 75 with 4:2:0 chroma and lossy WebP: an upscale's detail lost."""
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    write_image(tmp_path / "x.jpg", pixels, fmt="jpg")
    with Image.open(tmp_path / "x.jpg") as image:
        assert JpegImagePlugin.get_sampling(image) == 0  # 4:4:4
        assert image.quantization == Image.open(_pillow_jpeg(tmp_path, pixels, quality=95)).quantization
    write_image(tmp_path / "x.webp", pixels, fmt="webp")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.webp")), pixels)  # lossless


def test_quality_is_the_jpeg_and_webp_quality(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    write_image(tmp_path / "x.jpg", pixels, fmt="jpg", quality=60)
    with Image.open(tmp_path / "x.jpg") as image:
        assert image.quantization == Image.open(_pillow_jpeg(tmp_path, pixels, quality=60)).quantization
    write_image(tmp_path / "x.webp", pixels, fmt="webp", quality=60)
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "x.webp")), pixels)  # lossy


def _pillow_jpeg(folder: Path, pixels: np.ndarray, *, quality: int) -> Path:
    """`pixels` saved by Pillow at `quality`: a file whose quantization tables are that quality's."""
    path = folder / f"reference_{quality}.jpg"
    Image.fromarray(pixels).save(path, quality=quality)
    return path


def test_list_images_takes_image_files_of_any_case_sorted(tmp_path: Path) -> None:
    """By extension, in any case; not other files, not a folder named like an image; sorted by name."""
    names = ["f.png", "b.jpeg", "e.webp", "a.PNG", "d.bmp", "c.JPG", "g.Jpeg"]
    for name in names:
        (tmp_path / name).write_bytes(b"")  # listing reads no file
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "photo.tif").write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == sorted(names)


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


def test_our_limit_not_pillows_decides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """200 M pixels: above Pillow's default error threshold (179 M), below ours; Pillow's stays set,
    after a refused image and after a taken one (set here: an earlier test must not decide it)."""
    path = bomb(tmp_path / "panorama.png", 20_000, 10_000)
    pillow_limit = 89_478_485  # Pillow's default
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert image_size(path) == (10_000, 20_000)
        assert image_size(path, max_pixels=None) == (10_000, 20_000)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit  # restored after each open
    with pytest.raises(DataError, match="raise data.max_image_pixels"):
        image_size(path, max_pixels=10**8)
    assert Image.MAX_IMAGE_PIXELS == pillow_limit


def test_an_image_of_exactly_the_limit_is_taken(tmp_path: Path) -> None:
    path = bomb(tmp_path / "edge.png", 300, 200)
    assert image_size(path, max_pixels=300 * 200) == (200, 300)
    with pytest.raises(DataError, match="is 300x200 = 60,000 pixels, above the limit of 59,999"):
        image_size(path, max_pixels=300 * 200 - 1)


def test_a_file_that_is_no_image_is_named_once(tmp_path: Path) -> None:
    """Pillow's reason repeats the path ("cannot identify image file '<path>'"): the line names it once."""
    bad = tmp_path / "notes.png"
    bad.write_bytes(b"not an image")
    for read in (image_size, read_image, read_picture):
        with pytest.raises(DataError) as info:
            read(bad)
        assert str(info.value).startswith(f"cannot read image {bad}: ") and str(info.value).count("notes.png") == 1


def test_a_16_bit_grey_tiff_keeps_its_16_bits(tmp_path: Path) -> None:
    """Pillow's 16-bit grey (mode I;16, not a PNG: torchvision does not read it) is read whole, not
    clipped to 8 bits."""
    levels = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000 + 7
    Image.fromarray(levels).save(tmp_path / "grey16.tif")
    picture = read_picture(tmp_path / "grey16.tif")
    assert picture.bits == 16 and picture.grey and picture.alpha is None
    assert torch.equal(torch.round(picture.rgb[0] * 65535).long(), torch.from_numpy(levels).long().expand(3, -1, -1))


def test_a_float_tiff_is_refused_in_one_line_not_read_black(tmp_path: Path) -> None:
    """Mode F (0..1 floats here) was converted to 8 bits by clipping: a black picture, without a word."""
    path = tmp_path / "float.tif"
    Image.fromarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)).save(path)
    with pytest.raises(DataError) as info:
        read_picture(path)
    assert str(info.value) == (
        f"image {path} holds floating-point pixels, which sr-gan does not read (their range is not in the file): "
        "save it as a 16-bit PNG or TIFF"
    )


@pytest.mark.parametrize("suffix", ["tif", "pgm"])
def test_32_bit_integer_greys_within_16_bits_stay_16_bit(tmp_path: Path, suffix: str) -> None:
    """Pillow reads a 16-bit PGM, and a 32-bit integer TIFF, as mode I: clipped to 255 before, now its levels."""
    levels = np.arange(12).reshape(3, 4) * 5000 + 7
    path = tmp_path / f"grey.{suffix}"
    Image.fromarray(levels.astype(np.int32 if suffix == "tif" else np.uint16)).save(path)
    assert Image.open(path).mode == "I"
    picture = read_picture(path)
    assert picture.bits == 16 and picture.grey
    assert torch.equal(torch.round(picture.rgb[0, 0] * 65535).long(), torch.from_numpy(levels))


@pytest.mark.parametrize("fmt", ["TIFF", "BMP"])
def test_a_bilevel_picture_is_read_as_grey(tmp_path: Path, fmt: str) -> None:
    """Pillow's mode 1 (a black-and-white scan) is grey, so that its output is a grey picture too."""
    path = tmp_path / f"scan.{fmt.lower()}"
    Image.fromarray(np.array([[0, 1, 1], [1, 0, 0]], bool)).save(path, format=fmt)
    picture = read_picture(path)
    assert picture.grey and picture.bits == 8 and picture.rgb[0, 0].tolist() == [[0, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize(("low", "high"), [(0, 70000), (0, 65536), (-1, 0)])
def test_32_bit_integer_greys_beyond_16_bits_are_refused(tmp_path: Path, low: int, high: int) -> None:
    path = tmp_path / "deep.tif"
    Image.fromarray(np.array([[low, high]], np.int32)).save(path)
    with pytest.raises(DataError, match=rf"holds 32-bit integer pixels from {low} to {high}, beyond the 16 bits"):
        read_picture(path)
    Image.fromarray(np.array([[0, 65535]], np.int32)).save(path)  # the 16 bits' ends are read
    assert read_picture(path).rgb[0, 0].tolist() == [[0.0, 1.0]]


def test_training_reads_16_bit_greys_by_their_high_byte_and_refuses_floats(tmp_path: Path) -> None:
    """`read_image` (training and evaluation data) clipped mode I greys at 255 and mode F floats to
    black, as `decode` did."""
    levels = np.arange(12).reshape(3, 4) * 5000 + 7
    Image.fromarray(levels.astype(np.uint16)).save(tmp_path / "grey.pgm")
    pixels = read_image(tmp_path / "grey.pgm")
    assert pixels.dtype == torch.uint8 and torch.equal(
        pixels, torch.from_numpy(levels >> 8).to(torch.uint8).expand(3, 3, 4)
    )
    Image.fromarray(np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)).save(tmp_path / "float.tif")
    with pytest.raises(DataError, match=r"float.tif holds floating-point pixels, which sr-gan does not read"):
        read_image(tmp_path / "float.tif")


@pytest.mark.parametrize("channels", [3, 4])
def test_a_16_bit_colour_tiff_warns_once_that_it_is_read_as_8_bits(tmp_path: Path, channels: int) -> None:
    tifffile = pytest.importorskip("tifffile")  # scikit-image's dependency: Pillow cannot write one
    path = tmp_path / "rgb16.tif"
    alpha = {"extrasamples": ["unassalpha"]} if channels == 4 else {}
    tifffile.imwrite(path, np.full((3, 4, channels), 40000, np.uint16), photometric="rgb", **alpha)
    with pytest.warns(InputWarning) as warned:
        picture = read_picture(path)
    assert [str(w.message) for w in warned] == [
        f"{path} is a 16-bit colour TIFF, which is read as 8 bits: save it as a 16-bit PNG to keep 16"
    ]
    assert picture.bits == 8 and round(float(picture.rgb[0, 0, 0, 0]) * 255) == 40000 >> 8


@pytest.mark.parametrize("depth", [8, 16])
@pytest.mark.parametrize("channels", [1, 3])
def test_a_pngs_transparent_colour_is_alpha_in_any_bit_depth(tmp_path: Path, depth: int, channels: int) -> None:
    """A tRNS colour key is the alpha channel (0 where a pixel has the colour) and the colours keep
    their bit depth. 16-bit RGB was read as 8 bits and fully opaque (Pillow compared the 16-bit key
    with its 8-bit pixels); 16-bit grey lost the key (torchvision drops tRNS)."""
    dtype = np.uint16 if depth == 16 else np.uint8
    top = 2**depth - 1
    pixels = np.random.default_rng(depth + channels).integers(0, top, (6, 5, channels)).astype(dtype)  # < top
    pixels[2, 3] = pixels[4, 1] = colour = (top, 1, top)[:channels]  # two pixels of a colour no other has
    picture = read_picture(keyed_png(tmp_path / "keyed.png", pixels, colour))
    assert picture.bits == depth and picture.grey == (channels == 1) and picture.alpha is not None
    expected_rgb = torch.from_numpy(pixels.astype(np.float64) / (2**depth - 1)).permute(2, 0, 1).expand(3, -1, -1)
    torch.testing.assert_close(picture.rgb[0].double(), expected_rgb, rtol=0, atol=1e-6)
    transparent = (picture.alpha[0, 0] == 0).nonzero().tolist()
    assert transparent == [[2, 3], [4, 1]] and picture.alpha.sum() == picture.alpha.numel() - 2


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


@pytest.mark.parametrize("damage", ["flipped byte", "zero-filled tail"])
@pytest.mark.parametrize("read", ["read_image", "read_picture"])
def test_a_png_with_a_damaged_chunk_is_one_line_naming_it(tmp_path: Path, read: str, damage: str) -> None:
    """A damaged copy of a PNG (a byte flipped in its image data; its second half zeros, as a copy cut
    short on a file system that preallocates) is a DataError naming it. torchvision 0.29's decoder
    crashed the process on libpng's error (a segmentation fault: a training rank died without a word,
    its run.json said running): read in a child process, so that a crash fails this test only."""
    whole = tmp_path / "whole.png"
    write_image(whole, np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8), fmt="png")
    data = bytearray(whole.read_bytes())
    middle = len(data) // 2
    if damage == "flipped byte":
        data[middle] ^= 0xFF
    else:
        data[middle:] = bytes(len(data) - middle)
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    code = f"from pathlib import Path; from sr_gan.imageio import {read}; {read}(Path({str(bad)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr[-2000:]  # raised, not killed by a signal
    expected = f"sr_gan.imageio.UnreadableImage: cannot read image {bad}: its IDAT chunk is damaged (CRC mismatch)"
    assert proc.stderr.strip().splitlines()[-1] == expected


def _png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    """A PNG chunk: length, kind, data and its CRC-32 (`crc` where given: a damaged one)."""
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png(width: int, height: int, *image_data: bytes, depth: int = 8, colour: int = 2, interlace: int = 0) -> bytes:
    """A PNG's bytes: its IHDR, an IDAT chunk of each of `image_data`, IEND."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace))
    idat = b"".join(_png_chunk(b"IDAT", data) for data in image_data)
    return b"\x89PNG\r\n\x1a\n" + header + idat + _png_chunk(b"IEND", b"")


def _rgb_rows(rows: int) -> bytearray:
    """The inflated image data of a 64 x `rows` 8-bit RGB PNG: each row filter type 0, then its pixels."""
    return bytearray(b"".join(b"\x00" + bytes((3 * x + y) % 256 for x in range(64 * 3)) for y in range(rows)))


def _png_with_image_data(path: Path, rows: int, change: str) -> None:
    """A 64 x `rows` RGB PNG whose image data has `change` made before its chunks' CRCs are computed
    (a buggy writer, a crafted file: every CRC holds)."""
    raw = _rgb_rows(rows)
    if change == "bad filter type":
        raw[10 * (1 + 64 * 3)] = 7  # row 10's filter byte: PNG has types 0-4
    stream = bytearray(zlib.compress(bytes(raw[: len(raw) // 2] if change == "short" else raw)))
    if change in ("bad zlib data", "bad Adler-32"):
        stream[2 if change == "bad zlib data" else -1] ^= 0xFF
    if change == "data after the last row":
        stream = bytearray(zlib.compress(bytes(raw) + bytes(500)))
    path.write_bytes(_png(64, rows, bytes(stream)))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("short", "its image data ends early (6,176 of 12,352 bytes)"),
        (
            "bad zlib data",
            "its image data is damaged (Error -3 while decompressing data: invalid distance too far back)",
        ),
        ("bad Adler-32", "its image data is damaged (Error -3 while decompressing data: incorrect data check)"),
        ("bad filter type", "its image data is damaged (row 10 has filter type 7, of 0-4)"),
    ],
)
@pytest.mark.parametrize("read", ["read_image", "read_picture"])
def test_a_png_whose_image_data_is_wrong_under_valid_crcs_is_one_line(
    tmp_path: Path, read: str, change: str, why: str
) -> None:
    """Image data that libpng refuses though every CRC holds ("Not enough image data", a zlib error,
    "bad adaptive filter value") crashed the process in torchvision 0.29's decoder (a segmentation
    fault, exit -11); it is the one line naming the file, found before decoding. Read in a child."""
    bad = tmp_path / "bad.png"
    _png_with_image_data(bad, 64, change)
    code = f"from pathlib import Path; from sr_gan.imageio import {read}; {read}(Path({str(bad)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr[-2000:]  # raised, not killed by a signal
    assert proc.stderr.strip().splitlines()[-1] == f"sr_gan.imageio.UnreadableImage: cannot read image {bad}: {why}"


def test_png_image_data_is_checked_once_per_file_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What libpng only warns about (data after the last row) reads as it decodes; PNGs of every
    colour type, bit depth and Adam7 interlacing shipped with scikit-image and Matplotlib pass; a
    file read again (training crops) is checked once, and again once it changed."""
    import matplotlib
    import skimage

    extra = tmp_path / "extra.png"
    _png_with_image_data(extra, 8, "data after the last row")
    assert read_image(extra).shape == (3, 8, 64)
    shipped = [*Path(skimage.__file__).parent.glob("data/*.png"), *Path(matplotlib.__file__).parent.rglob("*.png")]
    for path in shipped:
        png_check.check_png(memoryview(path.read_bytes()))
    checks: list[bytes] = []
    monkeypatch.setattr(png_check, "check_png", lambda data: checks.append(bytes(data)))
    again = tmp_path / "again.png"
    _png_with_image_data(again, 8, "data after the last row")
    for _ in range(3):
        read_image(again)
    _png_with_image_data(again, 9, "data after the last row")  # another size: another file
    read_image(again)
    assert len(checks) == 2 and checks[1] == again.read_bytes()


def test_the_png_check_is_redone_when_a_file_changed_in_size_or_time_and_after_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file is checked once as it is: rewritten at the same size (a later time), or at another size
    under the same time (a copy that kept its time), it is checked again; a file refused is refused
    again when read again (remembered as checked, the next read would decode it: libpng's crash)."""
    monkeypatch.setattr(png_check, "_checked", set())
    checks: list[int] = []
    monkeypatch.setattr(png_check, "check_png", lambda data: checks.append(len(data)))
    path = tmp_path / "a.png"
    path.write_bytes(bytes(100))
    stat = path.stat()
    for _ in range(2):
        png_check.check_png_file(path, memoryview(path.read_bytes()))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # the same size, a later time
    png_check.check_png_file(path, memoryview(path.read_bytes()))
    path.write_bytes(bytes(101))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # another size, that time
    png_check.check_png_file(path, memoryview(path.read_bytes()))
    assert checks == [100, 100, 101]
    monkeypatch.setattr(png_check, "check_png", check_png)
    bad = tmp_path / "bad.png"
    _png_with_image_data(bad, 8, "short")
    for _ in range(2):
        with pytest.raises(OSError, match="its image data ends early"):
            png_check.check_png_file(bad, memoryview(bad.read_bytes()))


def test_the_files_remembered_as_checked_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """At most `_MAX_CHECKED` files are remembered, then all are forgotten together: training on a
    folder of millions of files does not grow the set without bound."""
    monkeypatch.setattr(png_check, "_checked", set())
    monkeypatch.setattr(png_check, "_MAX_CHECKED", 2)
    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for path in paths:
        _png_with_image_data(path, 2, "")
        png_check.check_png_file(path, memoryview(path.read_bytes()))
        assert len(png_check._checked) <= 2
    assert [key[0] for key in png_check._checked] == [str(paths[2])]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ("one byte short", "its image data ends early (12,351 of 12,352 bytes)"),
        ("filter type 5", "its image data is damaged (row 10 has filter type 5, of 0-4)"),
        ("no end of stream", "its image data ends early (the zlib stream stops before its end)"),
    ],
)
def test_png_data_that_libpng_cannot_decode_is_refused_to_the_last_byte(change: str, why: str) -> None:
    """Each crashes torchvision 0.29's decoder (measured in a child process: exit -11 after libpng's
    "Not enough image data" or "bad adaptive filter value"): the last row one byte short, filter type
    5 (PNG's are 0-4), every row there but the zlib stream not ended."""
    raw = _rgb_rows(64)
    if change == "filter type 5":
        raw[10 * (1 + 64 * 3)] = 5
    if change == "no end of stream":
        deflate = zlib.compressobj()
        stream = deflate.compress(bytes(raw)) + deflate.flush(zlib.Z_SYNC_FLUSH)
    else:
        stream = zlib.compress(bytes(raw[:-1] if change == "one byte short" else raw))
    with pytest.raises(OSError) as info:
        check_png(memoryview(_png(64, 64, stream)))
    assert str(info.value) == why


@pytest.mark.timeout(20)
@pytest.mark.parametrize("where", ["in its IDAT chunk", "in an IDAT chunk of their own"])
def test_image_data_after_the_zlib_streams_end_is_read_as_libpng_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """libpng decodes an image whose zlib stream is followed by more bytes, in its IDAT chunk or in
    another (measured in a child process: "Extra compressed data", a warning); the check stops at the
    stream's end. Inflated in pieces smaller than the image (as every image past 1 MiB is): fed the
    bytes after the end, the inflater keeps them as its unconsumed tail, and the check never ended."""
    monkeypatch.setattr(png_check, "_PIECE", 1000)  # of 3,088 bytes
    stream = zlib.compress(bytes(_rgb_rows(16)))
    parts = [stream + b"garbage"] if where == "in its IDAT chunk" else [stream, b"garbage"]
    path = tmp_path / "extra.png"
    path.write_bytes(_png(64, 16, *parts))
    assert read_image(path).shape == (3, 16, 64)


def test_a_damaged_ancillary_chunk_is_read_as_libpng_reads_it(tmp_path: Path) -> None:
    """libpng only warns about an ancillary chunk (lower-case first letter) that fails its CRC, and
    decodes the image: so does the check (a CRC checked on every chunk refused such a file). After the
    image data, as here: Pillow's look at the header refuses one before it ("cannot identify")."""
    whole = tmp_path / "whole.png"
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    write_image(whole, pixels, fmt="png")
    data = whole.read_bytes()
    damaged = tmp_path / "damaged.png"
    damaged.write_bytes(data[:-12] + _png_chunk(b"tEXt", b"Comment\x00hello", crc=1) + data[-12:])  # before IEND
    assert np.array_equal(read_image(damaged).permute(1, 2, 0).numpy(), pixels)


@pytest.mark.parametrize("piece", [1 + 64 * 3, 7])
@pytest.mark.parametrize("row", [0, 10, 63])
def test_a_bad_filter_type_is_found_and_named_across_inflated_pieces(
    monkeypatch: pytest.MonkeyPatch, piece: int, row: int
) -> None:
    """The image data is inflated in pieces (`_PIECE`, 1 MiB): a filter byte that starts a piece
    (pieces of one row) or lies anywhere in one (pieces of 7 bytes) is read and named by its row."""
    monkeypatch.setattr(png_check, "_PIECE", piece)
    raw = _rgb_rows(64)
    raw[row * (1 + 64 * 3)] = 9
    with pytest.raises(OSError, match=rf"^its image data is damaged \(row {row} has filter type 9, of 0-4\)$"):
        check_png(memoryview(_png(64, 64, zlib.compress(bytes(raw)))))


# Adam7's passes as PNG 1.2 (8.2) lists them: first row, first column, row step, column step
ADAM7 = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]


def _interlaced_grey_png(pixels: np.ndarray, depth: int, cut: int = 0) -> bytes:
    """A grey PNG of `pixels` (H, W; below 2**depth, depth 1 to 8), Adam7-interlaced: each pass the
    rows of its sub-image (none where it is empty), filter byte 0, samples packed, each row padded to
    a byte; the inflated data `cut` bytes short."""
    rows = []
    for row, column, row_step, column_step in ADAM7:
        sub = pixels[row::row_step, column::column_step].astype(np.uint8)
        for line in sub if sub.size else []:
            rows.append(b"\x00" + np.packbits(np.unpackbits(line[:, None], axis=1)[:, 8 - depth :]).tobytes())
    data = b"".join(rows)
    height, width = pixels.shape
    return _png(width, height, zlib.compress(data[: len(data) - cut]), depth=depth, colour=0, interlace=1)


@pytest.mark.parametrize("depth", [1, 8])
@pytest.mark.parametrize(("height", "width"), [(1, 1), (3, 5), (10, 9)])
def test_interlaced_pngs_with_empty_passes_and_part_bytes_are_checked_to_the_last_byte(
    tmp_path: Path, depth: int, height: int, width: int
) -> None:
    """Adam7 images too small to fill every pass (1 x 1: six passes empty, not even a filter byte), of
    widths no pass divides, at 1 bit a sample (rows end in a part byte): the check takes them (Pillow
    reads the pixels back) and refuses the same data one byte short."""
    pixels = np.random.default_rng(height).integers(0, 2**depth, (height, width))
    path = tmp_path / "adam7.png"
    path.write_bytes(_interlaced_grey_png(pixels, depth))
    check_png(memoryview(path.read_bytes()))
    with Image.open(path) as picture:
        assert np.array_equal(np.asarray(picture).astype(int), pixels)
    with pytest.raises(OSError, match=r"^its image data ends early \("):
        check_png(memoryview(_interlaced_grey_png(pixels, depth, cut=1)))


@pytest.mark.parametrize("read", [image_size, read_image, read_picture])
def test_a_file_gone_since_the_listing_is_one_line_naming_it(tmp_path: Path, read) -> None:  # noqa: ANN001
    """A file removed after the start-up scan (read by a worker later): the open's FileNotFoundError is
    a DataError naming the file too, as an undecodable file's is (its reason ended in a stray ':' where
    Python's message names the path: "No such file or directory: '<path>'")."""
    gone = tmp_path / "gone.png"
    with pytest.raises(DataError) as info:
        read(gone)
    assert str(info.value) == f"cannot read image {gone}: [Errno 2] No such file or directory"  # no ':' left


@pytest.mark.parametrize("read", [read_image, read_picture])
def test_a_truncated_bmp_is_one_line_naming_it(tmp_path: Path, read) -> None:  # noqa: ANN001
    """Pillow decodes what torchvision does not (BMP here): its OSError for a cut file is the same one line."""
    Image.fromarray(np.full((40, 40, 3), 9, np.uint8)).save(tmp_path / "whole.bmp")
    cut = tmp_path / "cut.bmp"
    cut.write_bytes((tmp_path / "whole.bmp").read_bytes()[: (tmp_path / "whole.bmp").stat().st_size // 2])
    with pytest.raises(DataError, match=r"^cannot read image .*cut\.bmp: image file is truncated") as info:
        read(cut)
    assert "\n" not in str(info.value)


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
    several = RuntimeError(f"{err}\n  in chunk IDAT\n  at offset 123")  # a reason over several lines: its first
    assert str(imageio._unreadable(tmp_path / "a.png", several)).endswith(": Unsupported image file")
