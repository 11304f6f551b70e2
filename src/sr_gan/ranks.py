"""DDP ranks that Lightning starts itself, for each job of a Hydra sweep (``-m ... trainer=ddp``).

With more than one device and no external launcher (torchrun, srun), Lightning starts ranks
1..N-1 by re-running the command line. For a job of a sweep that is the whole sweep: each rank went
on from the job it served to the sweep's next jobs by itself, into a second sweep folder of its own,
and the ranks of the later jobs were the first job's, by chance. Lightning also leaves the ranks'
variables (``LOCAL_RANK``, ``MASTER_PORT``, ...) and its process group in the process, so that the
next job took itself for a rank started from outside and started no ranks.

`SweepJobLauncher` starts each rank of a sweep's job as that one job (its overrides, its folder);
`ranks_of_this_job` removes what starting them left in the process once the job ends. Ranks
started from outside (torchrun, srun: the variables were there before) are left alone.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_original_cwd
from lightning.pytorch.strategies.launchers import subprocess_script
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

# What Lightning's launcher exports in the process that starts the ranks (`_call_children_scripts`)
RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def sweep_job_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command of rank `local_rank` of the current job of a sweep: the tool run once with the
    job's overrides in the job's folder (as Lightning's does for a single run: no Hydra files of its
    own, its log beside rank 0's as ``train_ddp_process_<rank>.log``)."""
    import __main__  # the tool's module (python -m sr_gan.train), as Lightning finds it

    spec = getattr(__main__, "__spec__", None)
    tool = ["-m", spec.name] if spec is not None else [os.path.abspath(sys.argv[0])]
    hydra = HydraConfig.get()
    folder = f'"{hydra.runtime.output_dir}"'  # quoted for Hydra's grammar, as Lightning quotes its run folder
    job = [f"hydra.run.dir={folder}", f"hydra.job.name=train_ddp_process_{local_rank}", "hydra.output_subdir=null"]
    return [sys.executable, *tool, *hydra.overrides.task, *job], get_original_cwd()


class SweepJobLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher of ranks 1..N-1, which starts a sweep's job as `sweep_job_command` says
    (Lightning's own command, ``_hydra_subprocess_cmd``, is swapped for it while the ranks start)."""

    def _call_children_scripts(self) -> None:
        if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
            super()._call_children_scripts()
            return
        lightnings = subprocess_script._hydra_subprocess_cmd
        subprocess_script._hydra_subprocess_cmd = sweep_job_command
        try:
            super()._call_children_scripts()
        finally:
            subprocess_script._hydra_subprocess_cmd = lightnings


def start_ranks_per_sweep_job(trainer: L.Trainer) -> None:
    """Give `trainer`'s strategy the `SweepJobLauncher` where Lightning would start the ranks itself."""
    strategy = trainer.strategy
    launcher = getattr(strategy, "_launcher", None)
    if type(launcher) is _SubprocessScriptLauncher:
        strategy._launcher = SweepJobLauncher(launcher.cluster_environment, launcher.num_processes, launcher.num_nodes)


@contextmanager
def ranks_of_this_job() -> Iterator[None]:
    """Around a job's training: if it starts its ranks itself, the ranks' variables and the process
    group it leaves in this process are gone at its end, so that the sweep's next job starts its own."""
    outside = {name: os.environ.get(name) for name in RANK_VARIABLES}
    try:
        yield
    finally:
        if outside["LOCAL_RANK"] is None and "LOCAL_RANK" in os.environ:  # this process started the ranks
            for name, value in outside.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
