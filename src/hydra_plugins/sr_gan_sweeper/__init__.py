"""sr-gan's Optuna sweeper (``hparams_search=...``): the hydra-optuna-sweeper plugin's, ending honestly.

The plugin records a trial whose job failed (a diverged run, a value only that trial gets) as
Optuna's FAIL and goes on while ``hydra.sweeper.max_failure_rate`` allows (the rate of each batch of
``n_jobs`` trials). It then ended with status 0, its failed trials only in its log, or with a
ValueError traceback (``No trials are completed yet``) where every trial failed; stopped by the
rate, it re-raised the job's error, whose line said the sweep ran its other jobs. This one ends the
search as the basic sweeper ends a sweep with a failed job: status 2 and one line naming the failed
jobs and whether ``optimization_results.yaml`` holds the best of the others.

Hydra takes sweepers from the ``hydra_plugins`` package only; without the plugin (the ``sweeps``
extra) this module defines nothing, and ``hparams_search=...`` is refused as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from sr_gan.errors import SweepJobFailed

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # the sweeps extra is not installed
    OptunaSweeper = None


class JobLog:
    """A launcher that launches with another and keeps each job's number and outcome."""

    def __init__(self, launcher: Any) -> None:
        self.launcher = launcher
        self.returns: list[tuple[int, JobReturn]] = []

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        returns = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        self.returns += enumerate(returns, start=initial_job_idx)
        return returns

    def failed(self) -> list[int]:
        """The numbers of the jobs that failed or returned no number, which Optuna records as failed trials."""
        return [num for num, job in self.returns if not _scored(job)]


def _scored(job: JobReturn) -> bool:
    """Whether `job` completed and returned a number Optuna takes as the trial's value."""
    if job.status != JobStatus.COMPLETED:
        return False
    try:
        return not math.isnan(float(job.return_value))
    except (TypeError, ValueError):
        return False


def search_end(jobs: JobLog, sweep_dir: Path) -> str | None:
    """The line a search that ran to its end stops on: which of its trials failed (None: none)."""
    failed = jobs.failed()
    if not failed:
        return None
    compare = f"python -m sr_gan.compare {sweep_dir} shows each job's status"
    several = len(failed) > 1
    names = (
        f"job{'s' if several else ''} {', '.join(map(str, failed))}, {'their errors' if several else 'its error'} above"
    )
    if len(failed) == len(jobs.returns):
        return (
            f"all {len(failed)} trials of the search failed ({names}): no best trial, no optimization_results.yaml; "
            + compare
        )
    return (
        f"{len(failed)} of {len(jobs.returns)} trials of the search failed ({names}; the study records them as "
        f"failed), the best of the others is in {sweep_dir / 'optimization_results.yaml'}; {compare}"
    )


def search_stopped(jobs: JobLog, max_failure_rate: float) -> str:
    """The line of a search that `max_failure_rate` stopped at a failed trial."""
    failed = jobs.failed()
    return (
        f"the search stopped after {len(jobs.returns)} trials, at its failed job {failed[0]} (its error above): "
        f"hydra.sweeper.max_failure_rate={max_failure_rate} of a batch of trials; no optimization_results.yaml "
        "(hydra.sweeper.max_failure_rate=1.0 records a failed trial and goes on)"
    )


if OptunaSweeper is not None:

    class SRGANOptunaSweeper(OptunaSweeper):
        """hydra-optuna-sweeper's sweeper, ending a search with failed trials in one line, status 2
        (module docstring)."""

        def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
            super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
            self.jobs = JobLog(self.sweeper.launcher)
            self.sweeper.launcher = self.jobs

        def sweep(self, arguments: list[str]) -> None:
            sweep_dir = Path(str(self.sweeper.sweep_dir))
            try:
                super().sweep(arguments)
            except SweepJobFailed:  # max_failure_rate reached: the plugin raised the failed job's error
                raise SweepJobFailed(search_stopped(self.jobs, self.sweeper.max_failure_rate)) from None
            except ValueError:  # the study's best trial, where none completed
                if len(self.jobs.failed()) < len(self.jobs.returns):
                    raise
            if (line := search_end(self.jobs, sweep_dir)) is not None:
                raise SweepJobFailed(line)
