"""Command-line helpers shared by the weight tools (export, interpolate): checked paths, one-line errors."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


class UsageError(ValueError):
    """A command-line value is missing or unusable; the message names the key and the fix."""


def path_arg(cfg: DictConfig, key: str, *, example: str, must_exist: bool = False, suffix: str = "") -> Path:
    """`cfg[key]` as a Path, checked: set, with the given suffix, and existing if `must_exist`."""
    if OmegaConf.is_missing(cfg, key) or cfg[key] in (None, ""):
        raise UsageError(f"'{key}' is not set: add {key}={example}")
    path = Path(str(cfg[key]))
    if suffix and path.suffix != suffix:
        raise UsageError(f"{key}={path} must end in {suffix}: e.g. {key}={example}")
    if must_exist and not path.is_file():
        raise UsageError(f"{key}={path}: no such file; pass an existing file, e.g. {key}={example}")
    return path


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Print a ValueError (bad value, unsafe or unreadable file) as one line on stderr and exit 2.

    Usage and file errors are the user's to fix: a stack trace would only hide the message.
    """
    try:
        yield
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        raise SystemExit(2) from None
