"""Prepared folders: crops equal the decoded PNG bit for bit, damage and half-prepared folders are
found, changed sources are rebuilt (and only they), an unreadable source is named once."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
from torchvision.io import write_png

from sr_gan.config import check_data_folders
from sr_gan.data import prepared as prepared_module
from sr_gan.data.datasets import read_image
from sr_gan.data.prepared import JOURNAL, MANIFEST, VERSION, PreparedImages, open_prepared, prepare_folder, prepared_dir
from sr_gan.errors import UserError
from tests.helpers import png_bomb, run_module

SIZES = {"a.png": (37, 53), "b.png": (64, 41), "c.png": (29, 30)}  # (H, W): odd, tall and wide


def write_images(folder: Path, sizes: dict[str, tuple[int, int]] = SIZES, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    for name, (h, w) in sizes.items():
        write_png(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g), str(folder / name))


def inodes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in folder.glob("*.npy")}


def flip_last_byte(array: Path) -> None:
    """Change an array's bytes, not its size: only the checksum can tell (preparing again keeps it)."""
    data = bytearray(array.read_bytes())
    data[-1] ^= 0xFF
    array.write_bytes(bytes(data))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "hr"
    write_images(folder)
    write_png(torch.randint(0, 256, (1, 20, 33), dtype=torch.uint8), str(folder / "grey.png"))  # read as RGB
    return folder


def test_crops_equal_the_decoded_png_bitwise(source: Path) -> None:
    out = prepare_folder(source, progress=False)
    assert out == source.with_name("hr.prepared")
    images = PreparedImages(out)
    assert images.names == ["a.png", "b.png", "c.png", "grey.png"]  # the order of list_images
    g = torch.Generator().manual_seed(1)
    for i, name in enumerate(images.names):
        decoded = read_image(source / name)  # (3, H, W)
        height, width = decoded.shape[1:]
        assert images.size(i) == (height, width)
        assert torch.equal(images.image(i), decoded)
        for _ in range(5):
            h, w = int(torch.randint(1, height + 1, (), generator=g)), int(torch.randint(1, width + 1, (), generator=g))
            top, left = int(torch.randint(0, height - h + 1, (), generator=g)), int(torch.randint(0, width - w + 1, ()))
            crop = images.crop(i, top, left, h, w)
            assert crop.shape == (3, h, w) and crop.dtype == torch.uint8 and crop.is_contiguous()
            assert torch.equal(crop, decoded[:, top : top + h, left : left + w])
    images.verify()  # the recorded checksums are those of the files


def test_reader_pickles_without_its_maps_and_refuses_crops_outside(source: Path) -> None:
    images = PreparedImages(prepare_folder(source, progress=False), max_open=2)
    for i in range(len(images)):  # more images than max_open: maps are evicted and reopened
        images.crop(i, 0, 0, 8, 8)
    assert len(images._maps) == 2
    copy = pickle.loads(pickle.dumps(images))  # a spawned DataLoader worker gets this
    assert len(pickle.dumps(images)) < 4000 and len(copy._maps) == 0  # no pixels travel, maps reopen
    assert torch.equal(copy.crop(1, 3, 4, 20, 10), images.crop(1, 3, 4, 20, 10))
    with pytest.raises(IndexError, match="a.png"):
        images.crop(0, 30, 0, 8, 8)  # rows 30..37 of a 37-row image: one row too many
    with pytest.raises(IndexError):
        images.crop(0, -1, 0, 8, 8)


def test_truncated_array_is_found_and_rebuilt_alone(source: Path) -> None:
    out = prepare_folder(source, progress=False)
    before = inodes(out)
    array = out / "b.png.npy"
    array.write_bytes(array.read_bytes()[:-100])
    with pytest.raises(UserError, match=r"b\.png\.npy has 7900 bytes, 8000 expected .*sr_gan\.data\.prepare .*hr$"):
        PreparedImages(out)
    prepare_folder(source, progress=False)
    after = inodes(out)
    assert after["b.png.npy"] != before["b.png.npy"]
    assert {k: v for k, v in after.items() if k != "b.png.npy"} == {k: v for k, v in before.items() if k != "b.png.npy"}
    assert torch.equal(PreparedImages(out).image(1), read_image(source / "b.png"))


def test_changed_bytes_fail_verify(source: Path) -> None:
    out = prepare_folder(source, progress=False)
    flip_last_byte(out / "c.png.npy")
    images = PreparedImages(out)
    with pytest.raises(UserError, match=r"1 prepared arrays .*\(c\.png\.npy\)"):
        images.verify()


def test_missing_manifest_is_half_prepared(source: Path) -> None:
    out = prepare_folder(source, progress=False)
    (out / MANIFEST).unlink()
    with pytest.raises(UserError, match=r"hr\.prepared is half-prepared .*run python -m sr_gan\.data\.prepare .*hr$"):
        PreparedImages(out)
    with pytest.raises(UserError, match="half-prepared"):
        open_prepared(source)
    assert open_prepared(source.with_name("never")) is None  # never prepared: use the raw images


def test_interrupted_run_is_half_prepared_then_resumes(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls, stopped = [], []

    def read_then_stop(path: Path, **limit: object) -> torch.Tensor:
        calls.append(path.name)
        if len(calls) == 3 and not stopped:
            stopped.append(path.name)
            raise KeyboardInterrupt  # the user stops the first run at the third image
        return read_image(path, **limit)

    monkeypatch.setattr(prepared_module, "read_image", read_then_stop)
    with pytest.raises(KeyboardInterrupt):
        prepare_folder(source, progress=False)
    out = prepared_dir(source)
    assert sorted(inodes(out)) == ["a.png.npy", "b.png.npy"] and not (out / MANIFEST).exists()
    with pytest.raises(UserError, match=f"half-prepared.*{source}"):  # the journal names the source
        PreparedImages(out)
    before = inodes(out)
    calls.clear()
    prepare_folder(source, progress=False)
    assert calls == ["c.png", "grey.png"]  # the first two were kept
    assert {k: inodes(out)[k] for k in before} == before
    assert len(PreparedImages(out)) == 4


def test_a_killed_runs_temporary_array_is_removed_by_the_next_run(source: Path) -> None:
    """kill -9 while an array is written leaves its temporary beside it (~8 MB for a DIV2K image):
    the run that rebuilds that array removes it; a temporary of another name stays."""
    out = prepared_dir(source)
    prepare_folder(source, progress=False)
    (out / "c.png.npy").unlink()  # the array the killed run was writing
    left = out / f".c.png.npy.{'0' * 32}.tmp"
    other = out / f".notes.txt.{'1' * 32}.tmp"
    left.write_bytes(b"half an array")
    other.write_bytes(b"someone else's")
    prepare_folder(source, progress=False)
    assert not left.exists() and other.exists()
    assert len(PreparedImages(out)) == 4


def test_a_complete_folder_holds_its_arrays_and_manifest_and_a_rerun_rewrites_nothing(
    source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The journal goes once the manifest is written; a second run over an unchanged source says so
    and keeps the manifest (a rerun that rewrote it left the folder half-prepared meanwhile)."""
    out = prepare_folder(source, progress=False)
    arrays = [f"{name}.npy" for name in ("a.png", "b.png", "c.png", "grey.png")]
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, *arrays])
    prepare_folder(source)
    assert capsys.readouterr().out == f"{source}: 4 images already prepared in {out}\n"


def test_another_format_version_is_refused_then_rebuilt(source: Path) -> None:
    """A folder of an older layout (format version) is refused by the reader with the command to
    rerun, and that run rebuilds every array, not only the changed sources."""
    out = prepare_folder(source, progress=False)
    before = inodes(out)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps(manifest | {"version": VERSION - 1}))
    rerun = rf"run python -m sr_gan\.data\.prepare {source}$"
    with pytest.raises(
        UserError, match=rf"prepared in format version {VERSION - 1}, this sr-gan reads {VERSION}: {rerun}"
    ):
        PreparedImages(out)
    prepare_folder(source, progress=False)
    after = inodes(out)
    assert after.keys() == before.keys() and all(after[name] != before[name] for name in before)
    assert json.loads((out / MANIFEST).read_text())["version"] == VERSION and len(PreparedImages(out)) == 4


def test_a_recorded_file_in_another_folder_is_never_deleted(source: Path, tmp_path: Path) -> None:
    """The arrays of removed sources are deleted, but only files of the prepared folder: an entry
    naming `../victim.npy` (a hand-edited or foreign manifest) is not ours to delete."""
    out = prepare_folder(source, progress=False)
    victim = tmp_path / "victim.npy"
    victim.write_bytes(b"someone else's")
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["images"].append(manifest["images"][0] | {"name": "gone.png", "file": "../victim.npy"})
    (out / MANIFEST).write_text(json.dumps(manifest))
    prepare_folder(source, progress=False)
    assert victim.read_bytes() == b"someone else's"


@pytest.mark.parametrize("link", [False, True])
def test_a_manifest_naming_a_file_outside_its_folder_is_refused_not_read_as_pixels(
    source: Path, tmp_path: Path, link: bool
) -> None:
    """A foreign manifest whose entry names another file (an absolute path with its size and a shape
    that fits, or a link in the folder) had that file read as the image, and shown in the samples."""
    out = prepare_folder(source, progress=False)
    secret = tmp_path / "id_rsa"
    secret.write_bytes(b"PRIVATE KEY " * 3)  # 36 bytes: a (3, 3, 4) image
    manifest = json.loads((out / MANIFEST).read_text())
    if link:
        (out / "a.png.npy").unlink()
        (out / "a.png.npy").symlink_to(secret)
    named = "a.png.npy" if link else str(secret)
    manifest["images"][0] |= {"file": named, "offset": 0, "bytes": 36, "shape": [3, 3, 4]}
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=rf"the array of a\.png is '{re.escape(named)}', not a file of .*hr\.prepared"):
        PreparedImages(out)


def test_preparing_is_refused_before_any_array_when_they_cannot_fit(
    source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each image needs H x W x 3 bytes (one byte short of the sum is refused, the sum is enough)."""
    needed = sum(3 * height * width for height, width in [*SIZES.values(), (20, 33)])
    free = {"bytes": needed - 1}
    monkeypatch.setattr(prepared_module.shutil, "disk_usage", lambda path: SimpleNamespace(free=free["bytes"]))
    with pytest.raises(UserError, match=rf"preparing 4 images into {prepared_dir(source)} needs 0\.0 GB, only 0\.0"):
        prepare_folder(source, progress=False)
    assert not list(prepared_dir(source).glob("*.npy"))
    free["bytes"] = needed
    assert len(PreparedImages(prepare_folder(source, progress=False))) == 4


def test_changed_added_and_removed_sources(source: Path) -> None:
    out = prepare_folder(source, progress=False)
    before = inodes(out)
    write_images(source, {"a.png": (37, 53)}, seed=7)  # new pixels, same name and size
    stat = (source / "a.png").stat()
    os.utime(source / "a.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # coarse-mtime filesystems
    write_images(source, {"d.png": (12, 12)})
    (source / "c.png").unlink()
    with pytest.raises(UserError, match=r"changed since it was prepared .*\(a\.png, c\.png, d\.png\)"):
        open_prepared(source)

    prepare_folder(source, progress=False)
    images = open_prepared(source)
    assert images is not None and images.names == ["a.png", "b.png", "d.png", "grey.png"]
    assert torch.equal(images.image(0), read_image(source / "a.png"))
    after = inodes(out)
    assert after["a.png.npy"] != before["a.png.npy"] and after["b.png.npy"] == before["b.png.npy"]
    assert not (out / "c.png.npy").exists()  # a removed source's array goes too
    assert [e["name"] for e in json.loads((out / MANIFEST).read_text())["images"]] == images.names


def test_training_refuses_an_out_of_date_prepared_folder_at_start_up(source: Path, make_cfg) -> None:
    """Before the run folder is written (it was refused from the data module, leaving a failed run)."""
    cfg = make_cfg("data=folder", f"data.train_hr_dir={source}", f"data.val_hr_dir={source}")
    check_data_folders(cfg)  # never prepared: decoded from the PNGs
    prepare_folder(source, progress=False)
    check_data_folders(cfg)  # current
    write_images(source, {"d.png": (12, 12)})
    with pytest.raises(UserError, match=r"changed since it was prepared .*\(d\.png\): run python -m sr_gan"):
        check_data_folders(cfg)
    cfg.data.use_prepared = False
    check_data_folders(cfg)  # the PNGs are read: nothing to refuse


@pytest.mark.slow  # the CLI in a subprocess
def test_unreadable_source_is_named_once_and_the_rest_is_prepared(source: Path) -> None:
    (source / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    result = run_module("sr_gan.data.prepare", str(source), "--no-progress")
    assert result.returncode == 2, result.stderr
    assert (result.stdout + result.stderr).count("bad.png") == 1, result.stderr
    assert "Traceback" not in result.stderr  # (libpng may print its own unnamed line before ours)
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot read image")
    out = prepared_dir(source)
    assert sorted(inodes(out)) == ["a.png.npy", "b.png.npy", "c.png.npy", "grey.png.npy"]
    with pytest.raises(UserError, match="half-prepared"):  # not complete while an image is missing
        PreparedImages(out)

    before = inodes(out)
    (source / "bad.png").unlink()
    prepare_folder(source, progress=False)
    assert inodes(out) == before and len(PreparedImages(out)) == 4


def test_cli_an_image_above_the_pixel_limit_names_its_own_option(
    source: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The header check is shared with training, whose data.max_image_pixels this tool has not: the
    error names --max-pixels, which lets a genuine large image through (0: no limit)."""
    from sr_gan.data.prepare import main

    png_bomb(source / "huge.png", 20_000, 20_000)  # 4e8 pixels claimed in its header
    with pytest.raises(SystemExit):
        main([str(source), "--no-progress"])
    err = capsys.readouterr().err
    assert "huge.png is 20000x20000" in err and "raise --max-pixels;" in err and "data.max_image_pixels" not in err
    with pytest.raises(SystemExit):
        main([str(source), "--no-progress", "--max-pixels", "0"])
    assert "error: cannot read image" in capsys.readouterr().err  # past the header: decoded, and empty
    free = SimpleNamespace(free=10**9)  # the lifted limit counts the image's 1.2 GB of arrays before any is written
    with mock.patch("sr_gan.data.prepared.shutil.disk_usage", return_value=free), pytest.raises(SystemExit):
        main([str(source), "--no-progress", "--max-pixels", "0"])
    assert "needs 1.2 GB, only 1.0 GB free" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:
        main([str(source), "--no-progress", "--max-pixels", "-1"])
    assert refused.value.code == 2 and "--max-pixels -1: give a number of pixels, or 0" in capsys.readouterr().err


def test_an_output_that_holds_images_or_is_a_file_is_refused(source: Path, tmp_path: Path) -> None:
    """The arrays never land among a user's images (the source itself or another image folder)."""
    before = sorted(p.name for p in source.iterdir())
    for out in (source, tmp_path / "other"):
        write_images(tmp_path / "other")
        with pytest.raises(UserError, match="holds images and is no prepared folder"):
            prepare_folder(source, out, progress=False)
    assert sorted(p.name for p in source.iterdir()) == before
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="notes.txt is a file"):
        prepare_folder(source, tmp_path / "notes.txt", progress=False)


@pytest.mark.parametrize("complete", [True, False])
def test_another_sources_prepared_folder_is_refused_unless_that_source_moved(
    source: Path, tmp_path: Path, complete: bool
) -> None:
    """--out naming the prepared folder of another live source would delete its arrays as stale: refused,
    for a complete folder (manifest) and a half-prepared one (journal). A source that has moved away
    (its recorded folder gone) may reuse it: unchanged images are kept."""
    other = tmp_path / "other"
    write_images(other, {"x.png": (16, 16)})
    out = prepare_folder(other, tmp_path / "shared", progress=False)
    if not complete:  # as a run interrupted after its journal was written
        (out / MANIFEST).unlink()
        (out / JOURNAL).write_text(json.dumps({"source": str(other.resolve())}) + "\n")
    before = inodes(out)
    with pytest.raises(UserError, match=rf"holds the prepared images of {other}, .*choose another --out"):
        prepare_folder(source, out, progress=False)
    assert inodes(out) == before
    moved = other.rename(tmp_path / "moved")
    prepare_folder(moved, out, progress=False)
    assert (out / MANIFEST).is_file() and (inodes(out) == before or not complete)


def test_a_copied_tree_is_prepared_again_in_its_copy_and_names_its_own_source(source: Path, tmp_path: Path) -> None:
    """A source and its <source>.prepared copied together (rsync to node-local scratch): the manifest
    names the original, which still exists. Refusing the copy as another source's folder made the
    printed fix (prepare the copy) fail; the fix for a truncated array named the original."""
    prepare_folder(source, progress=False)
    copy = tmp_path / "scratch" / "hr"
    for folder in (source, prepared_dir(source)):
        shutil.copytree(folder, copy.parent / folder.name)  # copy2: sizes and mtimes as cp -a keeps them
    before = inodes(prepared_dir(copy))
    prepare_folder(copy, progress=False)  # nothing changed: every array kept, the manifest now names the copy
    assert inodes(prepared_dir(copy)) == before and PreparedImages(prepared_dir(copy)).source == copy.resolve()
    assert PreparedImages(prepared_dir(source)).source == source.resolve()  # the original's, untouched
    array = next(prepared_dir(source).glob("*.npy"))
    shutil.copyfile(array, prepared_dir(copy) / array.name)
    os.truncate(prepared_dir(copy) / array.name, 8)
    with pytest.raises(UserError, match=rf"truncated\?\): run python -m sr_gan.data.prepare {copy}$"):
        PreparedImages(prepared_dir(copy))


def test_verify_of_a_copied_tree_names_the_copy_as_the_source_to_prepare(source: Path, tmp_path: Path) -> None:
    """A copied tree read as it is (not prepared again: its manifest names the original): a changed
    array's fix prepares the copy, as the truncated array's does (it named the original, whose
    arrays are fine)."""
    prepare_folder(source, progress=False)
    copy = tmp_path / "scratch" / "hr"
    for folder in (source, prepared_dir(source)):
        shutil.copytree(folder, copy.parent / folder.name)
    array = next(prepared_dir(copy).glob("*.npy"))
    data = bytearray(array.read_bytes())
    data[-1] ^= 0xFF  # same size: found by the checksum alone
    array.write_bytes(bytes(data))
    with pytest.raises(
        UserError, match=rf"changed since preparing .*: delete them and run python -m sr_gan.data.prepare {copy}$"
    ):
        PreparedImages(prepared_dir(copy)).verify(progress=False)


def test_verify_of_a_folder_prepared_elsewhere_names_its_source(source: Path, tmp_path: Path) -> None:
    """A folder prepared with --out (not `<source>.prepared`): a changed array's fix prepares the
    recorded source, not the folder of arrays itself, into that folder (without --out the printed
    command prepared `<source>.prepared` and left the folder training reads as it was)."""
    arrays = tmp_path / "arrays"
    prepare_folder(source, arrays, progress=False)
    flip_last_byte(next(arrays.glob("*.npy")))
    fix = rf"delete them and run python -m sr_gan.data.prepare {source} --out {arrays}$"
    with pytest.raises(UserError, match=rf"changed since preparing .*: {fix}"):
        PreparedImages(arrays).verify(progress=False)


def test_cli_ctrl_c_is_one_line_saying_the_same_command_goes_on(
    source: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was KeyboardInterrupt's traceback; what was prepared is kept (each array whole, journaled)."""
    from sr_gan.data import prepare

    def interrupted(*args: object, **kwargs: object) -> Path:
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare, "prepare_folder", interrupted)
    with pytest.raises(SystemExit) as info:
        prepare.main([str(source)])
    assert info.value.code == 130
    assert capsys.readouterr().err == (
        f"Ctrl-C: stopped while preparing {source}; the images prepared so far are kept: run the same command "
        "again to go on\n"
    )


def test_cli_a_missing_source_leaves_no_output_folder(tmp_path: Path) -> None:
    result = run_module("sr_gan.data.prepare", str(tmp_path / "nosuch"), "--no-progress")
    assert result.returncode == 2 and "nosuch does not exist" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_file_given_as_the_source_folder_is_named_a_file(source: Path) -> None:
    with pytest.raises(UserError, match=r"a\.png is a file, not a folder: pass the folder of the images"):
        prepare_folder(source / "a.png", progress=False)


def test_cli_an_unwritable_output_is_one_line(source: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    result = run_module("sr_gan.data.prepare", str(source), "--out", str(tmp_path / "notes.txt" / "p"), "--no-progress")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        result.stderr.strip() == f"error: --out={tmp_path / 'notes.txt' / 'p'} is not writable (Not a directory): "
        "pass a folder you can write to"
    )


@pytest.mark.slow  # one generated 2K image: a few seconds
def test_data_benchmark_runs_and_prepared_beats_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import bench_data

    monkeypatch.setenv("SR_GAN_BENCH_DIR", str(tmp_path))
    figures = bench_data.measure(1, [0], seconds=0.05)
    per_worker = figures["per_worker"]
    assert per_worker["prepared, a map per crop"] >= 10 * per_worker["raw PNG decode"]  # the target
    assert figures["loader"][0] > 0
    assert (tmp_path / "div2k_like_v1_1" / "HR.prepared" / MANIFEST).is_file()


def test_an_out_folder_elsewhere_names_the_link_training_needs(tmp_path: Path, capsys) -> None:
    """Training reads only `<folder>.prepared`: a folder prepared with --out elsewhere is said to need a link."""
    from sr_gan.data.prepare import main

    src = tmp_path / "photos"
    src.mkdir()
    write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(src / "a.png"))
    main([str(src), "--out", str(tmp_path / "fast" / "photos.prepared"), "--no-progress"])
    out = capsys.readouterr().out
    assert f"ln -s {tmp_path / 'fast' / 'photos.prepared'} {src}.prepared" in out
    os.symlink(tmp_path / "fast" / "photos.prepared", f"{src}.prepared")
    assert open_prepared(src).names == ["a.png"]  # the link is what training opens
    main([str(src), "--no-progress"])
    assert "ln -s" not in capsys.readouterr().out

    write_png(torch.zeros(3, 8, 8, dtype=torch.uint8), str(src / "b.png"))
    for elsewhere in ("faster", "fastest"):  # over the link made above, then over a folder prepared in place
        main([str(src), "--out", str(tmp_path / elsewhere / "photos.prepared"), "--no-progress"])
        (note,) = (line for line in capsys.readouterr().out.splitlines() if line.startswith("note:"))
        subprocess.run(["sh", "-c", note.partition(": link it, ")[2]], check=True)
        assert Path(f"{src}.prepared").resolve() == (tmp_path / elsewhere / "photos.prepared").resolve()
        assert open_prepared(src).names == ["a.png", "b.png"]
        if elsewhere == "faster":
            os.unlink(f"{src}.prepared")
            main([str(src), "--no-progress"])  # a real folder where training reads
            capsys.readouterr()


def test_training_refuses_two_images_of_one_name_at_start_up(source: Path, make_cfg) -> None:
    """`a.png` and `a.jpg` in a training folder: refused before the run folder is written (the data
    module's refusal came after it, leaving a failed run), naming both files."""
    from PIL import Image

    cfg = make_cfg("data=folder", f"data.train_hr_dir={source}", f"data.val_hr_dir={source}")
    check_data_folders(cfg)
    Image.open(source / "a.png").save(source / "a.jpg")
    with pytest.raises(UserError, match=r"a\.jpg and .*a\.png; .*rename or remove one"):
        check_data_folders(cfg)


def test_cli_prepares_the_next_folder_after_a_failed_one_and_verifies_each(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One folder's error is named in one line and the next folder is still prepared, then exit 2;
    --verify recomputes every checksum (an array whose bytes changed, its size kept, is named)."""
    from sr_gan.data.prepare import main

    missing = tmp_path / "nosuch"
    with pytest.raises(SystemExit) as exited:
        main([str(missing), str(source), "--verify", "--no-progress"])
    out, err = capsys.readouterr()
    assert exited.value.code == 2
    assert err == f"error: image folder {missing} does not exist: pass the folder of the images to prepare\n"
    assert out == f"{prepared_dir(source)}: every checksum matches\n"
    flip_last_byte(prepared_dir(source) / "c.png.npy")
    with pytest.raises(SystemExit) as exited:
        main([str(source), "--verify", "--no-progress"])
    assert exited.value.code == 2 and "(c.png.npy)" in capsys.readouterr().err


def test_cli_refuses_an_out_list_of_another_length_before_any_work(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sr_gan.data.prepare import main

    with pytest.raises(SystemExit) as exited:
        main([str(source), str(source), "--out", str(tmp_path / "one.prepared"), "--no-progress"])
    assert exited.value.code == 2
    assert "--out names 1 folders for 2 inputs: give one per input" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hr"]


def test_cli_a_source_removed_while_preparing_is_one_line(
    source: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An image listed, then deleted before it is read (a FileNotFoundError, no UserError): one
    line naming it and exit 2, not a traceback."""
    from sr_gan.data.prepare import main

    listed = prepared_module.list_images(source)
    monkeypatch.setattr(prepared_module, "list_images", lambda folder: [*listed, folder / "gone.png"])
    with pytest.raises(SystemExit) as exited:
        main([str(source), "--no-progress"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "gone.png" in err


def test_progress_bars_and_the_count_line(
    source: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `python -m sr_gan.data.prepare` shows by default (its tests run with --no-progress)."""
    import rich

    monkeypatch.setenv("COLUMNS", "1000")  # the bar's line whole, long path and count:
    monkeypatch.setattr(rich, "_console", None)  # rich's shared console, made anew with that width
    out = prepare_folder(source, progress=True)
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == f"{source}: 4 images prepared, 0 already were, in {out}"
    assert "4/4" in captured.out + captured.err  # the bar's count (rich writes to the console it finds)
    (out / "b.png.npy").unlink()
    prepare_folder(source, progress=True)
    assert capsys.readouterr().out.splitlines()[-1] == f"{source}: 1 images prepared, 3 already were, in {out}"
    PreparedImages(out).verify(progress=True)
    assert f"verifying {out}" in "".join(capsys.readouterr())


def test_verify_names_an_array_that_cannot_be_read(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = prepare_folder(source, progress=False)
    images = PreparedImages(out)
    checksum = prepared_module.file_checksum

    def unreadable(path: Path, algorithm: str) -> str:
        if path.name == "b.png.npy":
            raise PermissionError(13, "Permission denied")
        return checksum(path, algorithm)

    monkeypatch.setattr(prepared_module, "file_checksum", unreadable)
    with pytest.raises(UserError, match=rf"^1 prepared arrays of {out} changed since preparing \(b\.png\.npy\)"):
        images.verify()


def test_blake2b_checksums_are_verified_where_xxhash_is_missing(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without xxhash (an optional speed-up) arrays are checksummed with blake2b; a folder checksummed
    with xxh3_64 then asks for xxhash; an unknown algorithm asks to prepare again."""
    import hashlib

    out = prepare_folder(source, progress=False)
    array = out / "a.png.npy"
    assert prepared_module.file_checksum(array, "blake2b") == (
        "blake2b:" + hashlib.blake2b(array.read_bytes(), digest_size=16).hexdigest()
    )
    manifest = json.loads((out / MANIFEST).read_text())
    xxh3 = manifest["images"][0]["checksum"]
    for entry in manifest["images"]:
        entry["checksum"] = prepared_module.file_checksum(out / entry["file"], "blake2b")
    (out / MANIFEST).write_text(json.dumps(manifest))
    PreparedImages(out).verify()
    flip_last_byte(array)
    with pytest.raises(UserError, match=r"changed since preparing \(a\.png\.npy\)"):
        PreparedImages(out).verify()
    with pytest.raises(UserError, match=r"^unknown checksum algorithm 'md4': rerun python -m sr_gan\.data\.prepare$"):
        prepared_module.file_checksum(array, "md4")
    monkeypatch.setattr(prepared_module, "xxhash", None)
    with pytest.raises(UserError, match=r"checksummed with xxh3_64: pip install xxhash to verify it$"):
        prepared_module.file_checksum(array, xxh3.partition(":")[0])


def test_a_full_disk_while_storing_an_array_is_one_line(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepared_module.np, "save", full)
    with pytest.raises(UserError, match=r"^cannot write .*a\.png\.npy: No space left on device$"):
        prepare_folder(source, progress=False)
    assert not list(prepared_dir(source).glob("*.npy")) and not list(prepared_dir(source).glob(".*.tmp"))


def test_an_unreadable_manifest_or_a_journal_line_cut_by_a_crash_is_rebuilt(source: Path) -> None:
    out = prepare_folder(source, progress=False)
    (out / MANIFEST).write_text('{"images": [')  # cut mid-write by hand or a crash
    with pytest.raises(
        UserError, match=rf"^{out / MANIFEST} is unreadable \(.*\): run python -m sr_gan\.data\.prepare"
    ):
        PreparedImages(out)
    before = inodes(out)
    prepare_folder(source, progress=False)
    assert all(inodes(out)[name] != inode for name, inode in before.items())  # nothing could be trusted
    assert len(PreparedImages(out)) == 4
    journal = [json.loads(line.rstrip(",")) for line in (out / MANIFEST).read_text().splitlines()[1:-1]]
    (out / MANIFEST).unlink()
    header = {"format": "x"}
    lines = [json.dumps(header), *(json.dumps({**entry, "version": VERSION}) for entry in journal[:2])]
    (out / JOURNAL).write_text("\n".join(lines) + '\n{"name": "c.png", "fi')  # the third line cut by a kill
    before = inodes(out)
    prepare_folder(source, progress=False)
    after = inodes(out)
    assert sorted(name for name in before if after[name] == before[name]) == sorted(e["file"] for e in journal[:2])
