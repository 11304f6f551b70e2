"""sr_gan.ranks: the DDP ranks Lightning starts itself, for each job of a Hydra sweep."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.strategies.launchers import subprocess_script
from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
from omegaconf import OmegaConf

from sr_gan import ranks
from sr_gan.errors import UserError
from sr_gan.lit.ddp import LONGEST_TIMEOUT_S, PlayerDDPStrategy
from sr_gan.ranks import (
    RANK_VARIABLES,
    RankLauncher,
    RankWatch,
    clear_failures,
    ended_rank_line,
    exit_status,
    failed_rank,
    is_secondary,
    is_timeout,
    rank_command,
    ranks_of_this_job,
    record_failure,
    when_stopped,
)
from sr_gan.run_summary import RunRecord, read_record
from sr_gan.train import _rank_failure, _record_stopped
from tests.helpers import child_env


def test_a_sweep_jobs_rank_runs_that_job_alone_in_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's overrides and folder, no -m: not the sweep's command line, which Lightning re-ran.
    (No overrides shared by an earlier job: an in-process train() with seed=null, run before in this
    process, left its seed= there, which only `ranks_of_this_job` clears.)"""
    monkeypatch.setattr("sr_gan.ranks._decided", [])
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


def test_rank_0_reports_the_lowest_failed_rank_with_its_own_error(tmp_path: Path) -> None:
    """A rank's cause is recorded whole (a UserError's message; another error with its type); rank 0
    names the lowest rank that recorded one, waits a bounded time for none, and an attempt's start
    clears an earlier attempt's."""
    assert failed_rank(tmp_path, wait_s=0.2) is None  # none came
    late = threading.Timer(0.2, record_failure, (tmp_path, 5, UserError("shown late on another node")))
    late.start()
    assert failed_rank(tmp_path, wait_s=10) == "rank 5 failed: shown late on another node"
    clear_failures(tmp_path)
    record_failure(tmp_path, 10, RuntimeError("CUDA error:\n  out of memory"))  # rank10 sorts before rank2 as text
    record_failure(tmp_path, 2, UserError("cannot read image a.png: its IDAT chunk is damaged"))
    assert failed_rank(tmp_path, wait_s=0) == "rank 2 failed: cannot read image a.png: its IDAT chunk is damaged"
    assert (tmp_path / ".ranks" / "rank10.error").read_text() == "RuntimeError: CUDA error: out of memory\n"
    clear_failures(tmp_path)
    assert failed_rank(tmp_path, wait_s=0) is None and sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_ranks_failure_to_reach_a_failed_rank_is_secondary() -> None:
    """A connection a peer closed is the consequence of its failure; a rank's own error (its CUDA, its
    NCCL call) is a cause, recorded for rank 0 to report."""
    gloo = "[../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:726. This is typically"
    nccl_remote = "ncclRemoteError: A call failed possibly due to a network error or a remote process exiting"
    for err in (
        RuntimeError(gloo),
        RuntimeError("[../gloo/transport/tcp/pair.cc:534] Read error [127.0.0.1]:4123: Connection reset by peer"),
        RuntimeError("[../gloo/transport/tcp/pair.cc:598] Write error [127.0.0.1]:4123: Broken pipe"),
        torch.distributed.DistBackendError("NCCL communicator was aborted"),
        torch.distributed.DistBackendError(f"NCCL error in: ProcessGroupNCCL.cpp, {nccl_remote} prematurely."),
        BrokenPipeError(),
    ):
        assert is_secondary(err), err
    unhandled = torch.distributed.DistBackendError("NCCL error in: ProcessGroupNCCL.cpp, unhandled cuda error")
    for err in (RuntimeError("CUDA error: out of memory"), unhandled, UserError("data.batch_size=0 is not allowed")):
        assert not is_secondary(err), err


def test_each_rank_ends_a_failed_ddp_run_with_its_part_of_the_report(tmp_path: Path) -> None:
    """A rank > 0 records its own cause and ends quietly (exit 1) on a secondary error; rank 0 reports
    the recorded cause instead of its secondary error, keeps a cause of its own, and on several nodes
    waits for a file that a shared file system shows late."""
    closed, own = RuntimeError("Connection closed by peer"), RuntimeError("CUDA error: out of memory")

    def rank(r: int, nodes: int = 1) -> SimpleNamespace:
        return SimpleNamespace(world_size=2 * nodes, global_rank=r, num_nodes=nodes)

    quiet = _rank_failure(rank(1), tmp_path, closed)
    assert isinstance(quiet, SystemExit) and quiet.code == 1 and not (tmp_path / ".ranks").exists()
    killed = _rank_failure(rank(0), tmp_path, closed)  # no rank recorded a cause: one was killed
    assert isinstance(killed, UserError) and str(killed).startswith("a rank ended without an error of its own")
    assert _rank_failure(rank(1), tmp_path, own) is own
    assert (tmp_path / ".ranks" / "rank1.error").read_text() == "RuntimeError: CUDA error: out of memory\n"
    assert _rank_failure(rank(0), tmp_path, own) is own  # its own cause, not rank 1's
    assert str(_rank_failure(rank(0), tmp_path, closed)) == "rank 1 failed: RuntimeError: CUDA error: out of memory"
    clear_failures(tmp_path)
    threading.Timer(0.5, record_failure, (tmp_path, 3, UserError("shown late on another node"))).start()
    assert str(_rank_failure(rank(0, nodes=2), tmp_path, closed)) == "rank 3 failed: shown late on another node"


def test_a_collective_that_timed_out_ends_each_rank_with_a_line_naming_the_timeout(tmp_path: Path) -> None:
    """gloo's and NCCL's timeouts (a rank stuck outside any collective) and the rendezvous's (a rank
    that did not start in time) are one line naming trainer.strategy.timeout_s, which a rank > 0
    records for rank 0."""
    strategy = SimpleNamespace(timeout_s=600.0)
    rank1, rank0 = (SimpleNamespace(world_size=2, global_rank=r, num_nodes=1, strategy=strategy) for r in (1, 0))
    for message in (
        "[../gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 600000ms for recv operation to complete",
        "Watchdog caught collective operation timeout: WorkNCCL(SeqNum=9, OpType=ALLREDUCE) ran for 600012 ms",
        "Timed out after 601 seconds waiting for clients. 1/2 clients joined.",
    ):
        err = torch.distributed.DistBackendError(message)
        assert is_timeout(err) and not is_secondary(err)
        line = str(_rank_failure(rank0, tmp_path, err))
        assert line.startswith("waited trainer.strategy.timeout_s=600 seconds for another rank, which is stuck"), line
        # the fix as a command: the key exists only under trainer=ddp (a plain trainer.devices=2 run refused it)
        assert "need a larger one: trainer=ddp trainer.strategy.timeout_s=1200 (the key comes with" in line, line
    lightnings = SimpleNamespace(world_size=2, global_rank=0, num_nodes=1, strategy=SimpleNamespace())  # "ddp"
    line = str(_rank_failure(lightnings, tmp_path, torch.distributed.DistBackendError(message)))
    assert line.startswith("waited trainer.strategy.timeout_s seconds") and "timeout_s=<seconds> (the key" in line
    _rank_failure(rank1, tmp_path, RuntimeError("Timed out waiting 600000ms for send operation to complete"))
    assert failed_rank(tmp_path, wait_s=0).startswith("rank 1 failed: waited trainer.strategy.timeout_s=600 seconds")


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_rank_0_names_how_a_rank_it_started_ended_and_stops_those_that_outlive_the_run() -> None:
    """`RankWatch`: the lowest rank that failed and how (rank 0's line for a rank killed without an
    error of its own); at the run's end, a rank still running after the wait is killed."""
    killed, done, failed = (_python(code) for code in ("import os; os.kill(os.getpid(), 9)", "", "exit(2)"))
    for proc in (killed, done, failed):
        proc.wait()
    watch = RankWatch([done, killed, failed], first_rank=1)
    assert watch.failed(wait_s=10) == (2, -signal.SIGKILL)
    assert [exit_status(c) for c in (-signal.SIGKILL, 2, 0, -200)] == [
        "killed by SIGKILL",
        "exit status 2",
        "exit status 0",
        "killed by signal 200",  # a number no signal of this OS has
    ]
    stuck = _python("import time; time.sleep(60)")
    watch = RankWatch([stuck], first_rank=1)
    started = time.monotonic()
    watch.end(wait_s=0.5)
    assert stuck.returncode == -signal.SIGKILL and time.monotonic() - started < 10


_STOPPED_RANK_0 = """
import subprocess, sys, time
from pathlib import Path
from sr_gan import ranks
ranks.when_stopped(lambda line: Path(sys.argv[1]).write_text(line))
codes = ("", "import time; time.sleep(1); exit(2)", "import time; time.sleep(300)")  # ranks 1 to 3
quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}  # the test reads rank 0's pipes to their end
started = [subprocess.Popen([sys.executable, "-c", code], **quiet) for code in codes]
Path(sys.argv[2]).write_text(str(started[2].pid))
ranks.RankWatch(started, first_rank=1, grace_s=0.5).start()
time.sleep(20)  # rank 0 waiting for rank 2 in a collective that does not fail (NCCL)
"""


def _running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, ended but not yet reaped by its new parent, does not)."""
    stat = Path(f"/proc/{pid}/stat")
    if stat.parent.parent.is_dir():  # Linux
        with contextlib.suppress(OSError):
            return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_rank_0_left_waiting_for_a_failed_rank_is_stopped_with_a_line_and_a_record(tmp_path: Path) -> None:
    """Past the grace, `RankWatch` says which rank failed, has the run's end recorded (run.json said
    'running': rank 0 never reached its own record) and stops rank 0 and the ranks still running (a
    rank stuck outside any collective held its GPU). A rank that ended well before does not end the
    watch (rank 2 fails after rank 1 is done)."""
    record, stuck = tmp_path / "record.txt", tmp_path / "rank3.pid"
    proc = subprocess.run(
        [sys.executable, "-c", _STOPPED_RANK_0, str(record), str(stuck)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = (
        "rank 2 failed (exit status 2) and rank 0, waiting for it, had not ended the run 0.5 s later: every rank is "
        "stopped (SIGKILL)"
    )
    try:
        assert proc.returncode == -signal.SIGKILL and proc.stderr.splitlines()[-1] == f"error: {line}", proc.stderr
        assert record.read_text() == line
        deadline = time.monotonic() + 10
        while _running(int(stuck.read_text())) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _running(int(stuck.read_text()))
    finally:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError, ValueError):
            os.kill(int(stuck.read_text()), signal.SIGKILL)


_ENDED_RANK_0 = """
import subprocess, sys, time
from sr_gan import ranks
ranks.when_stopped(lambda line: print("recorded:", line))
watch = ranks.RankWatch([subprocess.Popen([sys.executable, "-c", "exit(2)"])], first_rank=1, grace_s=3)
watch.start()
time.sleep(1.5)  # the watch has seen rank 1 fail: rank 0 reports it, and ends the job in the grace
watch.end(0)
time.sleep(4)  # a sweep's next job in this process
print("went on")
"""


def test_a_rank_0_that_ends_the_job_in_the_grace_goes_on(tmp_path: Path) -> None:
    """`RankWatch.end` within the grace: rank 0 ended the run itself (its line, its record) and, in a
    sweep, goes on with its next job; the watch stops nothing then."""
    proc = subprocess.run(
        [sys.executable, "-c", _ENDED_RANK_0], env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["went on"], proc.stdout + proc.stderr


def test_the_ranks_that_outlive_the_run_share_one_wait(caplog: pytest.LogCaptureFixture) -> None:
    """`RankWatch.end`: the ranks still running get `wait_s` seconds in all, not each (8 stuck ranks
    held rank 0 for 80 s), and each one killed is named by its rank."""
    stuck = [_python("import time; time.sleep(60)") for _ in range(3)]
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="sr_gan.ranks"):
        RankWatch(stuck, first_rank=1).end(wait_s=3)
    assert [proc.returncode for proc in stuck] == [-signal.SIGKILL] * 3 and time.monotonic() - started < 7.5
    assert [record.getMessage().split(" still ran")[0] for record in caplog.records] == ["rank 1", "rank 2", "rank 3"]


def test_a_jobs_end_ends_the_watch_over_its_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ranks_of_this_job` ends the watch over the ranks its job started: a rank still running then is
    stopped, and the next job of a sweep has no watch (its ranks are its own)."""
    stuck = _python("import time; time.sleep(60)")
    monkeypatch.setattr(ranks, "RANK_EXIT_WAIT_S", 0.2)
    monkeypatch.setattr(ranks, "_watch", RankWatch([stuck], first_rank=1))
    with ranks_of_this_job():
        pass
    assert stuck.returncode == -signal.SIGKILL and ranks._watch is None


def test_the_launcher_watches_its_ranks_while_the_job_runs_numbered_on_their_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`RankLauncher.launch` swaps in `RankWatch` for Lightning's watch while the job runs only (a
    later strategy of the process gets Lightning's back), and the watch numbers the ranks it started
    from their node's first: ranks 5..7 on node 1 of 4 processes a node (not 1..3, node 0's)."""
    lightnings = subprocess_script._launch_process_observer
    monkeypatch.setenv("NODE_RANK", "1")
    in_launch = lambda *_a, **_k: subprocess_script._launch_process_observer  # noqa: E731 (Lightning's launch)
    monkeypatch.setattr(_SubprocessScriptLauncher, "launch", in_launch)
    monkeypatch.setattr(ranks, "_watch", None)
    launcher = RankLauncher(LightningEnvironment(), num_processes=4, num_nodes=2)
    observer = launcher.launch(print)
    assert observer == launcher._watch and subprocess_script._launch_process_observer is lightnings
    observer([])
    assert ranks._watch is not None and ranks._watch.first_rank == 5
    ranks._watch.end(0)


def test_a_jobs_end_forgets_its_record_of_a_stopped_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """`when_stopped`'s record is the job's: a sweep's next job (its run folder) does not inherit it."""
    monkeypatch.setattr(ranks, "_on_stop", None)
    with ranks_of_this_job():
        when_stopped(print)
        assert ranks._on_stop is print
    assert ranks._on_stop is None


def test_a_rank_not_started_here_that_ended_is_named_by_what_such_an_end_means(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under torchrun or srun (no `RankWatch` here) rank 0 cannot name the rank: it says what such an end is."""
    monkeypatch.setattr(ranks, "_watch", None)
    assert ended_rank_line(0) == (
        "a rank ended without an error of its own (killed: kill -9, out of host memory, its node lost)"
    )


def test_rank_0_waits_a_moment_for_a_killed_rank_to_be_seen_ending(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A killed rank's connections close a moment before its exit shows: rank 0, failing on the closed
    connection, waits STARTED_RANK_WAIT_S for it and names that rank (it said only that some rank was
    killed)."""
    killed = _python("import os, time; time.sleep(0.5); os.kill(os.getpid(), 9)")
    monkeypatch.setattr(ranks, "_watch", RankWatch([killed], first_rank=1))
    rank0 = SimpleNamespace(world_size=2, global_rank=0, num_nodes=1)
    line = str(_rank_failure(rank0, tmp_path, RuntimeError("Connection reset by peer")))
    assert line.startswith("rank 1 ended without an error of its own: killed by SIGKILL (kill -9"), line


def test_a_run_stopped_by_the_watch_records_the_failed_ranks_error_and_its_batches(tmp_path: Path) -> None:
    """run.json of a rank 0 that `RankWatch` stops: failed, with the error the failed rank recorded
    (else the watch's line), and the batches done (a host counter)."""
    trainer = SimpleNamespace(
        fit_loop=SimpleNamespace(
            epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(total=SimpleNamespace(completed=5)))
        )
    )
    _record_stopped(RunRecord(folder=tmp_path), trainer, "rank 1 failed (exit status 2) and rank 0 ...")
    assert [read_record(tmp_path)[k] for k in ("status", "error", "batches")] == [
        "failed",
        "rank 1 failed (exit status 2) and rank 0 ...",
        5,
    ]
    record_failure(tmp_path, 1, UserError("cannot read image a.png: its IDAT chunk is damaged"))
    _record_stopped(RunRecord(folder=tmp_path), trainer, "rank 1 failed (exit status 2) and rank 0 ...")
    assert read_record(tmp_path)["error"] == "rank 1 failed: cannot read image a.png: its IDAT chunk is damaged"


def test_the_process_group_timeout_is_the_configs(make_cfg) -> None:  # noqa: ANN001
    """trainer=ddp's trainer.strategy.timeout_s, in seconds, is the process group's timeout; Lightning's
    ``timeout`` takes a timedelta, which an override cannot give. The strategy train builds for
    trainer.devices > 1 without trainer=ddp waits as long; the line of a timeout names the value set."""
    strategy = instantiate(make_cfg("trainer=ddp").trainer.strategy)
    assert strategy._timeout == timedelta(seconds=1800) and strategy.timeout_s == 1800
    assert (PlayerDDPStrategy()._timeout, PlayerDDPStrategy().timeout_s) == (strategy._timeout, 1800)
    set_90 = instantiate(make_cfg("trainer=ddp", "trainer.strategy.timeout_s=90").trainer.strategy)
    assert (set_90._timeout.seconds, set_90.timeout_s) == (90, 90)
    with pytest.raises(UserError, match=r"trainer.strategy.timeout_s=0 must be > 0"):
        PlayerDDPStrategy(timeout_s=0)
    # no endless wait: inf (and anything timedelta cannot hold) failed in timedelta with a traceback
    for endless in (float("inf"), float("nan"), 1e15):
        with pytest.raises(
            UserError, match=rf"^trainer.strategy.timeout_s={re.escape(str(endless))} must be > 0 and at most 8.64e"
        ):
            PlayerDDPStrategy(timeout_s=endless)
    longest = PlayerDDPStrategy(timeout_s=LONGEST_TIMEOUT_S)
    assert longest._timeout == timedelta(days=timedelta.max.days)
    assert PlayerDDPStrategy().timeout_s == 1800  # the default where a config names no timeout_s


def test_a_rank_ended_by_another_signal_is_named_without_the_kill_9_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    """`ended_rank_line`: kill -9's cause (dmesg, host memory) is said of SIGKILL alone, a rank stopped
    by SIGTERM is named as such; `exit_status` gives a signal Python has no name for by its number."""
    stopped = _python("import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    stopped.wait()
    monkeypatch.setattr(ranks, "_watch", RankWatch([stopped], first_rank=3))
    assert ranks.ended_rank_line(0) == "rank 3 ended without an error of its own: killed by SIGTERM"
    unnamed = signal.SIGRTMIN + 1  # real-time signals past the first have no name in `signal.Signals`
    assert exit_status(-unnamed) == f"killed by signal {unnamed}"


def test_a_ranks_own_timeout_error_is_no_collective_timeout() -> None:
    """`is_timeout` takes the process group's RuntimeErrors only: a rank's own TimeoutError (an OSError,
    a hung file system's read) with the same words is its own failure, reported as it is."""
    assert is_timeout(RuntimeError("[gloo] Timed out waiting 60000ms for recv operation to complete"))
    assert not is_timeout(TimeoutError("Timed out waiting for /data/DIV2K to answer"))


def test_a_variable_the_user_had_set_is_given_back_when_the_job_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """MASTER_ADDR exported in the shell (no LOCAL_RANK: the ranks are this job's to start): the job's
    own value goes with it, the user's comes back for the sweep's next job."""
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MASTER_ADDR", "10.1.1.1")
    with ranks_of_this_job():
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29500", NODE_RANK="0", LOCAL_RANK="0", WORLD_SIZE="2")
    assert {name: os.environ.get(name) for name in RANK_VARIABLES if name in os.environ} == {"MASTER_ADDR": "10.1.1.1"}
