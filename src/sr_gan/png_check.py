"""A PNG checked before torchvision decodes it: libpng errors crash torchvision's decoder (0.29).

libpng reports a damaged image and torchvision's decoder then ends the process with a segmentation
fault instead of raising (under DDP a rank died without a word). Two kinds are met:
- a damaged copy (a flipped bit, a zero-filled tail): a critical chunk fails its CRC-32;
- image data that is wrong though every CRC holds (a buggy writer, a crafted file): a zlib stream
  that does not inflate ("invalid distance too far back", a wrong Adler-32), ends before the last
  row ("Not enough image data"), or a row whose filter type is not one of PNG's five.
`check_png` finds both as libpng would, without decoding: the chunks' CRCs, then the image data
inflated in bounded pieces (about 45 % of a decode's time: 13 ms for a 2040x1356 RGB file whose
decode takes 29 ms) with each row's filter byte read. What libpng only warns about (data after
the last row) passes, as it decodes. `check_png_file` checks a file once per process: training
without prepared data decodes each of its files again for every crop.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# colour type (IHDR) -> samples per pixel: grey, RGB, palette, grey + alpha, RGBA
_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7's passes: (first column, first row, column step, row step)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_PIECE = 1 << 20  # inflated bytes held at a time
_FILTERS = 5  # None, Sub, Up, Average, Paeth
_MAX_CHECKED = 100_000  # files remembered as checked (a key each: ~200 bytes), then forgotten together
_checked: set[tuple[str, int, int]] = set()  # (path, size, modification time) of the files checked


def check_png_file(path: Path, data: memoryview) -> None:
    """`check_png` of `data`, the bytes of the file `path`, unless this process checked the file
    as it is now (the same size and modification time) before."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _checked:
        check_png(data)
        if len(_checked) >= _MAX_CHECKED:
            _checked.clear()
        _checked.add(key)


def check_png(data: memoryview) -> None:
    """Refuse (OSError, saying what is wrong) a PNG (the file's bytes) that libpng would fail to
    decode after its header: a critical chunk before IEND that fails its CRC, or image data that
    does not inflate to every row with a known filter type. A file cut short before IEND is left
    to the decoder, which raises."""
    header, image_data = _chunks(data)
    if header is not None and len(header) >= 13:
        _check_image_data(header, image_data)


def _chunks(data: memoryview) -> tuple[memoryview | None, list[memoryview]]:
    """IHDR's data and the IDAT chunks' data of `data`, every critical chunk's CRC checked. The
    image ends at IEND, whose CRC nothing decoded depends on (a damaged one reads whole)."""
    header, image_data, position = None, [], 8  # after the PNG signature
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])  # then data, then CRC-32
        end = position + 12 + length
        if end > len(data) or kind == b"IEND":
            break
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if not kind[0] & 0x20 and zlib.crc32(data[position + 4 : end - 4]) != crc:  # upper-case first letter
            raise OSError(f"its {kind.decode('latin-1')} chunk is damaged (CRC mismatch)")
        if kind == b"IHDR":
            header = data[position + 8 : end - 4]
        elif kind == b"IDAT":
            image_data.append(data[position + 8 : end - 4])
        position = end
    if bytes(data[position + 4 : position + 8]) != b"IEND":
        return None, []  # cut short: the decoder says so
    return header, image_data


def _check_image_data(header: memoryview, image_data: list[memoryview]) -> None:
    """Inflate `image_data` (IDAT's) in pieces and read the filter byte of every row IHDR implies."""
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header[:13])
    if colour not in _SAMPLES or interlace not in (0, 1):
        return  # the decoder refuses such a header itself
    starts, total = _row_starts(width, height, _SAMPLES[colour] * depth, interlaced=interlace == 1)
    done = 0
    try:
        for piece in _inflated(image_data):
            first = int(np.searchsorted(starts, done))
            filters = np.frombuffer(piece, np.uint8)[starts[first : np.searchsorted(starts, done + len(piece))] - done]
            if (filters >= _FILTERS).any():
                row = first + int(np.argmax(filters >= _FILTERS))
                raise OSError(f"its image data is damaged (row {row} has filter type {filters.max()}, of 0-4)")
            done += len(piece)
    except zlib.error as err:
        raise OSError(f"its image data is damaged ({err})") from None
    if done < total:
        raise OSError(f"its image data ends early ({done:,} of {total:,} bytes)")


def _inflated(image_data: list[memoryview]) -> Iterator[bytes]:
    """The zlib stream of `image_data` inflated, at most `_PIECE` bytes a piece, to its end (OSError
    where the stream stops before its end, as libpng's "Not enough image data")."""
    inflater = zlib.decompressobj()
    for part in image_data:
        pending: bytes | memoryview = part
        while pending and not inflater.eof:
            yield inflater.decompress(pending, _PIECE)
            pending = inflater.unconsumed_tail
    if not inflater.eof:
        yield inflater.flush()
        raise OSError("its image data ends early (the zlib stream stops before its end)")


def _row_starts(width: int, height: int, bits_per_pixel: int, *, interlaced: bool) -> tuple[np.ndarray, int]:
    """Where each row's filter byte lies in the inflated data, and the data's length (PNG 1.2, 7.2)."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    starts, offset = [], 0
    for column, row, column_step, row_step in passes:
        columns = max(0, -(-(width - column) // column_step))
        rows = max(0, -(-(height - row) // row_step))
        if columns and rows:  # an empty pass has no rows, not even filter bytes
            stride = 1 + (columns * bits_per_pixel + 7) // 8
            starts.append(offset + stride * np.arange(rows, dtype=np.int64))
            offset += stride * rows
    return np.concatenate(starts) if starts else np.zeros(0, np.int64), offset
