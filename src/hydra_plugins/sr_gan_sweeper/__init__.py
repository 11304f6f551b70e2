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


COMPARE = "python -m sr_gan.compare {} shows each job's status"


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
    """Whether `job` completed and returned a number (the plugin's test of a trial's value)."""
    if job.status != JobStatus.COMPLETED:
        return False
    try:
        float(job.return_value)
    except (TypeError, ValueError):
        return False
    return True


def _failures(jobs: JobLog) -> str:
    """``<k> of <n> trials failed (jobs <a>, <b>, their errors above)``."""
    failed = jobs.failed()
    which = (
        f"job {failed[0]}, its error above"
        if len(failed) == 1
        else f"jobs {', '.join(map(str, failed))}, their errors above"
    )
    return f"{len(failed)} of {len(jobs.returns)} trials failed ({which})"


def search_end(jobs: JobLog, sweep_dir: Path) -> str | None:
    """The line a search that ran all its trials ends on where some failed (None: none did)."""
    if not jobs.failed():
        return None
    compare = COMPARE.format(sweep_dir)
    if len(jobs.failed()) == len(jobs.returns):
        return f"the search ran: {_failures(jobs)}: no trial completed, no optimization_results.yaml; {compare}"
    best = f"the best of the others is in {sweep_dir / 'optimization_results.yaml'}"
    return f"the search ran: {_failures(jobs)}, recorded as failed in the study; {best}; {compare}"


def search_stopped(jobs: JobLog, max_failure_rate: float, sweep_dir: Path) -> str:
    """The line of a search that `max_failure_rate` stopped at a batch of trials with failures."""
    return (
        f"the search stopped: {_failures(jobs)}, over hydra.sweeper.max_failure_rate={max_failure_rate} (of a "
        f"batch of n_jobs trials; 1.0 records a failed trial and goes on); no optimization_results.yaml; "
        f"{COMPARE.format(sweep_dir)}"
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
                raise SweepJobFailed(search_stopped(self.jobs, self.sweeper.max_failure_rate, sweep_dir)) from None
            except ValueError:  # the study's best trial, where none completed
                if len(self.jobs.failed()) < len(self.jobs.returns):
                    raise
            if (line := search_end(self.jobs, sweep_dir)) is not None:
                raise SweepJobFailed(line)
