"""What a training run prints and records about itself.

- `quiet_third_party_noise`: the console and ``train.log`` carry what a user can act on; warnings
  are routed into the log, Lightning's own lines reach ``train.log`` too, and four messages that
  are neither ours nor the user's to act on are filtered (each named, with why).
- `RunRecord`: ``run.json`` in the run folder, rewritten atomically when the run starts and ends
  (status running / done / failed / preempted / interrupted, batches, wall time, batches/s, the
  headline metrics), so `sr_gan.compare` and scripts need not guess a run's state from file times.
- `summary`: the lines printed when a run ends: where everything is, best and last val/psnr
  against bicubic, and the next commands to try.
- `environment`: the code and library versions a run ran with, recorded in its ``config.yaml``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import time
import warnings
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import sr_gan
from sr_gan.atomic import atomic_path
from sr_gan.errors import InputWarning
from sr_gan.weights.allowlist import TRUST_VARIABLE

if TYPE_CHECKING:
    import lightning as L

RECORD = "run.json"
ENDED = ("done", "failed", "preempted", "interrupted")  # the statuses a run records as it ends


class _DropMessages(logging.Filter):
    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_third_party_noise() -> None:
    """Route warnings and Lightning's messages into the run's log; drop four that nobody acts on: Lightning's
    advert, its pytree deprecation, and its notes on a resumed run's used checkpoint folder and on a branch's
    new one."""
    logging.captureWarnings(True)  # warnings.warn (e.g. the random-VGG warning) also reach train.log
    warnings.formatwarning = _format_warning
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        # Imported before logging is set up (as every sr-gan command imports them), Lightning's loggers
        # print by themselves and stop propagating: their lines reached the console only, not train.log.
        lightning = logging.getLogger(name)
        lightning.propagate = True
        for handler in list(lightning.handlers):
            lightning.removeHandler(handler)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        # An advertisement printed by every Trainer for a logging service.
        logging.getLogger(name).addFilter(_DropMessages("💡 Tip:"))
    # Lightning 2.6 on torch >= 2.10 calls a deprecated pytree check at every validation; the
    # deprecation is Lightning's to fix, the value it computes is right.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # Every resume finds its own checkpoints there; a new run into a used folder is refused before.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # A branch (ckpt_path= another run's checkpoint) checkpoints into its own folder: its best.ckpt is
    # the best of its own validations, as the README says.
    warnings.filterwarnings("ignore", message=r"The dirpath has changed from")


_python_format = warnings.formatwarning


def _format_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """An `InputWarning` as its message alone (one log line); any other warning as Python formats it."""
    if issubclass(category, InputWarning):
        return str(message)
    return _python_format(message, category, filename, lineno, line)


@dataclass
class RunRecord:
    """``run.json``: the state and headline numbers of one run (see the module docstring)."""

    folder: Path
    status: str = "running"
    error: str | None = None
    started: float = field(default_factory=time.time)  # this segment's start (a resumed run: its restart)
    earlier_s: float = 0.0  # wall time of the run's earlier segments (`resumed`)
    wall_s: float = 0.0  # earlier_s + this segment
    batches: int = 0
    batches_per_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # within `folder`: true where the folder moves or is copied

    @classmethod
    def resumed(cls, folder: Path) -> RunRecord:
        """The record of a run resumed in `folder`: the wall time its run.json holds carries on, so a
        pre-empted run's total counts every segment (one stopped after its last batch, relaunched
        for its test stage, too) instead of replacing it."""
        return cls(folder=folder, earlier_s=float((read_record(folder) or {}).get("wall_s") or 0.0))

    def write(self) -> None:
        self.wall_s = round(self.earlier_s + time.time() - self.started, 3)
        self.batches_per_s = round(self.batches / self.wall_s, 4) if self.wall_s > 0 and self.batches else None
        record = {k: v for k, v in asdict(self).items() if k != "folder"}
        with atomic_path(self.folder / RECORD) as temporary:
            temporary.write_text(json.dumps(record, indent=2) + "\n")

    def finish(self, status: str, trainer: L.Trainer | None, error: BaseException | None = None) -> None:
        """Record how the run ended, what it did and where its files are; write run.json."""
        self.status, self.error = status, None if error is None else " ".join(str(error).split())
        if trainer is not None:
            self.batches = trainer.fit_loop.epoch_loop.batch_progress.total.completed
            self.metrics |= {k: round(float(v), 6) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        self.files = {name: path.relative_to(self.folder).as_posix() for name, path in _files(self.folder).items()}
        self.write()


def _files(folder: Path) -> dict[str, Path]:
    candidates = {
        "best": folder / "checkpoints" / "best.ckpt",
        "last": folder / "checkpoints" / "last.ckpt",
        "metrics": folder / "csv" / "metrics.csv",
        "samples": folder / "samples",
        "wandb": folder / "wandb",
        "config": folder / "config.yaml",
    }
    return {name: path for name, path in candidates.items() if path.exists()}


def summary(
    record: RunRecord,
    *,
    best_psnr: float | None,
    last: dict[str, float],
    gan: bool = False,
    resume: str | None = None,
    next_steps: bool = True,
) -> list[str]:
    """The lines printed at the end of a run (see the module docstring). The next commands (unless
    not `next_steps`) take the best checkpoint by PSNR, or the last one of a GAN stage (`gan`): both
    papers' GAN result. A run cut short names how to resume it: `resume`, else the same command with
    ckpt_path=<its folder>."""
    files = _files(record.folder)
    lines = [f"run {record.status}: {record.batches} batches in {record.wall_s:.0f} s, folder {record.folder}"]
    if "val/psnr" in last:
        best = f"best {best_psnr:.2f} dB, " if best_psnr is not None else ""
        bicubic = last.get("val/psnr_bicubic", float("nan"))
        lines.append(f"val/psnr: {best}last {last['val/psnr']:.2f} dB, bicubic {bicubic:.2f} dB")
    for name in ("best", "last", "samples", "metrics", "wandb"):
        if name in files:
            lines.append(f"  {name:8} {files[name]}")
    if record.status in ("interrupted", "preempted") and "last" in files:
        lines.append(f"resume: {resume or f'the same command with ckpt_path={record.folder}'}")
    ckpt = files.get("last" if gan or "best" not in files else "best")
    if ckpt is not None and next_steps:
        lines += [
            "next:",
            f"  python -m sr_gan.evaluate ckpt={ckpt} datasets=[Set5,Set14,BSD100]",
            f"  python -m sr_gan.upscale ckpt={ckpt} input=<your photos>",
            f"  python -m sr_gan.compare {_runs_to_compare(record.folder)}",
        ]
    if "wandb" in files:
        lines.append(f"  wandb sync {files['wandb']}/offline-run-*   # to see it on wandb.ai")
    return lines


def _runs_to_compare(folder: Path) -> str:
    """A sweep job's sweep (Hydra wrote multirun.yaml there), else this run beside others of the
    user's choice: all of ``logs/train/runs`` mixes validation sets, which compare refuses."""
    return str(folder.parent) if (folder.parent / "multirun.yaml").is_file() else f"{folder} <other run folders>"


def read_record(folder: Path) -> dict[str, Any] | None:
    """A run folder's run.json, or None: runs made before sr-gan wrote one, and (with a warning) a
    damaged one, so that a damaged record never blocks resuming, comparing or the demo's cache."""
    path = folder / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        why = str(err)
    else:
        if isinstance(record, dict):
            return record
        why = "not a JSON object"
    warnings.warn(f"{path} is damaged ({why}): taken as a run without a record", InputWarning, stacklevel=2)
    return None


LIBRARIES = ("torch", "torchvision", "lightning", "kornia", "numpy")  # what computes a run's numbers


def environment() -> dict[str, str | None]:
    """What a run is repeated with besides its config: sr-gan's version and, run from a clone, its
    commit (`source_commit`), Python's and `LIBRARIES`' versions, the CUDA and cuDNN builds (null
    without them), torch's CPU threads (a CPU run's numbers depend on them: `sr_gan.threads`) and
    $SR_GAN_TRUST (null unset: a checkpoint of the user's own network loads only with it).
    A resumed run records its latest segment's, and those of earlier segments that differ as
    ``earlier`` (`sr_gan.config.keep_recorded_start`)."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "sr_gan": sr_gan.__version__,
        "commit": source_commit(Path(sr_gan.__file__).resolve().parents[2]),  # <clone>/src/sr_gan/__init__.py
        "python": platform.python_version(),
        **{name: version(name) for name in LIBRARIES},
        "cuda": torch.version.cuda,
        "cudnn": None if cudnn is None else str(cudnn),
        "torch_threads": str(torch.get_num_threads()),
        "sr_gan_trust": os.environ.get(TRUST_VARIABLE),  # the user's network classes its checkpoints may build
    }


def source_commit(root: Path) -> str | None:
    """The git commit checked out in the clone at `root`, ``<commit>-dirty`` where tracked files
    differ from it; None for an installed package (no ``.git`` at `root`) or where git cannot tell."""
    if not (root / ".git").exists():
        return None
    try:
        head, changes = (
            subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout.strip()
            for args in (["rev-parse", "HEAD"], ["status", "--porcelain", "--untracked-files=no"])
        )
    except (OSError, subprocess.CalledProcessError):  # no git, a foreign owner, a damaged repository
        return None
    return f"{head}-dirty" if changes else head
