"""Weight files named by an http(s) URL: fetched once into torch.hub's cache, checked, then read as files."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch.hub import HASH_REGEX, download_url_to_file

from sr_gan.errors import UserError

log = logging.getLogger(__name__)


def is_url(path: str | Path) -> bool:
    return urlparse(str(path)).scheme in ("http", "https")


def cached_download(url: str, *, key: str) -> Path:
    """`url`'s file in torch.hub's cache (``$TORCH_HOME/hub/checkpoints``, where torchvision keeps
    the VGG weights), downloaded there once and atomically; a name carrying a SHA-256 prefix
    (``name-<hex>.pth``: torch.hub's convention, and BasicSR's released ESRGAN / Real-ESRGAN files')
    is checked against it. As in torch.hub, a file of that name already there is the one read,
    whatever URL it came from. A failure is a one-line UserError naming the config `key`."""
    url_path = urlparse(url).path
    name = Path(url_path).name  # (pathlib drops a trailing /: "/weights/" would name a file "weights")
    if not name or url_path.endswith("/"):
        raise UserError(f"{key}={url}: the URL names no file (it ends in /): give the file's URL")
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fetch(url, path, key=key, hash_prefix=match.group(1) if (match := HASH_REGEX.search(name)) else None)
    return path


def fetch(url: str, path: Path, *, key: str, hash_prefix: str | None = None) -> None:
    """Download `url` to `path` (written beside it and renamed: whole or absent), its SHA-256 checked
    against `hash_prefix` if given. A failure is a one-line UserError naming the config `key`."""
    log.info("downloading %s to %s", url, path)
    try:
        download_url_to_file(url, str(path), hash_prefix=hash_prefix, progress=False)
    except OSError as err:  # URLError and HTTPError are OSErrors
        raise UserError(f"{key}={url}: cannot download it ({err}): check the URL or pass a local file") from err
    except RuntimeError as err:  # "invalid hash value (expected ..., got ...)": nothing is kept
        raise UserError(
            f"{key}={url}: the download does not match the SHA-256 prefix {hash_prefix} in its name ({err}): "
            "fetch it again, or check that the URL names the file you meant"
        ) from err
