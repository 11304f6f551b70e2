"""Running the project's CLIs in the tests, the way a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def run_module(
    module: str,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`python -m <module> <args>` in `cwd`: src first on PYTHONPATH, W&B offline and silent
    (unless `env` says otherwise), `env` merged over os.environ; output captured as text."""
    extra = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    merged = {**os.environ, **extra}
    merged["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), merged.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=merged, capture_output=True, text=True, timeout=timeout
    )
