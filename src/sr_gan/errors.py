"""User-facing errors: one line that names the file or key and the fix, never a deep stack trace."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import wraps
from typing import TypeVar

T = TypeVar("T")


class UserError(ValueError):
    """A problem with the user's input (a config key, a file); its message says how to fix it."""


def exit_on_user_error(fn: Callable[..., T]) -> Callable[..., T]:
    """Run ``fn``; on :class:`UserError` (or a missing file) print one line to stderr and exit 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return fn(*args, **kwargs)
        except (UserError, FileNotFoundError) as err:
            print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
