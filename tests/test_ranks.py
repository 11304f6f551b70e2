"""sr_gan.ranks: the DDP ranks Lightning starts itself, for each job of a Hydra sweep."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from sr_gan.ranks import RANK_VARIABLES, ranks_of_this_job, sweep_job_command


def test_a_sweep_jobs_rank_runs_that_job_alone_in_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's overrides and folder, no -m: not the sweep's command line, which Lightning re-ran."""
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "loss=l1,mse", "trainer=ddp"])
    hydra = {
        "mode": RunMode.MULTIRUN,
        "runtime": {"output_dir": str(tmp_path / "sweep" / "1"), "cwd": str(tmp_path)},
        "overrides": {"task": ["trainer=ddp", "loss=mse"]},
    }
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: OmegaConf.create(hydra)))  # what the job reads
    monkeypatch.setattr("sr_gan.ranks.get_original_cwd", lambda: hydra["runtime"]["cwd"])
    command, cwd = sweep_job_command(1)
    assert (
        command[0] == sys.executable and "loss=l1,mse" not in command and command.count("-m") <= 1
    )  # python -m <tool>
    assert command[-5:] == [
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
