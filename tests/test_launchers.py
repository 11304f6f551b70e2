"""Sweeps past one process: the SLURM preset's sbatch script (composed, never submitted), parallel
local jobs (joblib), and an Optuna search that returns the best trial."""

from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import submitit
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tests.conftest import CONF_DIR, TINY
from tests.helpers import run_module


def _compose(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


class _Submitted(Exception):
    """Raised instead of submitting: carries the executor the launcher built."""


def _sbatch_script(cfg: DictConfig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The sbatch script that `hydra/launcher=...` would submit for one job, built by the plugin
    itself (submitit only checks that `srun` exists: a stub stands in for it)."""
    stub = tmp_path / "bin" / "srun"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub.parent}{os.pathsep}{os.environ['PATH']}")

    def capture(executor: submitit.AutoExecutor, *args: object) -> None:
        raise _Submitted(executor)

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(_Submitted) as submitted:
        launcher.launch([["loss=esrgan"]], initial_job_idx=0)
    return submitted.value.args[0]._executor._make_submission_file_text("python -m sr_gan.train", "uid")


def test_slurm_preset_asks_one_task_per_gpu_on_every_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning under SLURM wants --ntasks-per-node == trainer.devices and --nodes ==
    trainer.num_nodes: the preset reads both from the trainer, and CPUs from the loader workers."""
    cfg = _compose(
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "data.num_workers=6",
        "hydra.launcher.partition=gpu",
        f"paths.log_dir={tmp_path}",
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    assert launcher["cpus_per_task"] == 6
    sweep_dir = Path(launcher["submitit_folder"]).parents[1]
    assert sweep_dir.parent == tmp_path / "train" / "multiruns"  # the project's sweep folder, hydra/default.yaml

    script = _sbatch_script(cfg, monkeypatch, tmp_path)
    flags = {line.removeprefix("#SBATCH ") for line in script.splitlines() if line.startswith("#SBATCH")}
    expected = {
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
        "--cpus-per-task=6",
        "--partition=gpu",
        "--time=1440",
        "--signal=USR2@120",
    }
    assert expected <= flags, sorted(flags)
    assert f"{sweep_dir}/.submitit/%j/%j_%t_log.out" in script  # srun: one log per task


@pytest.mark.parametrize(("workers", "cpus"), [((), 1), (("data.num_workers=8",), 8)])
def test_slurm_preset_asks_at_least_one_cpu_per_task(tmp_path: Path, workers: tuple[str, ...], cpus: int) -> None:
    """The CPUs per task are the loader workers, but at least 1: the demo's data.num_workers=0 gave
    --cpus-per-task=0, which sbatch refuses."""
    cfg = _compose("hydra/launcher=slurm", "trainer=gpu", *workers, f"paths.log_dir={tmp_path}")
    assert OmegaConf.to_container(cfg.hydra.launcher, resolve=True)["cpus_per_task"] == cpus


def test_slurm_preset_follows_a_single_gpu_trainer(tmp_path: Path) -> None:
    cfg = _compose(
        "hydra/launcher=slurm", "trainer=gpu", "hydra.launcher.max_num_timeout=5", f"paths.log_dir={tmp_path}"
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (1, 1, 1)
    assert launcher["max_num_timeout"] == 5


@pytest.mark.slow
def test_local_launcher_runs_the_sweep_in_two_workers(tmp_path: Path) -> None:
    proc = run_module(
        "sr_gan.train", "-m", "hydra/launcher=local", "loss=l1,mse", *TINY, "test=false", f"paths.log_dir={tmp_path}"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = [sweep / "0", sweep / "1"]
    losses = [OmegaConf.load(job / "config.yaml").loss.pixel._target_ for job in jobs]
    assert losses == ["torch.nn.L1Loss", "torch.nn.MSELoss"]
    # Whether the two jobs overlap in time is joblib's business and, on a loaded 2-core machine, not
    # reliable (a worker importing torch can take longer than the other job): not asserted.
    assert all((job / "run.json").is_file() and (job / "checkpoints" / "last.ckpt").is_file() for job in jobs)


def _first_validation_batch(num_workers: int) -> tuple[int, ...]:
    """In a joblib worker: the demo data module's first validation batch, loaded by workers."""
    from sr_gan.config import register_resolvers

    register_resolvers()
    cfg = _compose(f"data.num_workers={num_workers}")
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup("validate")
    return tuple(next(iter(data.val_dataloader()))["hr"].shape)


def test_local_launcher_jobs_can_use_loader_workers() -> None:
    from joblib import Parallel, delayed

    (shape,) = Parallel(n_jobs=2)(delayed(_first_validation_batch)(1) for _ in range(1))
    assert shape[:2] == (1, 3)


def _search(tmp_path: Path, trials: int, *overrides: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A tiny `hparams_search=loss_weights` of `trials` trials under `tmp_path`: its process and sweep folder."""
    proc = run_module(
        "sr_gan.train",
        "-m",
        "hparams_search=loss_weights",
        f"hydra.sweeper.n_trials={trials}",
        *TINY,
        *overrides,
        f"paths.log_dir={tmp_path}",
    )
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    return proc, sweep


def _test_psnr(job: Path) -> float:
    """The test/psnr a sweep's job logged (its one test row of metrics.csv)."""
    with open(job / "csv" / "metrics.csv") as f:
        (psnr,) = [float(row["test/psnr"]) for row in csv.DictReader(f) if row.get("test/psnr")]
    return psnr


@pytest.mark.slow
def test_optuna_search_runs_three_trials_and_reports_the_best(tmp_path: Path) -> None:
    # model.ema_decay=null: score the trained generator itself, not an average still near its init
    proc, sweep = _search(tmp_path, 3, "model.ema_decay=null")
    assert proc.returncode == 0, proc.stderr[-3000:]
    keys = ["loss.pixel_weight", "loss.adversarial_weight", "optim.generator.lr"]
    trials = {}
    for job in sorted(p for p in sweep.iterdir() if p.is_dir()):
        cfg = OmegaConf.load(job / "config.yaml")
        trials[job.name] = ({key: OmegaConf.select(cfg, key) for key in keys}, _test_psnr(job))
    assert sorted(trials) == ["0", "1", "2"]
    assert len({tuple(params.values()) for params, _ in trials.values()}) == 3, trials  # three different draws
    for params, _ in trials.values():  # within the preset's log-scale ranges
        assert 1e-3 <= params["loss.pixel_weight"] <= 1e-1
        assert 1e-3 <= params["loss.adversarial_weight"] <= 2.5e-2
        assert 2e-5 <= params["optim.generator.lr"] <= 5e-4

    result = OmegaConf.load(sweep / "optimization_results.yaml")
    best_params, best_psnr = max(trials.values(), key=lambda trial: trial[1])
    assert result.best_value == pytest.approx(best_psnr, abs=1e-4)  # maximized: the highest test/psnr
    assert dict(result.best_params) == pytest.approx(best_params)


@pytest.mark.slow
def test_an_optuna_search_records_its_failed_trials_and_goes_on(tmp_path: Path) -> None:
    """A trial that diverges (lr=1e8: NaN, the guard stops it) ended the search at its first failed
    trial (the plugin's max_failure_rate=0.0: job 1 of 3 failed, job 2 never ran, no
    optimization_results.yaml), saying the sweep ran its other jobs. The preset records it as failed
    and goes on; the best of the others is written, and the search ends with status 2 naming the
    failed jobs (the plugin with the rate alone ended with status 0, its failures only in its log)."""
    lr = "optim.generator.lr=choice(1e-4,1e8)"  # seed 42 draws 1e-4 for job 0, 1e8 for jobs 1 and 2
    proc, sweep = _search(tmp_path, 3, lr)
    failed = [
        job.name for job in sorted(sweep.glob("[0-9]")) if OmegaConf.load(job / "config.yaml").optim.generator.lr > 1
    ]
    assert failed == ["1", "2"], failed
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1] == (
        "error: the search ran: 2 of 3 trials failed (jobs 1, 2, their errors above), recorded as failed in the "
        f"study; the best of the others is in {sweep / 'optimization_results.yaml'}; python -m sr_gan.compare "
        f"{sweep} shows each job's status"
    ), proc.stderr[-3000:]
    result = OmegaConf.load(sweep / "optimization_results.yaml")
    assert (
        result.best_value == pytest.approx(_test_psnr(sweep / "0"), abs=1e-4)
        and result.best_params["optim.generator.lr"] == 1e-4
    )


@pytest.mark.slow
@pytest.mark.parametrize("rate", [None, "0.0"])
def test_an_optuna_search_whose_trials_all_fail_says_so_in_one_line(tmp_path: Path, rate: str | None) -> None:
    """Every trial failed: the plugin ended on Optuna's ValueError traceback (No trials are completed
    yet). A max_failure_rate below 1.0 stops at the first batch with failures (one trial a batch:
    the first failure), which the line says."""
    given = [f"hydra.sweeper.max_failure_rate={rate}"] if rate else []
    proc, sweep = _search(tmp_path, 2, "optim.generator.lr=1e8", *given)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (sweep / "optimization_results.yaml").exists()
    assert proc.stderr.splitlines()[-1] == (
        "error: the search ran: 2 of 2 trials failed (jobs 0, 1, their errors above): no trial completed, no "
        f"optimization_results.yaml; python -m sr_gan.compare {sweep} shows each job's status"
        if rate is None
        else "error: the search stopped: 1 of 1 trials failed (job 0, its error above), over "
        "hydra.sweeper.max_failure_rate=0.0 (of a batch of n_jobs trials; 1.0 records a failed trial and goes on); "
        f"no optimization_results.yaml; python -m sr_gan.compare {sweep} shows each job's status"
    )


def _job_return(status: str, value: object) -> Any:
    from hydra.core.utils import JobReturn, JobStatus

    return JobReturn(status=JobStatus[status], _return_value=value)


class _Launcher:
    """A launcher whose jobs end, in turn: with a number, with none, failed."""

    def launch(self, job_overrides: list, initial_job_idx: int) -> list[Any]:
        ends = [("COMPLETED", 28.5), ("COMPLETED", None), ("FAILED", RuntimeError("CUDA error: out of memory"))]
        return [_job_return(*end) for end in ends][: len(job_overrides)]


def test_the_search_counts_a_trial_without_a_number_as_failed(tmp_path: Path) -> None:
    """The preset's log of a search's jobs, numbered from each batch's first: a job that failed, and one
    that completed without returning a number (a run with no test score to optimise), are the
    trials Optuna records as failed, named in the search's last line."""
    from hydra_plugins.sr_gan_sweeper import JobLog, search_end

    jobs = JobLog(_Launcher())
    jobs.launch([["a"]], initial_job_idx=0)
    assert search_end(jobs, tmp_path) is None  # none failed
    jobs.launch([["a"], ["b"], ["c"]], initial_job_idx=1)
    assert jobs.failed() == [2, 3]
    assert search_end(jobs, tmp_path).startswith("the search ran: 2 of 4 trials failed (jobs 2, 3, their errors above)")
    jobs.launch([["a"], ["b"]], initial_job_idx=4)
    assert "3 of 6 trials failed (jobs 2, 3, 5, their errors above), recorded" in search_end(jobs, tmp_path)


def test_the_search_lines_name_one_failed_trial_a_value_that_is_no_number_and_the_rate_given(tmp_path: Path) -> None:
    """One failed trial is named in the search's last line, as several are; a job that returned
    something that is no number (Optuna's float() refuses it) is a failed trial; a search stopped by
    its max_failure_rate names the rate it was given."""
    from hydra_plugins.sr_gan_sweeper import JobLog, search_end, search_stopped

    jobs = JobLog(_Launcher())
    jobs.returns = [(0, _job_return("COMPLETED", 28.5)), (1, _job_return("COMPLETED", "n/a"))]
    compare = f"python -m sr_gan.compare {tmp_path} shows each job's status"
    assert search_end(jobs, tmp_path) == (
        "the search ran: 1 of 2 trials failed (job 1, its error above), recorded as failed in the study; the best "
        f"of the others is in {tmp_path / 'optimization_results.yaml'}; {compare}"
    )
    assert search_stopped(jobs, 0.25, tmp_path) == (
        "the search stopped: 1 of 2 trials failed (job 1, its error above), over hydra.sweeper.max_failure_rate=0.25 "
        "(of a batch of n_jobs trials; 1.0 records a failed trial and goes on); no optimization_results.yaml; "
        f"{compare}"
    )


def test_a_search_ends_on_no_completed_trial_in_one_line_and_on_other_errors_as_they_are(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Optuna's ValueError for a study with no completed trial becomes the search's line; a ValueError
    of another cause (a trial completed) is the search's own error, raised as it is."""
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

    from hydra_plugins.sr_gan_sweeper import JobLog, SRGANOptunaSweeper
    from sr_gan.errors import SweepJobFailed

    def fails(self: OptunaSweeper, arguments: list[str]) -> None:
        raise ValueError("No trials are completed yet." if not done else "a distribution it cannot sample")

    monkeypatch.setattr(OptunaSweeper, "sweep", fails)
    search = object.__new__(SRGANOptunaSweeper)  # its setup needs a whole Hydra run
    search.sweeper = SimpleNamespace(sweep_dir=str(tmp_path), max_failure_rate=1.0)
    search.jobs = JobLog(_Launcher())
    for done in (False, True):
        search.jobs.returns = [(0, _job_return("FAILED", RuntimeError("NaN")))]
        search.jobs.returns += [(1, _job_return("COMPLETED", 2.0))] if done else []
        expected = ValueError if done else SweepJobFailed
        with pytest.raises(expected, match="cannot sample" if done else "no trial completed"):
            search.sweep([])
