"""Downloads against a loopback HTTP server: checksums, atomic files, safe extraction, skip, CLI."""

from __future__ import annotations

import hashlib
import io
import re
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch
from torchvision.io import encode_png

from sr_gan.data import download
from sr_gan.data.download import Archive, download_and_extract, main
from sr_gan.errors import UserError
from tests.helpers import tool_cfg


def tiny_pngs() -> dict[str, bytes]:
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8, generator=g) for _ in range(3)]
    return {f"set/HR/im{i}.png": encode_png(image).numpy().tobytes() for i, image in enumerate(images)}


def make_zip(path: Path, files: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_tar_gz(path: Path, files: dict[str, bytes]) -> str:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return md5_of(path)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())


def test_zip_download_is_verified_extracted_then_skipped(served: tuple[str, Path], tmp_path: Path) -> None:
    url, folder = served
    files = tiny_pngs()
    sha = make_zip(folder / "pngs.zip", files)
    dest = tmp_path / "data"
    assert download_and_extract(f"{url}/pngs.zip", dest, sha256=sha) == dest
    for name, data in files.items():
        assert (dest / name).read_bytes() == data
    assert leftovers(dest) == [".pngs.zip.extracted"]  # archive deleted, no partial file

    (folder / "pngs.zip").unlink()  # a second run must not ask the server again
    download_and_extract(f"{url}/pngs.zip", dest, sha256=sha)
    assert (dest / "set/HR/im0.png").read_bytes() == files["set/HR/im0.png"]


def test_a_relative_destination_is_extracted_into(
    served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's default is `--root data`, a relative folder: its members are inside it, not escaping."""
    url, folder = served
    files = tiny_pngs()
    sha = make_zip(folder / "pngs.zip", files)
    monkeypatch.chdir(tmp_path)
    download_and_extract(f"{url}/pngs.zip", Path("data"), sha256=sha)
    assert all((tmp_path / "data" / name).read_bytes() == data for name, data in files.items())


def test_tar_gz_download_checked_by_md5(served: tuple[str, Path], tmp_path: Path) -> None:
    url, folder = served
    files = tiny_pngs()
    md5 = make_tar_gz(folder / "pngs.tar.gz", files)
    download_and_extract(f"{url}/pngs.tar.gz", tmp_path / "data", sha256=None, md5=md5)
    assert all((tmp_path / "data" / name).read_bytes() == data for name, data in files.items())


def test_checksum_mismatch_is_one_line_and_leaves_nothing(served: tuple[str, Path], tmp_path: Path) -> None:
    url, folder = served
    real = make_zip(folder / "pngs.zip", tiny_pngs())
    dest = tmp_path / "data"
    with pytest.raises(UserError) as info:
        download_and_extract(f"{url}/pngs.zip", dest, sha256="0" * 64)
    message = str(info.value)
    assert "\n" not in message and f"expected {'0' * 64}" in message and f"got {real}" in message
    assert not dest.exists()  # no archive, no partial file, nothing extracted, no folder


@pytest.mark.parametrize("root", ["new/data", "existing"])
def test_a_failed_download_leaves_no_folder_it_made(
    served: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], root: str
) -> None:
    """No network (here a 404): the run made --root and root/DIV2K and left them empty; it now
    removes the folders it made, and a folder that was there before stays."""
    url, _ = served
    (tmp_path / "existing" / "DIV2K").mkdir(parents=True)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(SystemExit) as exit_info:
        main(["div2k", "--parts", "x4", "--root", str(tmp_path / root), "--base-url", url])
    assert exit_info.value.code == 2 and "cannot download" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before


def test_unpinned_download_warns_with_its_sha256(served: tuple[str, Path], tmp_path: Path) -> None:
    url, folder = served
    sha = make_zip(folder / "pngs.zip", tiny_pngs())
    with pytest.warns(UserWarning, match=f"no pinned checksum.*{sha}"):
        download_and_extract(f"{url}/pngs.zip", tmp_path / "data", sha256=None)
    assert (tmp_path / "data" / "set/HR/im2.png").is_file()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
@pytest.mark.parametrize("member", ["../evil.txt", "/tmp/evil_sr_gan.txt", "ok/../../evil.txt"])
def test_members_escaping_the_destination_are_refused(
    served: tuple[str, Path], tmp_path: Path, member: str, kind: str
) -> None:
    url, folder = served
    files = {"fine.txt": b"ok", member: b"pwned"}
    if kind == "zip":
        pins = {"sha256": make_zip(folder / "evil.zip", files)}
    else:
        pins = {"sha256": None, "md5": make_tar_gz(folder / "evil.tar.gz", files)}
    dest = tmp_path / "data"
    with pytest.raises(UserError, match="escapes"):
        download_and_extract(f"{url}/evil.{kind}", dest, **pins)
    assert not dest.exists() and not (tmp_path / "evil.txt").exists()  # archive removed too
    assert not Path("/tmp/evil_sr_gan.txt").exists()


def test_tar_links_are_refused(served: tuple[str, Path], tmp_path: Path) -> None:
    url, folder = served
    with tarfile.open(folder / "link.tar", "w") as tf:
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    sha = hashlib.sha256((folder / "link.tar").read_bytes()).hexdigest()
    with pytest.raises(UserError, match="link"):
        download_and_extract(f"{url}/link.tar", tmp_path / "data", sha256=sha)
    assert not (tmp_path / "data").exists()


@pytest.mark.skipif(not hasattr(tarfile, "data_filter"), reason="a Python before 3.10.12 / 3.11.4")
def test_tar_members_get_no_setuid_and_no_write_for_others(served: tuple[str, Path], tmp_path: Path) -> None:
    """Python's "data" filter on top of our checks: a member's mode in the archive cannot make an
    extracted file setuid / setgid or writable by the group and others."""
    url, folder = served
    with tarfile.open(folder / "modes.tar", "w") as tf:
        info = tarfile.TarInfo("set/HR/run.sh")
        info.size, info.mode = 2, 0o6777
        tf.addfile(info, io.BytesIO(b"ok"))
    download_and_extract(f"{url}/modes.tar", tmp_path / "data", sha256=None, md5=md5_of(folder / "modes.tar"))
    mode = (tmp_path / "data" / "set/HR/run.sh").stat().st_mode
    assert mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWGRP | stat.S_IWOTH) == 0 and mode & stat.S_IRUSR


def test_cli_fetches_registry_entries_from_a_base_url(
    served: tuple[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, folder = served
    files = tiny_pngs()
    train = make_zip(folder / "train_x4.zip", {f"DIV2K_train_LR_bicubic/X4/{k}": v for k, v in files.items()})
    valid = make_zip(folder / "valid_x4.zip", {f"DIV2K_valid_LR_bicubic/X4/{k}": v for k, v in files.items()})
    archives = (Archive("train_x4.zip", sha256=train), Archive("valid_x4.zip", sha256=valid))
    monkeypatch.setitem(download.DIV2K_PARTS, "x4", archives)
    main(["div2k", "--root", str(tmp_path), "--parts", "x4", "--base-url", url + "/"])
    extracted = tmp_path / "DIV2K/DIV2K_valid_LR_bicubic/X4/set/HR/im1.png"
    assert extracted.read_bytes() == files["set/HR/im1.png"]
    assert f"DIV2K in {tmp_path / 'DIV2K'}" in capsys.readouterr().out

    bench = {f"benchmark/Set5/HR/{k[-7:]}": v for k, v in files.items()}
    md5 = make_tar_gz(folder / "benchmark.tar.gz", bench)
    monkeypatch.setattr(download, "BENCHMARK_ARCHIVE", Archive("benchmark.tar.gz", md5=md5))
    main(["benchmarks", "--root", str(tmp_path), "--sets", "Set5", "--base-url", url])
    assert (tmp_path / "benchmark/Set5/HR/im0.png").read_bytes() == files["set/HR/im0.png"]

    with pytest.raises(SystemExit) as exit_info:  # Manga109 may not be redistributed: say so, exit 2
        main(["benchmarks", "--root", str(tmp_path), "--sets", "Manga109"])
    assert exit_info.value.code == 2 and "manga109.org" in capsys.readouterr().err


def test_registry_pins_every_archive() -> None:
    archives = [a for part in download.DIV2K_PARTS.values() for a in part]
    assert len(archives) == 8 and all(re.fullmatch(r"[0-9a-f]{64}", a.sha256 or "") for a in archives)
    assert re.fullmatch(r"[0-9a-f]{32}", download.BENCHMARK_ARCHIVE.md5 or "")


@pytest.mark.parametrize("dataset", ["div2k", "benchmarks"])
def test_cli_refuses_an_archive_that_is_not_the_pinned_one(
    served: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], dataset: str
) -> None:
    """A well-formed archive served under a registry name but with other bytes: the registry's own
    checksum (not one the test supplies) rejects it, and nothing is extracted."""
    url, folder = served
    if dataset == "div2k":
        archive, argv = download.DIV2K_PARTS["x4"][0], ["div2k", "--parts", "x4"]
        make_zip(folder / archive.filename, tiny_pngs())
    else:
        archive, argv = download.BENCHMARK_ARCHIVE, ["benchmarks", "--sets", "Set5"]
        make_tar_gz(folder / archive.filename, tiny_pngs())
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--root", str(tmp_path / "data"), "--base-url", url])
    assert exit_info.value.code == 2
    assert f"expected {archive.sha256 or archive.md5}" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("root", ["a_file", "a_file/data"])
def test_cli_root_that_cannot_be_made_is_one_line_before_any_download(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], root: str
) -> None:
    """--root naming a file (or a folder under one): one line naming --root, no server asked (it
    was a FileExistsError / NotADirectoryError traceback from mkdir)."""
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["benchmarks", "--root", str(tmp_path / root), "--base-url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.strip().count("\n") == 0
    assert err.startswith(f"error: --root={tmp_path / root} is not writable (Not a directory): pass a folder")


@pytest.mark.parametrize("base_url", ["notaurl", "downloads/div2k"])
def test_cli_base_url_that_is_no_url_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], base_url: str
) -> None:
    """A bare path as --base-url: one line naming it (it was urllib's 'unknown url type' ValueError
    traceback), and no folder is made."""
    with pytest.raises(SystemExit) as exit_info:
        main(["div2k", "--parts", "x4", "--root", str(tmp_path / "data"), "--base-url", base_url])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.strip().count("\n") == 0
    assert err.startswith(f"error: --base-url {base_url} is not a URL: pass one like https://")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("pin", ["sha256", "md5"])  # DIV2K is pinned by sha256, the benchmark archive by md5
@pytest.mark.parametrize("present", ["partial", "other"])
def test_an_archive_already_there_is_verified_before_extraction(
    served: tuple[str, Path], tmp_path: Path, present: str, pin: str
) -> None:
    """A file under the archive's name that is not the pinned one (a cut wget, another archive) is
    refused in one line naming it, kept, and nothing is extracted: a partial tar was a ReadError
    traceback, a partial zip was deleted as 'neither a zip nor a tar', another archive was extracted
    unverified and marked done."""
    url, folder = served
    sha = make_zip(folder / "pngs.zip", tiny_pngs())
    pins = {"sha256": sha} if pin == "sha256" else {"sha256": None, "md5": md5_of(folder / "pngs.zip")}
    dest = tmp_path / "data"
    dest.mkdir()
    archive = dest / "pngs.zip"
    if present == "partial":
        archive.write_bytes((folder / "pngs.zip").read_bytes()[:100])
    else:
        make_zip(archive, {"set/HR/other.png": b"not the published file"})
    before = archive.read_bytes()
    with pytest.raises(
        UserError, match=rf"pngs.zip is already there but is not the published archive \({pin} "
    ) as info:
        download_and_extract(f"{url}/pngs.zip", dest, **pins)
    assert "\n" not in str(info.value) and str(info.value).endswith("delete it and run again")
    assert archive.read_bytes() == before and sorted(p.name for p in dest.iterdir()) == ["pngs.zip"]

    archive.write_bytes((folder / "pngs.zip").read_bytes())  # the published archive, cut before extraction
    download_and_extract(f"{url}/pngs.zip", dest, **pins)
    assert (dest / "set/HR/im0.png").is_file() and not archive.exists()


def test_the_partial_download_of_a_killed_run_is_removed(served: tuple[str, Path], tmp_path: Path) -> None:
    """A run killed mid-download (kill -9, SIGTERM of a job's time limit, a closed terminal) leaves its
    hidden temporary file; the next run removes it (it stayed forever: GBs for DIV2K), and only it."""
    url, folder = served
    sha = make_zip(folder / "pngs.zip", tiny_pngs())
    dest = tmp_path / "data"
    dest.mkdir()
    stale = dest / f".pngs.zip.{'0' * 32}.tmp"
    stale.write_bytes(b"PK\x03\x04 cut here")
    other = dest / f".other.zip.{'0' * 32}.tmp"  # another archive's, perhaps being written now
    other.write_bytes(b"x")
    download_and_extract(f"{url}/pngs.zip", dest, sha256=sha)
    assert not stale.exists() and other.exists()
    assert sorted(p.name for p in dest.iterdir() if p.is_file()) == sorted([".pngs.zip.extracted", other.name])


class _FullDisk(io.BytesIO):
    name = "/data/DIV2K/.DIV2K_train_HR.zip.0.tmp"

    def write(self, data: bytes) -> int:  # type: ignore[override]
        raise OSError(28, "No space left on device")


def test_a_full_disk_is_named_as_such(
    served: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while downloading was 'cannot download <url>: [Errno 28] ...; check the network';
    while unpacking an OSError traceback. Both now name the folder and the fix; the verified archive
    is kept for the next run."""
    url, folder = served
    sha = make_zip(folder / "pngs.zip", tiny_pngs())
    with pytest.raises(UserError) as info:
        download._stream(f"{url}/pngs.zip", _FullDisk())
    assert str(info.value) == (
        "cannot write the download into /data/DIV2K (No space left on device): free space there or pass another --root"
    )

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zipfile.ZipFile, "extractall", full)
    dest = tmp_path / "data"
    with pytest.raises(UserError, match=r"^cannot unpack .*pngs.zip into .*data \(No space left on device\): free"):
        download_and_extract(f"{url}/pngs.zip", dest, sha256=sha)
    assert (dest / "pngs.zip").is_file() and not (dest / ".pngs.zip.extracted").exists()


@pytest.mark.parametrize("env", [None, "elsewhere"])
def test_cli_defaults_fetch_what_the_configs_read_where_they_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: str | None
) -> None:
    """Without options, `div2k` fetches the four folders `data=div2k` reads at its scale (train and
    valid HR, their x4 LR) and `benchmarks` every set, both under `paths.data_dir`: ./data, or
    $SR_GAN_DATA when set (the default --root was ./data whatever SR_GAN_DATA said)."""
    fetched: list[tuple[str, Path]] = []
    monkeypatch.setattr(download, "download_and_extract", lambda url, dest, **_: fetched.append((url, dest)))
    if env is None:
        monkeypatch.delenv("SR_GAN_DATA", raising=False)
    else:
        monkeypatch.setenv("SR_GAN_DATA", str(tmp_path / env))
    monkeypatch.chdir(tmp_path)
    cfg = tool_cfg("train", "data=div2k")
    data_dir = Path(cfg.paths.data_dir)
    main(["div2k"])
    folders = [Path(cfg.data[key]) for key in ("train_hr_dir", "train_lr_dir", "val_hr_dir", "val_lr_dir")]
    archives = {f"{'_'.join(folder.relative_to(data_dir / 'DIV2K').parts)}.zip" for folder in folders}
    assert {url.rsplit("/", 1)[1] for url, _ in fetched} == archives  # DIV2K_train_LR_bicubic_X4.zip ...
    assert {dest for _, dest in fetched} == {data_dir / "DIV2K"}
    fetched.clear()
    main(["benchmarks"])
    assert fetched == [(download.BENCHMARK_URL + download.BENCHMARK_ARCHIVE.filename, data_dir)]
    lines = capsys.readouterr().out.splitlines()[1:]  # after DIV2K's line
    assert [line.split(":")[0] for line in lines] == list(download.BENCHMARK_SETS)


def test_an_unpinned_file_that_is_no_archive_is_refused_and_not_kept(served: tuple[str, Path], tmp_path: Path) -> None:
    url, folder = served
    (folder / "page.zip").write_bytes(b"<html>moved</html>")  # a web page served under the archive's name
    with pytest.warns(UserWarning, match="no pinned checksum"):
        with pytest.raises(UserError, match=r"page\.zip is neither a zip nor a tar archive$"):
            download_and_extract(f"{url}/page.zip", tmp_path / "data", sha256=None)
    assert not (tmp_path / "data").exists()


def test_an_unpinned_archive_already_there_is_extracted_without_a_download(tmp_path: Path) -> None:
    """Without a pin nothing can tell a partial file from the archive: the one there is unpacked (the
    URL is never fetched: it names no server here)."""
    (tmp_path / "data").mkdir()
    make_zip(tmp_path / "data" / "pngs.zip", tiny_pngs())
    download_and_extract("http://127.0.0.1:9/pngs.zip", tmp_path / "data", sha256=None)
    assert (tmp_path / "data" / "set/HR/im0.png").is_file() and not (tmp_path / "data" / "pngs.zip").exists()


def test_unknown_parts_or_sets_from_python_are_one_line(tmp_path: Path) -> None:
    """The command line's choices refuse them first; the functions refuse them too, before any download."""
    with pytest.raises(UserError, match=r"^unknown DIV2K parts \['x5'\]: choose from \['train_hr', "):
        download.download_div2k(tmp_path, ["x4", "x5"], base_url="http://127.0.0.1:9")
    with pytest.raises(UserError, match=r"^unknown benchmark sets \['Set15'\]: choose from \['Set5', "):
        download.download_benchmarks(tmp_path, ["Set5", "Set15"], base_url="http://127.0.0.1:9")
    assert list(tmp_path.iterdir()) == []
