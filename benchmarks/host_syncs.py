"""Where ours blocks the host on the GPU: `SyncRecorder` turns on CUDA's sync debug mode
(``torch.cuda.set_sync_debug_mode("warn")``) for a few steady-state batches of ours, trainer loop
included, and counts the Python call sites of every synchronizing operation (``.item()``, a blocking
copy, a synchronize). A sync per batch costs nothing while the step is host-bound, and the whole
GPU time of the batch once CUDA graphs make it GPU-bound: on the H200, ours trailed the plain loop
by 0.65-0.83 under CUDA graphs, which is what this item is for. On a CPU there is no queue to wait
for: the recorder records nothing and says so.
"""

from __future__ import annotations

import collections
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

SYNC_MESSAGE = "synchronizing CUDA operation"  # the warning torch gives in sync debug mode "warn"
_OWN_FILES = (Path(__file__).name, "warnings.py")


def call_site(stack: traceback.StackSummary, depth: int = 3) -> str:
    """The innermost `depth` Python frames of `stack` outside torch and this module, innermost first."""
    frames = [f for f in reversed(stack) if not f.filename.endswith(_OWN_FILES) and "/torch/" not in f.filename]
    return " < ".join(f"{_short(f.filename)}:{f.lineno} {f.name}" for f in frames[:depth])


def _short(filename: str) -> str:
    """A path from its package on: ``lightning/pytorch/...``, ``sr_gan/lit/module.py``."""
    for marker in ("site-packages/", "/src/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return "/".join(Path(filename).parts[-2:])


class SyncRecorder:
    """Counts synchronizing CUDA operations by call site between `start` and `stop` (driven by the
    step timer's callback: `batches` batches from the one it starts on)."""

    batches = 2  # two batches: the trainer's code between them is recorded too

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sites: collections.Counter[str] = collections.Counter()
        self._catcher: warnings.catch_warnings | None = None

    def start(self) -> None:
        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        warnings.simplefilter("always")
        shown = warnings.showwarning

        def show(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if SYNC_MESSAGE in str(message):
                self.sites[call_site(traceback.extract_stack())] += 1
            else:
                shown(message, category, *args, **kwargs)

        warnings.showwarning = show
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("warn")

    def stop(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
        if self._catcher is not None:
            self._catcher.__exit__(None, None, None)
            self._catcher = None

    def summary(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "recorded": self.device.type == "cuda",
            "syncs": sum(self.sites.values()),
            "sites": [{"site": site, "count": n} for site, n in self.sites.most_common()],
        }
