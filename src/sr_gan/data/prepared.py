"""Prepared image folders: every image decoded once into a uint8 `.npy` array that is memory-mapped,
so a training crop reads only its rows instead of decoding a whole 2K PNG.

Made once by ``python -m sr_gan.data.prepare <folder>``; read by `PreparedImages`.

Storage, chosen by measurement (``python -m benchmarks.bench_data --candidates``: one process,
one thread, eight DIV2K-like 2040x1356 PNGs of 4.7 MB, an HR 128 px crop plus its LR x4 32 px crop;
2-core CPU shared with other jobs, so the crops/s move between runs and the ratios less):

    raw: decode HR + LR PNG, then crop (TrainPatchDataset unprepared) 10-18 crops/s          1x
    BasicSR sub-images (480 px every 240, PNG level 3), decode + crop   105-166 crops/s     9-10x
    one flat file holding every image, mapped once                    20k-37k crops/s   ~2000x
    one (3, H, W) .npy per image, maps kept open (what we use)        18k-29k crops/s   ~1700x
    the same with a new map per crop (more images than max_open)      3.3k-4.9k crops/s  ~300x

Per-image `.npy` won: as fast as the flat file (whose 1.1-1.2x is the per-crop Python around our
reader: a dataset item, bounds checks), and a changed source rebuilds one file, a damaged array is
found and rebuilt alone, an interrupted run resumes, and `np.load` opens one. The reference
implementation's sub-images (BasicSR `extract_subimages`) still decode a PNG per crop (short of the
10x target), store 3.8x the PNG bytes because the windows overlap, and over-sample image borders.
(3, H, W) rather than (H, W, 3): a crop is 3 x h runs of w bytes, 2.5x faster to copy out than a
transposing copy. An array costs H x W x 3 bytes, about 1.9x the PNG (DIV2K train HR: 6.6 GB
against 3.5 GB of PNG); see docs/data.md.

A folder is complete only with its `manifest.json`, written last and atomically. While preparing,
each finished image is appended to `manifest.partial.jsonl`, so an interrupted run resumes where it
stopped; a folder without `manifest.json` is half-prepared and refused with the command to rerun.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor

from sr_gan.atomic import atomic_path, remove_stale_temporaries
from sr_gan.errors import UserError
from sr_gan.imageio import IMAGE_EXTENSIONS, MAX_IMAGE_PIXELS, image_size, list_images, read_image

FORMAT = "sr-gan-prepared"
VERSION = 1  # bump when the stored layout changes: older folders are then rebuilt
MANIFEST = "manifest.json"
JOURNAL = "manifest.partial.jsonl"
SUFFIX = ".prepared"
CHUNK_BYTES = 1 << 23
MAX_PIXELS_OPTION = "--max-pixels"  # the prepare tool's pixel limit, named where an image exceeds it

try:  # xxhash comes with wandb; blake2b (12x slower, ~11 ms per 2K image) when it is absent
    import xxhash

    CHECKSUM = "xxh3_64"
except ImportError:  # pragma: no cover - depends on the environment
    xxhash = None
    CHECKSUM = "blake2b"


def default_max_open() -> int:
    """Arrays one reader keeps mapped: a quarter of the descriptors left after 256 for the rest."""
    try:
        import resource  # POSIX only; Windows maps through handles, which have no such small limit
    except ImportError:  # pragma: no cover - depends on the platform
        return 4096
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 4096
    return max(16, (soft - 256) // 4)


def prepared_dir(src_dir: str | Path) -> Path:
    """The default output of `src_dir`: `<src_dir>.prepared` beside it."""
    src = Path(src_dir)
    if not src.name:  # "." or "/": the name of the folder it means
        src = src.resolve()
    return src.with_name(src.name + SUFFIX)


def rerun_command(src_dir: str | Path, out: str | Path | None = None) -> str:
    """The command that (re)prepares `src_dir` into `out` (``--out`` where it is not the default
    `prepared_dir`: without it the command would prepare another folder), for error messages."""
    command = f"python -m sr_gan.data.prepare {shlex.quote(str(src_dir))}"
    if out is not None and Path(out).resolve() != prepared_dir(src_dir).resolve():
        command += f" --out {shlex.quote(str(out))}"
    return command


def _hasher(algorithm: str) -> Callable[[], Any]:
    if algorithm == "xxh3_64":
        if xxhash is None:
            raise UserError("this prepared folder was checksummed with xxh3_64: pip install xxhash to verify it")
        return xxhash.xxh3_64
    if algorithm == "blake2b":
        return lambda: hashlib.blake2b(digest_size=16)
    raise UserError(f"unknown checksum algorithm {algorithm!r}: rerun python -m sr_gan.data.prepare")


def file_checksum(path: Path, algorithm: str = CHECKSUM) -> str:
    """`"<algorithm>:<hex digest>"` of a file's bytes, read in chunks."""
    digest = _hasher(algorithm)()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return f"{algorithm}:{digest.hexdigest()}"


def _source_stat(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"source_bytes": stat.st_size, "source_mtime_ns": stat.st_mtime_ns}


def _array_file(source: Path) -> str:
    """The name of a source image's array in its prepared folder."""
    return source.name + ".npy"


def _store(image: Tensor, path: Path) -> dict[str, Any]:
    """Write a uint8 (3, H, W) image as a `.npy` of that shape (atomically); returns its manifest fields."""
    array = image.contiguous().numpy()  # (3, H, W): a crop copies 3 x h runs of w bytes into place
    try:
        with atomic_path(path) as partial:
            with partial.open("wb") as file:  # a file object: np.save would append .npy to a path
                np.save(file, array)
            size = partial.stat().st_size
            checksum = file_checksum(partial)
    except OSError as err:  # a full disk, a read-only folder
        raise UserError(f"cannot write {path}: {err.strerror or err}") from None
    return {"shape": list(array.shape), "offset": size - array.nbytes, "bytes": size, "checksum": checksum}


def _is_current(entry: dict[str, Any] | None, source: Path, out_dir: Path) -> bool:
    """True if `entry` describes `source` as it is now and its stored file has the recorded size."""
    if entry is None or entry.get("version") != VERSION:
        return False
    if {k: entry.get(k) for k in ("source_bytes", "source_mtime_ns")} != _source_stat(source):
        return False
    stored = out_dir / entry["file"]
    return stored.is_file() and stored.stat().st_size == entry["bytes"]


def _read_records(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Entries by source name from a previous run: the manifest, then the journal (last one wins)."""
    records: dict[str, dict[str, Any]] = {}
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
            records.update({e["name"]: {**e, "version": data.get("version")} for e in data["images"]})
        except (ValueError, KeyError, TypeError):
            pass  # unreadable: everything is rebuilt
    journal = out_dir / JOURNAL
    if journal.is_file():
        for line in journal.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash: that image is rebuilt
            if isinstance(entry, dict) and "name" in entry:  # (the first line is the header)
                records[entry["name"]] = entry
    return records


def _recorded_source(out_dir: Path) -> Path | None:
    """The source folder a prepared folder's manifest (or journal header) names, if readable."""
    for name in (MANIFEST, JOURNAL):
        try:
            with (out_dir / name).open() as file:
                header = json.loads(file.readline() if name == JOURNAL else file.read())
        except (OSError, ValueError):
            continue
        if isinstance(header, dict) and isinstance(header.get("source"), str):
            return Path(header["source"])
    return None


def _check_disk_space(todo: list[Path], out_dir: Path, *, max_pixels: int | None) -> None:
    """Refuse to start when the arrays of `todo` (sizes from their headers) cannot fit."""
    needed = 0
    for path in todo:
        try:
            height, width = image_size(path, max_pixels=max_pixels, key=MAX_PIXELS_OPTION)
        except UserError:
            continue  # reported when it is decoded
        needed += height * width * 3
    free = shutil.disk_usage(out_dir).free
    if needed > free:
        raise UserError(
            f"preparing {len(todo)} images into {out_dir} needs {needed / 1e9:.1f} GB, only {free / 1e9:.1f} GB "
            "free: free some space or choose another --out"
        )


def _progress(enabled: bool) -> Progress | nullcontext[None]:
    if not enabled:
        return nullcontext()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns)


def _holds_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def prepare_folder(
    src_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    progress: bool = True,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> Path:
    """Decode every image of `src_dir` into `out_dir` (default `<src_dir>.prepared`); returns `out_dir`.
    An image above `max_pixels` (None: no limit) is refused from its header, naming ``--max-pixels``.

    Resumable: images whose source is unchanged (size and mtime) and whose array has its recorded
    size are kept; changed, new or damaged ones are (re)built, and arrays of removed sources are
    deleted. `manifest.json` is written last, and only when every image was prepared: an
    unreadable source is reported by name in one `UserError` after all others were prepared.
    """
    src_dir = Path(src_dir)
    out_dir = prepared_dir(src_dir) if out_dir is None else Path(out_dir)
    if not src_dir.is_dir():
        what = "is a file, not a folder" if src_dir.exists() else "does not exist"
        raise UserError(f"image folder {src_dir} {what}: pass the folder of the images to prepare")
    sources = list_images(src_dir)
    if out_dir.is_file():
        raise UserError(f"{out_dir} is a file: pass a folder for the prepared arrays (default {prepared_dir(src_dir)})")
    is_prepared = (out_dir / MANIFEST).is_file() or (out_dir / JOURNAL).is_file()
    if out_dir.is_dir() and not is_prepared and (out_dir.resolve() == src_dir.resolve() or _holds_images(out_dir)):
        raise UserError(
            f"{out_dir} holds images and is no prepared folder: the arrays go to a folder of their own "
            f"(default {prepared_dir(src_dir)})"
        )
    recorded = _recorded_source(out_dir)
    # a moved source may reuse its folder; so may a copied tree (source and <source>.prepared copied
    # together: rsync to node-local scratch), whose original keeps a prepared folder of its own
    copied = recorded is not None and out_dir.resolve() == prepared_dir(src_dir).resolve() != prepared_dir(recorded)
    if recorded is not None and recorded != src_dir.resolve() and recorded.is_dir() and not copied:
        raise UserError(
            f"{out_dir} holds the prepared images of {recorded}, which preparing {src_dir} there would delete: "
            f"choose another --out (default {prepared_dir(src_dir)})"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    records = _read_records(out_dir)
    names = [path.name for path in sources]
    kept = {p.name: records[p.name] for p in sources if _is_current(records.get(p.name), p, out_dir)}
    # arrays of removed sources; a name with a folder in it was not written by us and is left alone
    stale = [records[n]["file"] for n in records.keys() - set(names)]
    stale = [file for file in stale if Path(file).name == file]
    done = (out_dir / MANIFEST).is_file() and not (out_dir / JOURNAL).exists() and recorded == src_dir.resolve()
    if len(kept) == len(sources) and not stale and done:  # (a moved or copied folder's manifest is rewritten)
        if progress:
            print(f"{src_dir}: {len(sources)} images already prepared in {out_dir}")
        return out_dir

    todo = [p for p in sources if p.name not in kept]
    _check_disk_space(todo, out_dir, max_pixels=max_pixels)
    # a run killed mid-write left a temporary beside the array (or journal) it was writing: each ~8 MB for DIV2K
    remove_stale_temporaries([out_dir / JOURNAL, out_dir / MANIFEST, *(out_dir / _array_file(p) for p in todo)])
    # From here the folder is incomplete: the manifest goes, the journal carries what is kept.
    (out_dir / MANIFEST).unlink(missing_ok=True)
    header = {"format": FORMAT, "version": VERSION, "source": str(src_dir.resolve()), "layout": "CHW uint8 .npy"}
    with atomic_path(out_dir / JOURNAL) as partial:
        partial.write_text("".join(json.dumps(r) + "\n" for r in [header, *kept.values()]))
    for file in stale:
        (out_dir / file).unlink(missing_ok=True)

    entries, failed = dict(kept), []
    with _progress(progress) as bar, (out_dir / JOURNAL).open("a") as journal:
        task = bar.add_task(f"preparing {src_dir}", total=len(todo)) if bar is not None else None
        for source in todo:
            stat = _source_stat(source)  # before decoding: a source changed meanwhile is rebuilt next run
            try:
                image = read_image(source, max_pixels=max_pixels, key=MAX_PIXELS_OPTION)  # (3, H, W) uint8
            except UserError as err:
                failed.append((source.name, str(err)))
            else:
                entry = {"name": source.name, "file": _array_file(source), **stat, "version": VERSION}
                entry.update(_store(image, out_dir / entry["file"]))
                journal.write(json.dumps(entry) + "\n")
                journal.flush()
                entries[source.name] = entry
            if bar is not None:
                bar.advance(task)
    if failed:
        reason = failed[0][1]  # names the file
        others = f" and {len(failed) - 1} more ({', '.join(n for n, _ in failed[1:])})" if len(failed) > 1 else ""
        raise UserError(
            f"{reason}{others}; the {len(entries)} other images of {src_dir} are prepared: fix or remove "
            f"{'them' if others else 'it'} and rerun {rerun_command(src_dir, out_dir)}"
        )
    images = ",\n".join(json.dumps(_manifest_entry(entries[name])) for name in names)  # one line each
    with atomic_path(out_dir / MANIFEST) as partial:
        partial.write_text(json.dumps(header)[:-1] + f', "images": [\n{images}\n]}}\n')
    (out_dir / JOURNAL).unlink()
    if progress:
        print(f"{src_dir}: {len(todo)} images prepared, {len(kept)} already were, in {out_dir}")
    return out_dir


def _manifest_entry(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k != "version"}  # the manifest carries the version once


class PreparedImages:
    """Read crops of a prepared folder; memory maps open lazily in each process (picklable).

    Opening checks the manifest and the size of every array (a truncated file is found here);
    `verify()` also recomputes the checksums. At most `max_open` arrays stay mapped per process,
    since each map holds a file descriptor; the default is a quarter of the process's descriptor
    limit less 256 (HR, LR and validation readers share it; 192 under the common 1024 limit, all
    of DIV2K under 4096). A crop of an array that is not mapped maps it again: 6x slower, still
    about 300x faster than decoding the PNG.
    """

    def __init__(self, folder: str | Path, *, max_open: int | None = None) -> None:
        self.folder = Path(folder)
        self.max_open = default_max_open() if max_open is None else max_open
        manifest = self.folder / MANIFEST
        if not manifest.is_file():
            source = self._source_hint()
            state = "is half-prepared (no manifest.json)" if self.folder.is_dir() else "does not exist"
            raise UserError(f"prepared folder {self.folder} {state}: run {rerun_command(source, self.folder)}")
        try:
            data = json.loads(manifest.read_text())
            images, version, self.source = data["images"], data["version"], Path(data["source"])
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(
                f"{manifest} is unreadable ({err}): run {rerun_command(self._source_hint(), self.folder)}"
            ) from None
        if data.get("format") != FORMAT or version != VERSION:
            raise UserError(
                f"{self.folder} was prepared in format version {version}, this sr-gan reads {VERSION}: "
                f"run {rerun_command(self._rerun_source(), self.folder)}"
            )
        self._entries = images
        self.names: list[str] = [e["name"] for e in images]
        for entry in images:
            path = self._array_path(manifest, entry)
            size = path.stat().st_size if path.is_file() else None
            if size != entry["bytes"]:
                found = "is missing" if size is None else f"has {size} bytes, {entry['bytes']} expected (truncated?)"
                raise UserError(
                    f"prepared array {path} {found}: run {rerun_command(self._rerun_source(), self.folder)}"
                )
        self._maps: OrderedDict[int, np.ndarray] = OrderedDict()

    def _array_path(self, manifest: Path, entry: dict[str, Any]) -> Path:
        """The array file of a manifest `entry`: a plain name in this folder, no link. A manifest that
        names another file (`/home/me/.ssh/id_rsa`, `../x`, a link to one) would have it read as pixels
        and shown in the run's samples: a one-line UserError."""
        path = self.folder / str(entry["file"])
        if Path(str(entry["file"])).name != entry["file"] or path.is_symlink():
            raise UserError(
                f"{manifest}: the array of {entry['name']} is {entry['file']!r}, not a file of {self.folder} (a path "
                "or a link): the manifest was edited or crafted; "
                f"run {rerun_command(self._rerun_source(), self.folder)}"
            )
        return path

    def _source_hint(self) -> Path:
        """The source folder the folder's manifest or the journal of an interrupted run names, else the
        folder minus `.prepared`."""
        recorded = _recorded_source(self.folder)
        return recorded if recorded is not None else self._beside()

    def _rerun_source(self) -> Path:
        """The source to prepare again: the folder beside this one (``<source>.prepared``) where there is
        one, the recorded source otherwise (a copied tree's manifest names the original's)."""
        beside = self._beside()
        return beside if self.folder.name.endswith(SUFFIX) and beside.is_dir() else self.source

    def _beside(self) -> Path:
        """This folder minus `.prepared`: where `prepared_dir` puts the prepared images of that source."""
        return self.folder.with_name(self.folder.name.removesuffix(SUFFIX))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_maps": OrderedDict()}  # maps are per process; never pickle data

    def __len__(self) -> int:
        return len(self._entries)

    def size(self, index: int) -> tuple[int, int]:
        """(H, W) of image `index`."""
        _, height, width = self._entries[index]["shape"]
        return height, width

    def _array(self, index: int) -> np.ndarray:
        """The (3, H, W) uint8 memory map of image `index`, from the per-process LRU of open maps."""
        array = self._maps.get(index)
        if array is None:
            entry = self._entries[index]
            path, offset, shape = self.folder / entry["file"], entry["offset"], tuple(entry["shape"])
            array = np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=shape)
            self._maps[index] = array
            if len(self._maps) > self.max_open:
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(index)
        return array

    def crop(self, index: int, top: int, left: int, height: int, width: int) -> Tensor:
        """Pixels [top : top + height, left : left + width] of image `index`: uint8 (3, height, width).

        Only those rows are read from the file (through the page cache). The crop must lie inside.
        """
        image_height, image_width = self.size(index)
        inside = 0 <= top and 0 <= left and 0 < height and 0 < width
        if not (inside and top + height <= image_height and left + width <= image_width):
            raise IndexError(
                f"crop (top={top}, left={left}, height={height}, width={width}) is not inside "
                f"{self.names[index]} ({image_height}x{image_width})"
            )
        window = self._array(index)[:, top : top + height, left : left + width]  # (3, h, w) view of the map
        return torch.from_numpy(np.array(window))  # one copy, C-contiguous, no longer tied to the map

    def image(self, index: int) -> Tensor:
        """The whole image `index`: uint8 (3, H, W)."""
        return self.crop(index, 0, 0, *self.size(index))

    def verify(self, *, progress: bool = False) -> None:
        """Recompute the checksum of every array; `UserError` naming the ones that changed."""
        bad = []
        with _progress(progress) as bar:
            task = bar.add_task(f"verifying {self.folder}", total=len(self)) if bar is not None else None
            for entry in self._entries:
                algorithm = entry["checksum"].partition(":")[0]
                try:
                    intact = file_checksum(self.folder / entry["file"], algorithm) == entry["checksum"]
                except OSError:
                    intact = False
                if not intact:
                    bad.append(entry["file"])
                if bar is not None:
                    bar.advance(task)
        if bad:
            raise UserError(
                f"{len(bad)} prepared arrays of {self.folder} changed since preparing ({', '.join(bad)}): "
                f"delete them and run {rerun_command(self._rerun_source(), self.folder)}"
            )

    def stale(self, src_dir: str | Path | None = None) -> list[str]:
        """Source images (of `src_dir`, default the recorded source) added, removed or changed since
        preparing, by name; empty when the prepared folder is current (one stat per image)."""
        src_dir = self.source if src_dir is None else Path(src_dir)
        recorded = {e["name"]: e for e in self._entries}
        current = {p.name: p for p in list_images(src_dir)}
        changed = [
            name
            for name, path in current.items()
            if name not in recorded
            or _source_stat(path) != {k: recorded[name][k] for k in ("source_bytes", "source_mtime_ns")}
        ]
        return sorted([*changed, *(recorded.keys() - current.keys())])


def open_prepared(src_dir: str | Path, prepared: str | Path | None = None) -> PreparedImages | None:
    """The prepared images of `src_dir` (default folder `<src_dir>.prepared`), or None if it was never
    prepared. A half-prepared, damaged or out-of-date folder is a `UserError` naming the fix."""
    folder = prepared_dir(src_dir) if prepared is None else Path(prepared)
    if not folder.exists():
        return None
    images = PreparedImages(folder)
    stale = images.stale(src_dir)
    if stale:
        shown = ", ".join(stale[:3]) + (f" and {len(stale) - 3} more" if len(stale) > 3 else "")
        raise UserError(
            f"{src_dir} changed since it was prepared in {folder} ({shown}): run {rerun_command(src_dir, folder)}"
        )
    return images
