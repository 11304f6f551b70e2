"""DDP ranks that Lightning starts itself (more than one device, no torchrun or srun), under Hydra.

Lightning starts ranks 1..N-1 by re-running the command line with Hydra's run folder as Hydra sees
it at that moment. Two of our jobs broke that:
- a job of a sweep (``-m ... trainer=ddp``): the command line is the whole sweep, so each rank went
  on from the job it served to the next jobs by itself, into a second sweep folder; and Lightning
  leaves the ranks' variables (``LOCAL_RANK``, ``MASTER_PORT``, ...) and its process group in the
  process, so the next job took itself for a rank started from outside and started no ranks;
- the demo's GAN run, which first trains its PSNR stage with Hydra's view set to the stage: that
  view's run folder does not resolve outside the stage's config (Lightning failed on it).

`RankLauncher` starts each rank as the running job, from Hydra's config of the job as it started
(`ranks_of_this_job` keeps it): the same command line for a single run, the job's own overrides for
a job of a sweep, in the job's folder, plus what the job decided as it started (`share_with_ranks`:
the seed that ``seed=null`` drew). `ranks_of_this_job` also removes, when the job ends, what
starting the ranks left in the process. Ranks started from outside are left alone; under
``seed=null`` they take a seed derived alike from their job's identity (`job_seed`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.strategies.launchers import subprocess_script
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import DictConfig

from sr_gan.atomic import atomic_path
from sr_gan.errors import UserError, error_line

log = logging.getLogger(__name__)

# What Lightning's launcher exports in the process that starts the ranks (`_call_children_scripts`)
RANK_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")

_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
_job: DictConfig | None = None  # Hydra's config of the running job, as it started (`ranks_of_this_job`)
_decided: list[str] = []  # overrides the job decided as it started (`share_with_ranks`)
_watch: RankWatch | None = None  # the ranks the running job started (`RankLauncher`)
_on_stop: Callable[[str], None] | None = None  # records the run's end when `RankWatch` stops it (`when_stopped`)


def rank_command(local_rank: int) -> tuple[Sequence[str], str]:
    """The command of rank `local_rank` of the running job: the tool again with the job's arguments
    (a sweep's job: its own overrides), in the job's folder; as Lightning's for a single run, no
    Hydra files of its own, its log beside rank 0's as ``train_ddp_process_<rank>.log``."""
    import __main__  # the tool's module (python -m sr_gan.train), as Lightning finds it

    hydra = _job if _job is not None else HydraConfig.get()
    spec = getattr(__main__, "__spec__", None)
    tool = ["-m", spec.name] if spec is not None else [os.path.abspath(sys.argv[0])]
    arguments = sys.argv[1:]
    if hydra.mode == RunMode.MULTIRUN:  # not the sweep: its config flags (a -cd of the user's) and the job's overrides
        arguments = [*_config_flags(arguments), *hydra.overrides.task]
    folder = f'"{hydra.runtime.output_dir}"'  # quoted for Hydra's grammar, as Lightning quotes its run folder
    job = [f"hydra.run.dir={folder}", f"hydra.job.name=train_ddp_process_{local_rank}", "hydra.output_subdir=null"]
    return [sys.executable, *tool, *arguments, *_decided, *job], hydra.runtime.cwd


def share_with_ranks(override: str) -> None:
    """Give the ranks this job starts `override` too (the last of a key wins): a value the job decided
    as it started, such as the seed ``seed=null`` drew, which each rank would otherwise draw afresh."""
    _decided.append(override)


def job_seed(max_seed: int) -> tuple[int, str] | None:
    """The seed ``seed=null`` takes in ranks that torchrun or srun started (more than one): each runs
    the whole command by itself, so a seed drawn by each would differ from rank to rank (other
    patch streams, and the recorded rank 0's would not rerun the run). It is derived alike from the
    job's identity, which every rank sees: srun's job and step ids, torchrun's rendezvous id. With it,
    the job that derived it; None where this process is no such rank."""
    if "TORCHELASTIC_RUN_ID" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        run_id = os.environ["TORCHELASTIC_RUN_ID"]
        if run_id == "none":  # torchrun's default: the same for every job
            raise UserError(
                "seed=null under torchrun: its ranks cannot agree on a drawn seed without a rendezvous id of the "
                "job; give seed=<n>, or torchrun --rdzv-id=<an id of this job> (--standalone makes one)"
            )
        job = f"torchrun job {run_id}"
    elif int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        job = f"srun job {os.environ.get('SLURM_JOB_ID')} step {os.environ.get('SLURM_STEP_ID')}"
    else:
        return None
    digest = hashlib.sha256(job.encode()).digest()
    return int.from_bytes(digest[:8], "big") % (max_seed + 1), job


def _config_flags(argv: Sequence[str]) -> list[str]:
    """Hydra's flags of `argv` that say where the config is (``-cd my_configs``), with their values."""
    kept, arguments = [], iter(argv)
    for argument in arguments:
        if argument.split("=", 1)[0] in _CONFIG_FLAGS:
            kept += [argument] if "=" in argument else [argument, next(arguments, "")]
    return kept


class RankLauncher(_SubprocessScriptLauncher):
    """Lightning's launcher of ranks 1..N-1, with `rank_command` for Lightning's command
    (``_hydra_subprocess_cmd``, swapped while the ranks start) and `RankWatch` for Lightning's watch
    over them (``_launch_process_observer``, swapped while the job runs)."""

    def launch(self, function: Callable, *args: Any, trainer: L.Trainer | None = None, **kwargs: Any) -> Any:
        lightnings = subprocess_script._launch_process_observer
        subprocess_script._launch_process_observer = self._watch
        try:
            return super().launch(function, *args, trainer=trainer, **kwargs)
        finally:
            subprocess_script._launch_process_observer = lightnings

    def _call_children_scripts(self) -> None:
        lightnings = subprocess_script._hydra_subprocess_cmd
        subprocess_script._hydra_subprocess_cmd = rank_command
        try:
            super()._call_children_scripts()
        finally:
            subprocess_script._hydra_subprocess_cmd = lightnings

    def _watch(self, procs: list[subprocess.Popen]) -> None:
        global _watch
        _watch = RankWatch(procs, first_rank=self.cluster_environment.node_rank() * self.num_processes + 1)
        _watch.start()


def exit_status(code: int) -> str:
    """A process's end as `subprocess.Popen.returncode` gives it: ``exit status 2``, ``killed by SIGKILL``."""
    if code >= 0:
        return f"exit status {code}"
    with contextlib.suppress(ValueError):
        return f"killed by {signal.Signals(-code).name}"
    return f"killed by signal {-code}"


# How long rank 0 has to end a run by itself once a rank it started has failed (it reports that rank's
# error), and to wait for its ranks to end after the run, before it kills them; how long the record of a
# run stopped so may take (a hung file system must not keep the ranks alive)
RANK_GRACE_S = 30.0
RANK_EXIT_WAIT_S = 10.0
STOP_RECORD_S = 5.0


def when_stopped(record: Callable[[str], None]) -> None:
    """Have `record` (given the line said) record the run's end if `RankWatch` stops rank 0 (which
    then ends without its own record: run.json said ``running``); called from the watch's thread
    while the main one waits in a collective, so it must read no device value."""
    global _on_stop
    _on_stop = record


class RankWatch(threading.Thread):
    """Rank 0's watch over the ranks it started, in place of Lightning's (``_ChildProcessObserver``),
    which SIGKILLs every process, rank 0 too, within 5 s of a rank's failed exit: rank 0, still
    reporting that rank's error, died without its line and left run.json saying ``running``. Here
    rank 0 has `RANK_GRACE_S` to end the run itself (gloo fails its collective at once); only a rank 0
    still waiting then (NCCL may wait for a rank gone until the process group's timeout) is stopped
    with every rank, after a line naming the failed rank. `end` stops the ranks that outlive the run."""

    def __init__(self, procs: list[subprocess.Popen], *, first_rank: int, grace_s: float = RANK_GRACE_S) -> None:
        super().__init__(daemon=True, name="sr-gan-rank-watch")  # ends with this process
        self.procs, self.first_rank, self.grace_s = procs, first_rank, grace_s
        self.ended = threading.Event()  # the job ended: nothing left to watch

    def failed(self, wait_s: float = 0.0) -> tuple[int, int] | None:
        """``(rank, returncode)`` of the lowest rank that ended with a failure, waiting up to `wait_s`
        seconds for one; None if none did."""
        deadline = time.monotonic() + wait_s
        while True:
            codes = [proc.poll() for proc in self.procs]
            if failures := [(self.first_rank + i, code) for i, code in enumerate(codes) if code]:
                return failures[0]
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.1)

    def run(self) -> None:
        while not self.ended.wait(1.0):
            if (failure := self.failed()) is not None:
                break
            if all(proc.returncode == 0 for proc in self.procs):
                return
        else:
            return
        if self.ended.wait(self.grace_s):  # rank 0 ended the run itself
            return
        rank, code = failure
        line = (
            f"rank {rank} failed ({exit_status(code)}) and rank 0, waiting for it, had not ended the run "
            f"{self.grace_s:g} s later: every rank is stopped (SIGKILL)"
        )
        print(f"error: {line}", file=sys.stderr, flush=True)
        if _on_stop is not None:
            recording = threading.Thread(target=_on_stop, args=(line,), daemon=True)
            recording.start()
            recording.join(STOP_RECORD_S)
        for proc in self.procs:
            proc.kill()
        os.kill(os.getpid(), signal.SIGKILL)

    def end(self, wait_s: float) -> None:
        """The job ended: wait up to `wait_s` seconds for its ranks to end too, and kill those still
        running then (a rank stuck outside any collective, in its data loader or on a hung file
        system, outlived rank 0 and held its GPU)."""
        self.ended.set()
        deadline = time.monotonic() + wait_s
        for i, proc in enumerate(self.procs):
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                log.warning("rank %d still ran %g s after the run ended: killed (SIGKILL)", self.first_rank + i, wait_s)
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)


def started_rank_failed(wait_s: float) -> tuple[int, int] | None:
    """`RankWatch.failed` of the ranks this job started; None if it started none."""
    return None if _watch is None else _watch.failed(wait_s)


def start_ranks_as_this_job(trainer: L.Trainer) -> None:
    """Give `trainer`'s strategy the `RankLauncher` where Lightning starts the ranks from Hydra's
    command line (the ranks of a run started by torchrun or srun are not Lightning's to start)."""
    strategy = trainer.strategy
    launcher = getattr(strategy, "_launcher", None)
    if type(launcher) is _SubprocessScriptLauncher and HydraConfig.initialized():
        strategy._launcher = RankLauncher(launcher.cluster_environment, launcher.num_processes, launcher.num_nodes)


@contextmanager
def ranks_of_this_job() -> Iterator[None]:
    """Around a Hydra job: keeps Hydra's config of the job for `rank_command` and, if the job starts
    its ranks itself, removes the ranks' variables and the process group it leaves in this process
    when it ends, so that a sweep's next job starts its own."""
    global _job, _watch, _on_stop
    outside = {name: os.environ.get(name) for name in RANK_VARIABLES}
    _job = copy.deepcopy(HydraConfig.get()) if HydraConfig.initialized() else None
    _decided.clear()
    try:
        yield
    finally:
        _job, _on_stop = None, None
        _decided.clear()
        if outside["LOCAL_RANK"] is None and "LOCAL_RANK" in os.environ:  # this process started the ranks
            for name, value in outside.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
        if _watch is not None:
            _watch.end(RANK_EXIT_WAIT_S)
            _watch = None


# A rank that fails takes the others down with it: they wait in a collective for it and fail in turn
# on the connection it closed (gloo: "Connection closed by peer"), which says nothing of the cause.
# Each rank > 0 writes its own error here before it exits (its connections close at its exit); rank 0,
# whose own error is such a one, reports it.
FAILURES = ".ranks"  # in the run folder, hidden
_SECONDARY = (  # a peer gone: gloo's, the OS's, NCCL's (its own errors, a CUDA one, are causes)
    "Connection closed by peer",
    "Connection reset by peer",
    "Broken pipe",
    "remote process exiting",
    "communicator was aborted",
)
# gloo's, NCCL's and the rendezvous's (its store's) words for a wait past the process group's timeout
_TIMEOUTS = ("Timed out waiting", "collective operation timeout", "waiting for clients")
OTHER_NODE_WAIT_S = 3.0  # a file another node wrote may show late through a shared file system
STARTED_RANK_WAIT_S = 2.0  # a rank killed closes its connections a moment before its exit is seen


def is_secondary(err: BaseException) -> bool:
    """Whether `err` is a rank's failure to reach another rank (that one failed first), not a cause."""
    if isinstance(err, torch.distributed.DistNetworkError | ConnectionError):
        return True
    return isinstance(err, RuntimeError) and any(mark in str(err) for mark in _SECONDARY)


def is_timeout(err: BaseException) -> bool:
    """Whether `err` is a wait for another rank that ran past the process group's timeout: in a
    collective, or for the ranks to start (its rendezvous)."""
    return isinstance(err, RuntimeError) and any(mark in str(err) for mark in _TIMEOUTS)


def timeout_line(timeout_s: float | None) -> str:
    """What a rank whose collective timed out says: the others, or one of them, stopped answering."""
    key = "trainer.strategy.timeout_s" + ("" if timeout_s is None else f"={timeout_s:g}")
    larger = "<seconds>" if timeout_s is None else f"{2 * timeout_s:g}"
    return (
        f"waited {key} seconds for another rank, which is stuck outside a collective (its data loader, a hung "
        "file system) or that much slower: every rank stops. Ranks slower by design (their start, a first "
        f"step's torch.compile) need a larger one: trainer=ddp trainer.strategy.timeout_s={larger} (the key "
        "comes with trainer=ddp)"
    )


def ended_rank_line(wait_s: float) -> str:
    """What rank 0 says when another rank ended without recording an error: the rank and how it ended
    where this process started it (`RankWatch`), else what such an end means."""
    ended = started_rank_failed(wait_s)
    if ended is None:  # not started here (torchrun, srun, another node), or not seen ending
        return "a rank ended without an error of its own (killed: kill -9, out of host memory, its node lost)"
    rank, code = ended
    cause = " (kill -9, or out of host memory: the kernel's log, dmesg, names it)" if code == -signal.SIGKILL else ""
    return f"rank {rank} ended without an error of its own: {exit_status(code)}{cause}"


def clear_failures(folder: Path) -> None:
    """Remove the ranks' error files of an earlier attempt in run folder `folder` (rank 0, as it starts)."""
    shutil.rmtree(folder / FAILURES, ignore_errors=True)


def record_failure(folder: Path, rank: int, err: BaseException) -> None:
    """Write rank `rank`'s error `err` (its cause, not a secondary one) for rank 0 to report; a write
    that fails (a full disk) leaves rank 0 its own error, and this rank `err`."""
    with contextlib.suppress(OSError), atomic_path(folder / FAILURES / f"rank{rank}.error") as temporary:
        temporary.write_text(error_line(err) + "\n")


def failed_rank(folder: Path, *, wait_s: float) -> str | None:
    """``rank <r> failed: <its error>`` of the lowest rank that recorded one in `folder`, waiting up to
    `wait_s` seconds for one; None if none did (a rank killed, a machine lost)."""
    deadline = time.monotonic() + wait_s
    while True:
        files = sorted((folder / FAILURES).glob("rank*.error"), key=lambda f: int(f.stem.removeprefix("rank")))
        if files:
            return f"{files[0].stem.replace('rank', 'rank ')} failed: {files[0].read_text().strip()}"
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)
