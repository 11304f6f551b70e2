"""Download and unpack the public SR data sets: DIV2K and the benchmark sets.

    python -m sr_gan.data.download div2k --root data/ [--parts train_hr valid_hr x4]
    python -m sr_gan.data.download benchmarks --root data/ [--sets Set5 Set14]

An archive is streamed to a temporary file beside its destination, checked against its pinned
checksum (a mismatch deletes it), renamed into place, unpacked with every member checked to stay
inside the destination, then deleted; a marker file makes a second run a no-op. An archive already
in place (a verified download whose extraction was cut) is checked against its pin again before it
is unpacked; the partial download a killed run (kill -9, SIGTERM) left beside it is removed by the
next run. A failed run leaves none of the folders it made. A checksum that is not pinned is never
invented: the download goes on with a warning that prints the sha256.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import tarfile
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from sr_gan.atomic import atomic_path, check_writable, remove_stale_temporaries
from sr_gan.errors import InputWarning, UserError, exit_on_user_error

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class Archive:
    """A file of a registry: its name under the base URL and its published checksum(s)."""

    filename: str
    sha256: str | None = None
    md5: str | None = None


# Official ETH Zurich host; sha256 as pinned by tensorflow/datasets (url_checksums/div2k.txt).
DIV2K_URL = "https://data.vision.ee.ethz.ch/cvl/DIV2K/"
DIV2K_PARTS: dict[str, tuple[Archive, ...]] = {
    "train_hr": (
        Archive(
            "DIV2K_train_HR.zip",
            sha256="9d0b9c463f6e35b6c62cc6a930ee2224f670b34c1df841a57670f9acf0f6c335",
        ),
    ),
    "valid_hr": (
        Archive(
            "DIV2K_valid_HR.zip",
            sha256="20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc",
        ),
    ),
    "x2": (
        Archive(
            "DIV2K_train_LR_bicubic_X2.zip",
            sha256="a53a424317575838dadce4bcd97cf7b744d6855f43740ed5f0245af3cf4bd850",
        ),
        Archive(
            "DIV2K_valid_LR_bicubic_X2.zip",
            sha256="60eed9875c697df51204aa579e2a699e1d5215095788a097ff54dd17e2664d57",
        ),
    ),
    "x3": (
        Archive(
            "DIV2K_train_LR_bicubic_X3.zip",
            sha256="ad5c8e5507e2765823d3c2c5bd0934842efcd487c5370604c224090898b3163a",
        ),
        Archive(
            "DIV2K_valid_LR_bicubic_X3.zip",
            sha256="04b9a2ed3b4a0715d3924d3ae8514830c3328fac8d30512ce716d6f419e052a3",
        ),
    ),
    "x4": (
        Archive(
            "DIV2K_train_LR_bicubic_X4.zip",
            sha256="f006b837f4eb52b82909aa01478e6d6d199eefce932179491d0c9dbb706dde3a",
        ),
        Archive(
            "DIV2K_valid_LR_bicubic_X4.zip",
            sha256="a50a5d1c4b88de4e8d300d8fb2b904c52fe93b2b298a4899697760d7cbb6d553",
        ),
    ),
}

# The benchmark archive of EDSR-PyTorch (Lim et al., 2017), used by EDSR, RCAN, torchSR and many
# more: HR and MATLAB-bicubic LR_bicubic/X2..X4 of four sets. md5 as pinned by torchSR.
BENCHMARK_URL = "https://cv.snu.ac.kr/research/EDSR/"
BENCHMARK_ARCHIVE = Archive("benchmark.tar", md5="4ace41d33c2384b97e6b320cd0afd6ba")
BENCHMARK_SETS = {  # our name → folder inside the archive (holding HR/ and LR_bicubic/X{s}/)
    "Set5": "benchmark/Set5",
    "Set14": "benchmark/Set14",
    "BSD100": "benchmark/B100",
    "Urban100": "benchmark/Urban100",
}
MANGA109_HELP = (
    "Manga109 may not be redistributed (its licence): request it at "
    "http://www.manga109.org/en/download.html and put its images in {root}/benchmark/Manga109/HR "
    "(the LR is then made on the fly by bicubic downscaling)"
)


class _Digests:
    """The sha256 and md5 of bytes fed in chunks: the checksums the archives are pinned by."""

    def __init__(self) -> None:
        self._hashes = {"sha256": hashlib.sha256(), "md5": hashlib.md5(usedforsecurity=False)}

    def update(self, chunk: bytes) -> None:
        for digest in self._hashes.values():
            digest.update(chunk)

    def hex(self) -> dict[str, str]:
        return {name: digest.hexdigest() for name, digest in self._hashes.items()}


def _stream(url: str, file: BinaryIO) -> dict[str, str]:
    """Copy `url` into `file` with a progress bar; returns its sha256 and md5 hex digests."""
    digests = _Digests()
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    try:
        with urllib.request.urlopen(url, timeout=60) as response, Progress(*columns) as progress:
            size = int(response.headers.get("Content-Length") or 0)
            task = progress.add_task(url.rsplit("/", 1)[-1], total=size or None)
            while chunk := response.read(CHUNK_BYTES):
                _write(file, chunk)
                digests.update(chunk)
                progress.advance(task, len(chunk))
    except OSError as err:  # URLError, HTTPError, timeouts (a full disk is _write's UserError)
        reason = getattr(err, "reason", err)
        raise UserError(f"cannot download {url}: {reason}; check the network or --base-url") from None
    return digests.hex()


def _write(file: BinaryIO, chunk: bytes) -> None:
    """Append `chunk` to the download; a full disk (or another write error) is a one-line UserError
    naming the folder, not the network."""
    try:
        file.write(chunk)
    except OSError as err:
        raise UserError(
            f"cannot write the download into {Path(file.name).parent} ({err.strerror or err}): free space "
            "there or pass another --root"
        ) from None


def _fetch(url: str, path: Path, *, sha256: str | None, md5: str | None) -> None:
    """Download `url` to a temporary file beside `path`, verify it, then rename it to `path`."""
    with atomic_path(path) as partial:  # removed unless the block completes
        with partial.open("wb") as file:
            got = _stream(url, file)
        if mismatch := _mismatch(got, sha256=sha256, md5=md5):
            name, expected, found = mismatch
            raise UserError(f"{name} mismatch for {url}: expected {expected}, got {found}; download removed")
        if sha256 is None and md5 is None:
            unpinned = f"{url} has no pinned checksum (unverified); its sha256 is {got['sha256']}"
            warnings.warn(unpinned, InputWarning, stacklevel=3)


def _mismatch(got: dict[str, str], *, sha256: str | None, md5: str | None) -> tuple[str, str, str] | None:
    """(name, pinned, got) of the first pinned checksum that the digests `got` fail, else None."""
    for name, expected in (("sha256", sha256), ("md5", md5)):
        if expected is not None and got[name] != expected.lower():
            return name, expected, got[name]
    return None


def _file_hashes(path: Path) -> dict[str, str]:
    """The sha256 and md5 hex digests of the file at `path`, read in chunks."""
    digests = _Digests()
    with path.open("rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digests.update(chunk)
    return digests.hex()


def _check_present(archive: Path, *, sha256: str | None, md5: str | None) -> None:
    """An archive already in place is this tool's own verified download only if it still matches its
    pin: a partial or other file of that name (a cut browser or wget download) is refused, and kept."""
    if sha256 is None and md5 is None:
        return
    if mismatch := _mismatch(_file_hashes(archive), sha256=sha256, md5=md5):
        name, expected, found = mismatch
        raise UserError(
            f"{archive} is already there but is not the published archive ({name} {found}, expected {expected}): "
            "it is a partial or other download; delete it and run again"
        )


def _check_member(archive: Path, name: str, dest_dir: Path) -> None:
    """Refuse a member that would land outside `dest_dir` (absolute path, `..`)."""
    root = dest_dir.resolve()
    if not (root / name).resolve().is_relative_to(root):
        raise UserError(f"archive {archive} has a member {name!r} that escapes {dest_dir}: refusing to extract")


def _extract(archive: Path, dest_dir: Path) -> None:
    """Unpack a zip or tar archive (any compression) into `dest_dir`, members checked first."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                _check_member(archive, name, dest_dir)
            zf.extractall(dest_dir)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                _check_member(archive, member.name, dest_dir)
                if not (member.isfile() or member.isdir()):
                    raise UserError(
                        f"archive {archive} has a link or special file {member.name!r}: refusing to extract"
                    )
            # Python's own "data" filter where it exists (3.10.12+, 3.11.4+), on top of our checks
            data_filter = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tf.extractall(dest_dir, members=members, **data_filter)
    else:
        raise UserError(f"{archive} is neither a zip nor a tar archive")


def download_and_extract(
    url: str,
    dest_dir: str | Path,
    *,
    sha256: str | None,
    md5: str | None = None,
    filename: str | None = None,
) -> Path:
    """Download `url` into `dest_dir`, verify it, unpack it there and delete the archive.

    Skipped when the marker of a previous extraction exists. Returns `dest_dir`. A failure leaves
    none of the folders this call made (a folder that was there before stays).
    """
    dest_dir = Path(dest_dir)
    with _removed_if_failed(dest_dir):
        _download_into(dest_dir, url, filename or Path(urllib.parse.urlparse(url).path).name, sha256=sha256, md5=md5)
    return dest_dir


@contextmanager
def _removed_if_failed(folder: Path) -> Iterator[None]:
    """Make `folder` and its missing parents; a failure in the block removes those it made that are
    still empty (deepest first), so a refused or cut download leaves no empty folder behind."""
    made = [path for path in (folder, *folder.parents) if not path.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for path in made:
            with contextlib.suppress(OSError):  # not empty: a kept archive or earlier parts stay
                path.rmdir()
        raise


def _download_into(dest_dir: Path, url: str, filename: str, *, sha256: str | None, md5: str | None) -> None:
    """download_and_extract's work, in the existing `dest_dir`."""
    marker = dest_dir / f".{filename}.extracted"
    if marker.is_file():
        print(f"{filename}: already extracted in {dest_dir}")
        return
    archive = dest_dir / filename
    if archive.is_file():  # a verified download whose extraction was cut, or a file put there by hand
        _check_present(archive, sha256=sha256, md5=md5)
    else:
        remove_stale_temporaries([archive])  # the partial download of a killed run (kill -9, SIGTERM, SIGHUP)
        _fetch(url, archive, sha256=sha256, md5=md5)
    try:
        _extract(archive, dest_dir)
    except UserError:  # a refused archive is not kept for a retry
        archive.unlink()
        raise
    except OSError as err:  # a full disk: the verified archive stays, and the next run unpacks it again
        raise UserError(
            f"cannot unpack {archive} into {dest_dir} ({err.strerror or err}): free space there (or pass "
            "another --root) and run again; the archive is kept"
        ) from None
    archive.unlink()
    marker.write_text(f"{url}\n")


def download_div2k(root: str | Path, parts: list[str], *, base_url: str = DIV2K_URL) -> Path:
    """Fetch DIV2K `parts` (train_hr, valid_hr, x2, x3, x4) into `root/DIV2K`; returns that folder."""
    unknown = sorted(set(parts) - set(DIV2K_PARTS))
    if unknown:
        raise UserError(f"unknown DIV2K parts {unknown}: choose from {list(DIV2K_PARTS)}")
    dest = Path(root) / "DIV2K"
    for part in parts:
        for archive in DIV2K_PARTS[part]:
            url = f"{base_url.rstrip('/')}/{archive.filename}"
            download_and_extract(url, dest, sha256=archive.sha256, md5=archive.md5)
    return dest


def download_benchmarks(root: str | Path, sets: list[str], *, base_url: str = BENCHMARK_URL) -> dict[str, Path]:
    """Fetch the benchmark sets (one archive holds all four) into `root`; returns each set's folder."""
    if "Manga109" in sets:
        raise UserError(MANGA109_HELP.format(root=root))
    unknown = sorted(set(sets) - set(BENCHMARK_SETS))
    if unknown:
        raise UserError(f"unknown benchmark sets {unknown}: choose from {list(BENCHMARK_SETS)}")
    url = f"{base_url.rstrip('/')}/{BENCHMARK_ARCHIVE.filename}"
    download_and_extract(url, root, sha256=BENCHMARK_ARCHIVE.sha256, md5=BENCHMARK_ARCHIVE.md5)
    return {name: Path(root) / BENCHMARK_SETS[name] for name in sets}


def check_base_url(base_url: str) -> None:
    """`--base-url` must be a URL urllib can fetch (an http(s), ftp or file URL), not a bare path."""
    if urllib.parse.urlparse(base_url).scheme not in ("http", "https", "ftp", "file"):
        raise UserError(
            f"--base-url {base_url} is not a URL: pass one like https://host/folder/ (or file:///folder/ for "
            "archives already on this machine)"
        )


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sr_gan.data.download", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="dataset", required=True)
    div2k = commands.add_parser("div2k", help="DIV2K 800 train / 100 valid HR and bicubic LR")
    div2k.add_argument("--parts", nargs="+", default=["train_hr", "valid_hr", "x4"], choices=list(DIV2K_PARTS))
    div2k.add_argument("--base-url", default=DIV2K_URL)
    benchmarks = commands.add_parser("benchmarks", help="Set5, Set14, BSD100, Urban100 (HR + bicubic LR)")
    benchmarks.add_argument("--sets", nargs="+", default=list(BENCHMARK_SETS), choices=[*BENCHMARK_SETS, "Manga109"])
    benchmarks.add_argument("--base-url", default=BENCHMARK_URL)
    for command in (div2k, benchmarks):
        command.add_argument(
            "--root",
            type=Path,
            default=Path(os.environ.get("SR_GAN_DATA") or "data"),  # as paths.data_dir (conf/paths/default.yaml)
            help="data folder, paths.data_dir: $SR_GAN_DATA, else data (default: %(default)s)",
        )
    args = parser.parse_args(argv)
    check_writable(args.root, key="--root")
    check_base_url(args.base_url)
    if args.dataset == "div2k":
        print(f"DIV2K in {download_div2k(args.root, args.parts, base_url=args.base_url)}")
    else:
        for name, folder in download_benchmarks(args.root, args.sets, base_url=args.base_url).items():
            print(f"{name}: HR in {folder / 'HR'}, LR in {folder / 'LR_bicubic'}/X{{scale}}")


if __name__ == "__main__":
    main()
