"""Loggers: Lightning's CSV and W&B loggers, adjusted to how sr-gan runs are compared."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from sr_gan.atomic import atomic_path

log = logging.getLogger(__name__)


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv when it starts: a run resumed in its own
    folder (``ckpt_path=last``) would lose every row logged before the interruption. This one keeps
    them and appends, merging the header when new keys appear. Merging rewrites the whole file (at
    the first validation, and when the test's columns arrive at the end of a run): atomically, so
    that a full disk or a kill then leaves every earlier row (Lightning's truncated the file first).

    Rows at or after the first step a resumed run logs go: a run that died after its last
    checkpoint (``kill -9``, the out-of-memory killer, a node failure) logged them, and the resumed
    run logs those batches again (the file held both, and curves went back in time)."""

    def __init__(self, log_dir: str) -> None:
        self._logged = False  # this process has logged a row: every later row is its own
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])

    def log_metrics(self, metrics_dict: dict[str, float], step: int | None = None) -> None:
        if not self._logged and step is not None and self._fs.isfile(self.metrics_file_path):
            self._drop_rows_from(step)
        self._logged = True
        super().log_metrics(metrics_dict, step)

    def _drop_rows_from(self, step: int) -> None:
        """Remove the file's rows of `step` and later (and any whose step does not parse: cut short)."""
        rows = self._read_rows()
        kept = [row for row in rows if (row.get("step") or "").isdigit() and int(row["step"]) < step]
        if len(kept) < len(rows):
            log.info(
                "metrics.csv: %d rows from step %d on dropped, logged after the checkpoint resumed from",
                len(rows) - len(kept),
                step,
            )
            self._write_rows(self.metrics_keys, kept)

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        self._write_rows(fieldnames, self._read_rows())

    def _read_rows(self) -> list[dict[str, str]]:
        with open(self.metrics_file_path, newline="") as file:
            return list(csv.DictReader(file))

    def _write_rows(self, fieldnames: list[str], rows: list[dict[str, str]]) -> None:
        with atomic_path(self.metrics_file_path) as temporary, open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class ResumableCSVLogger(CSVLogger):
    """`lightning.pytorch.loggers.CSVLogger` whose metrics.csv survives resuming (see `_AppendingWriter`)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


# Summaries of the best value (W&B keeps the last one by default): what a GAN ablation's table shows.
BEST = {"val/psnr": "max", "val/ssim": "max", "val/lpips": "min", "test/psnr": "max", "test/ssim": "max"}


RUN_ID = Path("wandb") / "run_id"  # below a logger's save_dir: the W&B run that folder logs to
RUN_FOLDER = Path("wandb") / "run_folder"  # beside it: the real path of the folder that logged to it last
BESTS = Path("wandb") / "bests.json"  # beside it: the best of each `BEST` value logged to that run
_VALID_ID = re.compile(r"[a-z0-9]{1,64}")  # the ids wandb generates (its own rule is looser)


def folder_run_id(save_dir: Path, *, fresh: bool = False) -> tuple[str, bool]:
    """The id of the W&B run that `save_dir` logs to, and whether an earlier segment logged to it:
    kept in ``save_dir/wandb/run_id`` from the first use on, a run resumed in its folder
    (``ckpt_path=last`` after a pre-emption) continues its W&B run instead of starting a second one
    (``wandb sync`` uploads an offline run's segments into that one run, in order), also where the
    folder moved or is reached through another path. A damaged file is replaced, with a warning: the
    training goes on, into a new W&B run; so does a copy whose original still logs to that run
    (`copied_from`), which would otherwise send its rows for the same batches into the original's,
    and a `fresh` run (one that starts from scratch: an earlier attempt in its folder failed or was
    killed before its first checkpoint), whose rows from batch 0 on would otherwise follow that
    attempt's in one W&B run, under that attempt's name."""
    path = save_dir / RUN_ID
    run_id = _read_run_id(path)
    original = None if run_id is None else copied_from(save_dir, run_id)
    continued = run_id is not None and original is None and not fresh
    if not continued:
        kept, run_id = run_id, secrets.token_hex(4)  # 8 characters, as wandb's ids (its generator is not public API)
        with atomic_path(path) as temporary:
            temporary.write_text(run_id + "\n")
        if fresh and kept is not None:
            log.warning(
                "%s starts from scratch (no checkpoint to resume) and logs to a new W&B run %s: W&B run %s keeps "
                "the history of the attempt that logged to it before",
                save_dir,
                run_id,
                kept,
            )
        elif original is not None:
            log.warning(
                "%s is a copy of %s, which logs to W&B run %s too: this copy logs to W&B run %s from here on "
                "(to resume a moved run folder in its W&B run, delete the original first; offline, `wandb sync "
                "--id %s %s/offline-run-*-%s` uploads this copy's segments into the original's run)",
                save_dir,
                original,
                kept,
                run_id,
                kept,
                save_dir / "wandb",
                run_id,
            )
    here = str(save_dir.resolve())
    if _read_text(save_dir / RUN_FOLDER) != here:
        with atomic_path(save_dir / RUN_FOLDER) as temporary:
            temporary.write_text(here + "\n")
    return run_id, continued


def _read_text(path: Path) -> str | None:
    """The stripped text of `path`, None where it cannot be read."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _read_run_id(path: Path) -> str | None:
    """The W&B run id that `path` holds; None where there is no file, and (with a warning) where it holds no id."""
    run_id = _read_text(path)
    if run_id is None or _VALID_ID.fullmatch(run_id):
        return run_id
    log.warning("%s does not hold a W&B run id: this run logs to a new W&B run from here on", path)
    return None


def copied_from(save_dir: Path, run_id: str) -> Path | None:
    """The folder that `save_dir` was copied from, where that one is still there and still logs to
    W&B run `run_id` (its ``wandb/run_folder`` and ``wandb/run_id``, copied with it, name it); None
    for a folder in its place, moved (the recorded folder is gone, or logs to another run), or
    reached through another path (a link, another mount: the recorded folder is this one). Only
    read: nothing of the original is written."""
    recorded = _read_text(save_dir / RUN_FOLDER)
    if not recorded or not os.path.isabs(recorded):
        return None
    original = Path(recorded)
    try:
        if original.samefile(save_dir):
            return None
    except OSError:  # gone: the folder moved
        return None
    return original if _read_text(original / RUN_ID) == run_id else None


class SRWandbLogger(WandbLogger):
    """Lightning's W&B logger, with the run summary holding the best ``val/psnr`` (and SSIM, LPIPS)
    beside the last, one W&B run per output folder across resumed segments (`folder_run_id`; a
    `fresh` run, from scratch, gets a new one; ``id=`` chooses another), named once, and without the
    ``anonymous`` setting that wandb >= 0.19 warns is ignored.

    The bests are kept here, not by W&B's ``define_metric(summary="max")``: W&B computes those in
    the process that logs, so a resumed segment's summary held its own best only (and ``wandb
    sync`` uploads the segments in order: the run showed the last one's). They are carried from
    segment to segment in ``wandb/bests.json`` beside the run's id.
    """

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        self._bests: dict[str, float] = {}
        self.fresh = False  # set by sr_gan.train before the run starts: it starts from scratch, no checkpoint

    @property
    @rank_zero_experiment
    def experiment(self):  # noqa: ANN201 - a wandb Run
        if self._experiment is None and self._wandb_init.get("id") is None and self._save_dir:
            self._wandb_init["id"], continued = folder_run_id(Path(self._save_dir), fresh=self.fresh)
            if continued:  # the name its first segment gave: this one's overrides add ckpt_path, a longer budget
                self._wandb_init.pop("name", None)
                self._bests = read_bests(Path(self._save_dir))
        return super().experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        super().log_metrics(metrics, step)
        headline = {key: float(value) for key, value in metrics.items() if key in BEST}
        for key, value in headline.items():
            if not math.isnan(value):  # (a diverged validation is no best)
                better = max if BEST[key] == "max" else min
                self._bests[key] = better(self._bests.get(key, value), value)
            if key in self._bests:
                self.experiment.summary[key] = {BEST[key]: self._bests[key], "last": value}
        if headline and self._save_dir:
            with atomic_path(Path(self._save_dir) / BESTS) as temporary:
                temporary.write_text(json.dumps(self._bests))


def read_bests(save_dir: Path) -> dict[str, float]:
    """The bests an earlier segment logged to `save_dir`'s W&B run (none if it left no readable file)."""
    try:
        bests = json.loads((save_dir / BESTS).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(bests, dict):
        return {}
    return {key: float(value) for key, value in bests.items() if key in BEST and isinstance(value, int | float)}
