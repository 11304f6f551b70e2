"""User-facing errors: one line that names the file or key and the fix, never a deep stack trace."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable
from functools import wraps
from typing import TypeVar

T = TypeVar("T")

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C
USER_ERROR_EXIT_CODE = 2  # a command refused its input, in one line (as argparse does)


class UserError(ValueError):
    """A problem with the user's input (a config key, a file); its message says how to fix it."""


class SweepJobFailed(Exception):
    """A sweep's job that ended on an input error, its line printed. Raised to Hydra, which records
    the job failed and runs the sweep's next jobs (its launcher catches exceptions, not the
    SystemExit a command ends with, which stopped the whole sweep there); the sweep ends with it."""


class InputWarning(UserWarning):
    """A warning about the user's input (a config key, a file); its message names it and what to do.
    A command's log shows the message alone: the line of code that warned (often Hydra's, which
    built the object) tells the user nothing."""


def closest(word: str, names: Iterable[str]) -> str | None:
    """The name of `names` nearest to `word`, for a "did you mean" (None: none is near). difflib's
    ratio, but a name of the same letters in another order first: ``modle`` is ``model``, which
    difflib ranks below ``module``."""
    near = difflib.get_close_matches(word, list(names), n=3)
    return next((name for name in near if sorted(name) == sorted(word)), near[0] if near else None)


def exit_on_user_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Run ``fn``; on :class:`UserError` (or a missing file) print one line to stderr and exit 2.

    The error may arrive wrapped, e.g. in Hydra's ``InstantiationException`` when a constructor
    built from the config refused its arguments: the cause chain is searched for it.
    """

    @wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            user_error = _find_user_error(err)
            if user_error is None:
                raise
            print(f"error: {one_line(user_error)}", file=sys.stderr)
            raise SystemExit(USER_ERROR_EXIT_CODE) from None

    return wrapper


def _find_user_error(err: BaseException | None) -> BaseException | None:
    while err is not None:
        if isinstance(err, UserError | FileNotFoundError):
            return err
        err = err.__cause__
    return None


def error_line(err: BaseException) -> str:
    """`err` on one line: a UserError's message (as a command prints it), else ``TypeName: message``."""
    user_error = _find_user_error(err)
    return one_line(user_error) if user_error is not None else f"{type(err).__name__}: {one_line(err)}"


def one_line(err: BaseException) -> str:
    """The message of `err` on one line. An error raised in a DataLoader worker arrives re-raised
    with the worker's whole traceback as its message; its last line is the original message."""
    message = str(err)
    if "Original Traceback" in message:
        last = message.strip().splitlines()[-1]  # "sr_gan.data.datasets.DataError: cannot read ..."
        message = last.partition(": ")[2] or last
    return " ".join(message.split())
