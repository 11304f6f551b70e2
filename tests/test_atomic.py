"""Atomic writes keep the permissions a user expects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sr_gan.atomic import atomic_path, remove_stale_temporaries


def _write_private(path: Path) -> None:
    """What safetensors' writer does: the file appears with mode 0600."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(b"weights")
        os.chmod(temporary, 0o600)


def test_a_new_file_gets_the_umask_permissions_not_the_writers(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        _write_private(tmp_path / "new.safetensors")
    finally:
        os.umask(umask)
    assert (tmp_path / "new.safetensors").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["new.safetensors"]  # no temporary left


def test_a_replaced_file_keeps_its_permissions(tmp_path: Path) -> None:
    path = tmp_path / "kept.safetensors"
    path.write_bytes(b"old")
    path.chmod(0o640)
    _write_private(path)
    assert path.read_bytes() == b"weights" and path.stat().st_mode & 0o777 == 0o640


def test_a_file_system_that_refuses_chmod_still_gets_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)  # vfat, some CIFS mounts
    with atomic_path(tmp_path / "w.safetensors") as temporary:
        temporary.write_bytes(b"weights")
    assert (tmp_path / "w.safetensors").read_bytes() == b"weights"


def test_the_data_is_flushed_before_the_rename_and_the_folder_entry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut (which no kill -9 can show) must find the old file or the whole new one: the
    temporary file is fsync'd before it replaces the target, and the folder after."""
    events: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(descriptor: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))  # Linux: the path behind it
        fsync(descriptor)

    def recorded_replace(source: str | Path, target: str | Path) -> None:
        events.append(("replace", str(target)))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", recorded_replace)
    with atomic_path(tmp_path / "w.bin") as temporary:
        temporary.write_bytes(b"x")
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert events[0][1] == str(temporary) and events[1][1] == str(tmp_path / "w.bin") and events[2][1] == str(tmp_path)


def test_stale_temporaries_of_the_named_paths_go_and_nothing_else(tmp_path: Path) -> None:
    """What a writer killed mid-write left beside its target; other names (even [glob] ones) stay."""
    hex32 = "0123456789abcdef" * 2
    target = tmp_path / "a[1].png"
    stale = tmp_path / f".a[1].png.{hex32}.tmp"
    kept = [
        tmp_path / "a[1].png",
        tmp_path / f".a1.png.{hex32}.tmp",  # another output's, which [1] as a glob would match
        tmp_path / f".b.png.{hex32}.tmp",
        tmp_path / ".a[1].png.notes.tmp",  # not a name atomic_path gives
    ]
    for path in (stale, *kept):
        path.write_bytes(b"x")
    remove_stale_temporaries([target, tmp_path / "not yet" / "c.png"])
    assert sorted(tmp_path.iterdir()) == sorted(kept)
