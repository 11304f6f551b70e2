"""The lines a run ends with: its folder, its numbers and the next commands, on the right checkpoint."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from sr_gan.run_summary import RunRecord, environment, source_commit, summary
from tests.helpers import SRC, child_env

# In a child whose files may not grow past 64 bytes (as a full disk fails a write): the record of a
# run that ended, a few hundred bytes, cannot be written.
_WRITE_ON_A_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from sr_gan.run_summary import RunRecord
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
RunRecord(folder=Path(sys.argv[1]), batches=9, metrics={"val/psnr": 25.0}).finish("done", None)
"""


@pytest.mark.parametrize(("gan", "expected"), [(False, "best.ckpt"), (True, "last.ckpt")])
def test_the_next_commands_take_the_result_checkpoint(tmp_path: Path, gan: bool, expected: str) -> None:
    """A PSNR stage's result is its best checkpoint by val/psnr; a GAN stage's is its last (both papers)."""
    (tmp_path / "checkpoints").mkdir()
    for name in ("best.ckpt", "last.ckpt"):
        (tmp_path / "checkpoints" / name).write_bytes(b"x")
    record = RunRecord(folder=tmp_path, status="done", batches=10, wall_s=1.0)
    lines = summary(record, best_psnr=28.5, last={"val/psnr": 28.0, "val/psnr_bicubic": 27.0}, gan=gan)
    assert lines[1] == "val/psnr: best 28.50 dB, last 28.00 dB, bicubic 27.00 dB"
    commands = [line for line in lines if "python -m sr_gan.evaluate" in line or "sr_gan.upscale" in line]
    assert len(commands) == 2 and all(f"ckpt={tmp_path / 'checkpoints' / expected} " in c for c in commands)


def test_the_next_compare_takes_a_sweep_or_this_run_beside_others(tmp_path: Path) -> None:
    """A sweep job's runs are its sweep's; a single run's parent is every run ever made in
    ``logs/train/runs`` (other data sets: compare refuses them), or /tmp under hydra.run.dir=/tmp/x."""
    for folder in (single := tmp_path / "runs" / "a", job := tmp_path / "sweep" / "0"):
        (folder / "checkpoints").mkdir(parents=True)
        (folder / "checkpoints" / "best.ckpt").write_bytes(b"x")
    (tmp_path / "sweep" / "multirun.yaml").write_text("{}")
    for folder, runs in ((single, f"{single} <other run folders>"), (job, f"{tmp_path / 'sweep'}")):
        lines = summary(RunRecord(folder=folder, status="done", batches=1, wall_s=1.0), best_psnr=None, last={})
        assert f"  python -m sr_gan.compare {runs}" in lines


def test_a_clones_commit_is_recorded_dirty_while_its_tracked_files_differ(tmp_path: Path) -> None:
    """The code a run ran: the clone's commit, marked dirty by a changed tracked file (not by the
    untracked runs and logs beside it); none for an installed package, which has no .git."""
    root = tmp_path / "clone"
    root.mkdir()
    assert source_commit(root) is None

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    (root / "train.py").write_text("lr = 1e-4\n")
    git("add", "train.py")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "code")
    (root / "run.log").write_text("untracked\n")
    assert source_commit(root) == git("rev-parse", "HEAD")
    (root / "train.py").write_text("lr = 1e-3\n")
    assert source_commit(root) == f"{git('rev-parse', 'HEAD')}-dirty"
    shutil.rmtree(root / ".git")
    (root / ".git").write_text("gitdir: /nowhere\n")  # a damaged clone: git cannot tell, the run goes on
    assert source_commit(root) is None


def test_a_resumed_run_adds_its_segment_to_the_recorded_wall_time(tmp_path: Path) -> None:
    """A pre-empted run resumed in its folder keeps the wall time of its earlier segments: run.json's
    wall_s is their sum, and batches/s is over all of it."""
    first = RunRecord(folder=tmp_path, started=time.time() - 100.0)
    first.batches = 50
    first.finish("preempted", None)
    assert json.loads((tmp_path / "run.json").read_text())["wall_s"] == pytest.approx(100.0, abs=1.0)
    second = RunRecord.resumed(tmp_path)
    second.started -= 60.0  # this segment: 60 s
    second.batches = 200
    second.finish("done", None)
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["wall_s"] == pytest.approx(160.0, abs=1.0)
    assert record["batches_per_s"] == pytest.approx(200 / 160.0, rel=0.01)
    assert RunRecord.resumed(tmp_path / "elsewhere").earlier_s == 0.0  # a new folder starts from zero


def test_the_records_files_stay_true_where_the_run_folder_moves_or_is_copied(tmp_path: Path) -> None:
    """run.json named its files by absolute paths: a run folder moved (scratch to project storage) named
    the old place, a copy the original's files (which go on changing if the original is resumed). They
    are named within the run folder now."""
    first, moved = tmp_path / "scratch" / "run", tmp_path / "project" / "run"
    (first / "checkpoints").mkdir(parents=True)
    (first / "checkpoints" / "best.ckpt").write_bytes(b"best")
    (first / "config.yaml").write_text("seed: 1\n")
    RunRecord(folder=first).finish("done", None)
    moved.parent.mkdir()
    first.rename(moved)
    files = json.loads((moved / "run.json").read_text())["files"]
    assert files == {"best": "checkpoints/best.ckpt", "config": "config.yaml"}
    assert (moved / files["best"]).read_bytes() == b"best"


@pytest.mark.parametrize("text", ['{"status": "runn', "[]", "\xff\xfe"])
def test_a_damaged_record_warns_and_never_blocks_a_resume(tmp_path: Path, text: str) -> None:
    """A run.json cut short (or not a record) is named in a warning and read as none: resuming goes on,
    its wall time restarts, and the run writes a valid record again."""
    (tmp_path / "run.json").write_text(text, encoding="latin-1")
    damaged = rf"{re.escape(str(tmp_path / 'run.json'))} is damaged \(.+\): taken as a run without a record"
    with pytest.warns(UserWarning, match=damaged):
        resumed = RunRecord.resumed(tmp_path)
    assert resumed.earlier_s == 0.0
    resumed.finish("done", None)
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "done"


def test_a_resume_or_a_branch_is_not_warned_about_its_checkpoints(caplog: pytest.LogCaptureFixture) -> None:
    """Lightning warns that the checkpoint folder is not empty: on a resume it always is; and that a
    branch's folder is another (its best is its own: a new run folder is the point of a branch)."""
    import logging
    import warnings

    from sr_gan.run_summary import quiet_third_party_noise

    with warnings.catch_warnings():
        try:
            quiet_third_party_noise()
            warnings.warn("Checkpoint directory /run/checkpoints exists and is not empty.", UserWarning, stacklevel=1)
            branch = "The dirpath has changed from '/a/checkpoints' to '/b/checkpoints', therefore ..."
            warnings.warn(branch, UserWarning, stacklevel=1)
            warnings.warn("another warning", UserWarning, stacklevel=1)
        finally:
            logging.captureWarnings(False)
    assert "not empty" not in caplog.text and "dirpath" not in caplog.text and "another warning" in caplog.text


def test_a_warning_about_the_users_input_is_logged_as_its_message_alone(caplog: pytest.LogCaptureFixture) -> None:
    """The random-VGG warning was logged at the line of Hydra's code that built the loss
    (``.../hydra/_internal/instantiate/_instantiate2.py:129: UserWarning: ...`` and that line's
    source); an `InputWarning` is its message, other warnings keep Python's location."""
    import logging
    import warnings

    from sr_gan.errors import InputWarning
    from sr_gan.losses.perceptual import RANDOM_VGG_WARNING
    from sr_gan.run_summary import quiet_third_party_noise

    python_format = warnings.formatwarning
    with warnings.catch_warnings():
        try:
            quiet_third_party_noise()
            warnings.warn(RANDOM_VGG_WARNING, InputWarning, stacklevel=1)
            warnings.warn("another warning", UserWarning, stacklevel=1)
        finally:
            logging.captureWarnings(False)
            warnings.formatwarning = python_format
    messages = [record.getMessage() for record in caplog.records if record.name == "py.warnings"]
    assert messages[0] == RANDOM_VGG_WARNING
    assert messages[1].startswith(__file__) and "UserWarning: another warning" in messages[1]


def test_a_failed_record_write_keeps_the_previous_record(tmp_path: Path) -> None:
    """run.json is replaced in one step: a write that fails half-way (a full disk) leaves the record
    the run wrote before, whole, and no temporary file (written in place it was cut to 64 bytes)."""
    RunRecord(folder=tmp_path, batches=4, metrics={"val/psnr": 24.0}).finish("preempted", None)
    before = (tmp_path / "run.json").read_bytes()
    child = subprocess.run(
        [sys.executable, "-c", _WRITE_ON_A_FULL_DISK, str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == 1 and "File too large" in child.stderr, child.stderr[-2000:]
    assert (tmp_path / "run.json").read_bytes() == before and len(before) > 64
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_an_interrupted_run_is_told_to_resume_only_once_it_has_a_checkpoint(tmp_path: Path) -> None:
    """A run stopped before its first checkpoint has nothing to resume from: no resume line (it
    would send the user to a ckpt_path=last that fails)."""
    record = RunRecord(folder=tmp_path, status="interrupted", wall_s=1.0)
    assert not [line for line in summary(record, best_psnr=None, last={}) if line.startswith("resume:")]
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert f"resume: the same command with ckpt_path={tmp_path}" in summary(record, best_psnr=None, last={})


def test_the_record_holds_the_trainers_scalar_metrics_and_the_error_in_one_line(tmp_path: Path) -> None:
    """run.json's metrics: the trainer's scalar metrics to 6 decimals (a PSNR's 1e-6 dB, not 0.01);
    its error: the exception's message on one line, as scripts and `sr_gan.compare` show it."""
    progress = SimpleNamespace(total=SimpleNamespace(completed=7))
    trainer = SimpleNamespace(
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
        callback_metrics={
            "val/psnr": torch.tensor(27.123456789),
            "val/ssim": torch.tensor(0.81234567),
            "map": torch.ones(3),
        },
    )
    error = RuntimeError("CUDA out of memory.\n  Tried to allocate 2.00 GiB")
    RunRecord(folder=tmp_path).finish("failed", trainer, error)  # type: ignore[arg-type]
    record = json.loads((tmp_path / "run.json").read_text())
    assert (record["status"], record["batches"]) == ("failed", 7)
    assert record["metrics"] == {
        "val/psnr": pytest.approx(27.123457, abs=1e-9),
        "val/ssim": pytest.approx(0.812346, abs=1e-9),
    }
    assert record["error"] == "CUDA out of memory. Tried to allocate 2.00 GiB"


# As a command starts: Lightning imported before any logging set-up (its `lightning.pytorch` and
# `lightning.fabric` loggers then print by themselves and stop propagating), then the run's quieting,
# then the root handlers of the run's log (Hydra's train.log and console).
_LIGHTNING_LINES = """
import io, logging
from lightning.pytorch.utilities import rank_zero_info
from sr_gan.run_summary import quiet_third_party_noise
quiet_third_party_noise()
train_log = io.StringIO()
logging.getLogger().addHandler(logging.StreamHandler(train_log))
logging.getLogger().setLevel(logging.INFO)
rank_zero_info("GPU available: False, used: False")
logging.getLogger("lightning.fabric.utilities.seed").info("Seed set to 42")
print(train_log.getvalue(), end="")
"""


def test_lightnings_own_lines_reach_the_runs_log_once() -> None:
    """Lightning's lines ("GPU available", "Seed set to 42") went to stderr only, never to train.log:
    `lightning.pytorch` and `lightning.fabric` keep a handler of their own and do not propagate when
    imported before logging is set up, as every sr-gan command imports them."""
    child = subprocess.run(
        [sys.executable, "-c", _LIGHTNING_LINES], env=child_env(), capture_output=True, text=True, timeout=120
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.splitlines() == ["GPU available: False, used: False", "Seed set to 42"]
    assert "GPU available" not in child.stderr and "Seed set" not in child.stderr  # not printed a second time


def test_the_environment_records_which_user_classes_checkpoints_may_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """$SR_GAN_TRUST, which a checkpoint of the user's own network needs to load: null where unset."""
    monkeypatch.delenv("SR_GAN_TRUST", raising=False)
    assert environment()["sr_gan_trust"] is None
    monkeypatch.setenv("SR_GAN_TRUST", "usernet.MyNet")
    assert environment()["sr_gan_trust"] == "usernet.MyNet"
