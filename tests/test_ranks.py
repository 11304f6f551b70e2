"""sr_gan.ranks: the DDP ranks Lightning starts itself, for each job of a Hydra sweep."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from sr_gan.ranks import RANK_VARIABLES, rank_command, ranks_of_this_job


def test_a_sweep_jobs_rank_runs_that_job_alone_in_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's overrides and folder, no -m: not the sweep's command line, which Lightning re-ran."""
    monkeypatch.setattr(
        sys, "argv", ["train.py", "-cd", "mine", "-m", "loss=l1,mse", "--config-name=train", "trainer=ddp"]
    )
    hydra = {
        "mode": RunMode.MULTIRUN,
        "runtime": {"output_dir": str(tmp_path / "sweep" / "1"), "cwd": str(tmp_path)},
        "overrides": {"task": ["trainer=ddp", "loss=mse"]},
    }
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: OmegaConf.create(hydra)))  # what the job reads
    command, cwd = rank_command(1)
    assert (
        command[0] == sys.executable and "loss=l1,mse" not in command and command.count("-m") <= 1
    )  # python -m <tool>
    assert command[-8:] == [
        "-cd",  # where the user's configs are: the job needs them too
        "mine",
        "--config-name=train",
        "trainer=ddp",
        "loss=mse",
        f'hydra.run.dir="{tmp_path / "sweep" / "1"}"',
        "hydra.job.name=train_ddp_process_1",
        "hydra.output_subdir=null",
    ]
    assert cwd == str(tmp_path)


def test_the_rank_variables_a_job_exported_go_when_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with ranks_of_this_job():  # as Lightning's launcher does when it starts the ranks
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29500", NODE_RANK="0", LOCAL_RANK="0", WORLD_SIZE="2")
    assert not any(name in os.environ for name in RANK_VARIABLES)


def test_ranks_started_from_outside_keep_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchrun, srun: every rank runs the whole sweep itself, with the variables it was given."""
    given = {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29400", "NODE_RANK": "1", "LOCAL_RANK": "3", "WORLD_SIZE": "8"}
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    with ranks_of_this_job():
        pass
    assert {name: os.environ[name] for name in RANK_VARIABLES} == given


def test_ranks_start_as_the_job_whatever_hydras_view_is_by_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo's GAN run trains its PSNR stage with Hydra's view set to the stage, whose run folder
    does not resolve outside the stage's config (Lightning failed on it): a single run's ranks are
    the same command line again, in the job's folder as it started."""
    monkeypatch.setattr(sys, "argv", ["train.py", "loss=ragan", "trainer=ddp"])
    job = OmegaConf.create(
        {"mode": RunMode.RUN, "runtime": {"output_dir": str(tmp_path / "run"), "cwd": str(tmp_path)}, "overrides": {}}
    )
    stage = OmegaConf.create({"mode": RunMode.RUN, "run": {"dir": "${paths.log_dir}/x"}, "runtime": {}})
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: job))
    with ranks_of_this_job():
        monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: stage))  # demo_stage._hydra_view
        command, cwd = rank_command(1)
    assert command[-5:] == [
        "loss=ragan",
        "trainer=ddp",
        f'hydra.run.dir="{tmp_path / "run"}"',
        "hydra.job.name=train_ddp_process_1",
        "hydra.output_subdir=null",
    ]
    assert cwd == str(tmp_path)
