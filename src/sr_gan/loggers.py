"""Loggers: Lightning's CSV and W&B loggers, adjusted to how sr-gan runs are compared."""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv when it starts: a run resumed in its own
    folder (``ckpt_path=last``) would lose every row logged before the interruption. This one keeps
    them and appends, merging the header when new keys appear."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])


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


class SRWandbLogger(WandbLogger):
    """Lightning's W&B logger, with the run summary holding the best ``val/psnr`` (and SSIM, LPIPS)
    beside the last, and without the ``anonymous`` setting that wandb >= 0.19 warns is ignored."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    @property
    @rank_zero_experiment
    def experiment(self):  # noqa: ANN201 - a wandb Run
        fresh = self._experiment is None
        run = super().experiment
        if fresh and hasattr(run, "define_metric"):
            for key, summary in BEST.items():
                run.define_metric(key, summary=f"{summary},last")
        return run
