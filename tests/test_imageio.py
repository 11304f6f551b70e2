"""Image files: the streaming PNG writer round-trips every kind, and oversized images are refused from
their header (decompression bombs) with our message, never Pillow's."""

from __future__ import annotations

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


def _png_with_image_data(path: Path, rows: int, change: str) -> None:
    """A 64 x `rows` RGB PNG whose image data has `change` made before its chunks' CRCs are computed
    (a buggy writer, a crafted file: every CRC holds)."""
    raw = bytearray(b"".join(b"\x00" + bytes((3 * x + y) % 256 for x in range(64 * 3)) for y in range(rows)))
    if change == "bad filter type":
        raw[10 * (1 + 64 * 3)] = 7  # row 10's filter byte: PNG has types 0-4
    stream = bytearray(zlib.compress(bytes(raw[: len(raw) // 2] if change == "short" else raw)))
    if change in ("bad zlib data", "bad Adler-32"):
        stream[2 if change == "bad zlib data" else -1] ^= 0xFF
    if change == "data after the last row":
        stream = bytearray(zlib.compress(bytes(raw) + bytes(500)))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 64, rows, 8, 2, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", bytes(stream)) + chunk(b"IEND", b""))


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
