"""Atomic file writes: a user's outputs (weights, checkpoints, images, reports, configs) are whole or absent."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sr_gan.errors import UserError

_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{32}\.tmp")  # the names _temporary_for gives


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one step.

    The temporary file lives in the target's own folder, so the final rename never crosses file
    systems (a cross-device "move" is a copy that truncates the old file first). Its data is
    flushed to disk (fsync) before the rename, and the folder entry after it, so a crash, a
    `kill -9` or a power cut mid-write leaves the old file (or none) rather than a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_for(path)
    try:
        yield temporary
        _fsync(temporary)
        with contextlib.suppress(OSError):  # some file systems (vfat, CIFS) refuse chmod: keep the file
            os.chmod(temporary, _mode_for(path))  # some writers (safetensors) create files 0600
        os.replace(temporary, path)
        _fsync(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def atomic_output(path: str | Path, *, key: str = "out") -> Iterator[Path]:
    """`atomic_path` for a file a command writes at the user's request (its config `key`): a write
    that fails (a full disk, a quota, a file size limit) is one UserError naming the file and the
    fix, and leaves an earlier file at `path` as it was."""
    try:
        with atomic_path(path) as temporary:
            yield temporary
    except OSError as err:
        raise UserError(
            f"cannot write {path}: {err.strerror or err}; free space there or choose another {key}= "
            f"(an earlier {Path(path).name} is left as it was)"
        ) from None


def _temporary_for(path: Path) -> Path:
    """A new hidden name beside `path`: `.<name>.<uuid hex>.tmp`. Unique rather than from
    tempfile.mkstemp, whose 0600 mode the final file would keep."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def remove_stale_temporaries(paths: Iterable[Path]) -> None:
    """Delete the temporary files `atomic_path` left beside `paths` when their writer was killed
    mid-write (`kill -9`, a power cut); those of other names stay. One listing per folder.

    Only for paths this process is about to write: another process writing one of them at the same
    moment would lose its temporary file, and its write would fail (whole or absent all the same)."""
    names: dict[Path, set[str]] = {}
    for path in paths:
        names.setdefault(path.parent, set()).add(path.name)
    for folder, wanted in names.items():
        with contextlib.suppress(FileNotFoundError):  # a folder not made yet holds none
            for entry in folder.iterdir():
                if (match := _TEMPORARY.fullmatch(entry.name)) and match["name"] in wanted:
                    entry.unlink(missing_ok=True)


def probe_folder(folder: Path) -> None:
    """OSError unless a file can be created in `folder`, or in its nearest existing parent when it
    does not exist yet (the writer makes the rest): a refused command leaves no folder behind."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    with tempfile.TemporaryFile(dir=existing):
        pass


def check_writable(out_dir: Path, *, key: str = "out_dir") -> None:
    """Fail in one line naming the setting `key` (``out_dir``, ``--root``), before any work, when
    `out_dir` cannot be made or written to."""
    try:
        probe_folder(out_dir)
    except OSError as err:
        raise UserError(
            f"{key}={out_dir} is not writable ({err.strerror or err}): pass a folder you can write to"
        ) from None


def link_outside(path: Path, folder: Path) -> Path | None:
    """Where `path` points when it is a link to a place outside `folder` (a run folder, or a sweep,
    someone else made may hold such a link to a folder of yours), else None."""
    if path.is_symlink() and not (target := path.resolve()).is_relative_to(folder.resolve()):
        return target
    return None


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _mode_for(path: Path) -> int:
    """The permissions `path` keeps when it is replaced, or a new file's under the process umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read from /proc on Linux (os.umask can only read it by setting it, which
    another thread creating a file at that moment would feel)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    umask = os.umask(0)
    os.umask(umask)
    return umask
