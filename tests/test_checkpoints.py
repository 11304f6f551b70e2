"""Checkpoints are never lost or half-written, never run code, and resume where they should."""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

import pytest
import torch
import wandb
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import WandbLogger
from omegaconf import OmegaConf

from sr_gan.callbacks import CTRL_C_NOTICE
from sr_gan.checkpoint_io import SafeCheckpointIO, downloaded, downloaded_once, load_run_checkpoint
from sr_gan.config import keep_recorded_start
from sr_gan.errors import UserError
from sr_gan.loggers import BESTS, ResumableCSVLogger, SRWandbLogger, folder_run_id, read_bests
from sr_gan.train import _resume_hint, resolve_ckpt_path, train
from tests.conftest import TINY
from tests.helpers import LAUGHS, SRC, child_env, file_size_limit, run_module, serve_folder, wandb_records

TINY_CLI = [o for o in TINY if not o.startswith("trainer.max_steps")] + ["module.num_samples=0", "test=false"]

_REWRITER = """
import sys, torch
from sr_gan.callbacks import CTRL_C_NOTICE
from sr_gan.checkpoint_io import SafeCheckpointIO, load_run_checkpoint
io, path = SafeCheckpointIO(), sys.argv[1]
for version in range(1, 1000):
    io.save_checkpoint({"state_dict": {"w": torch.full((2_000_000,), float(version))}}, path)
    print(version, flush=True)
"""


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), **extra}


@pytest.mark.slow
def test_kill_9_during_a_rewrite_leaves_a_whole_checkpoint(tmp_path: Path) -> None:
    """Lightning's own writer moves a temporary file from $TMPDIR; on another file system that is a
    copy, and a kill mid-copy left a 0-byte last.ckpt. Ours writes beside the target and renames."""
    other_fs = "/dev/shm" if Path("/dev/shm").is_dir() else str(tmp_path)
    path = tmp_path / "last.ckpt"
    rng = random.Random(0)
    for _ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", _REWRITER, str(path)], stdout=subprocess.PIPE, text=True, env=_env(TMPDIR=other_fs)
        )
        child.stdout.readline()  # one whole version written by this process
        time.sleep(rng.uniform(0.0, 0.15))  # then somewhere inside a later rewrite
        child.kill()
        child.wait()
        weights = torch.load(path, weights_only=True)["state_dict"]["w"]
        assert weights.shape == (2_000_000,) and torch.all(weights == weights[0]) and weights[0] >= 1
    SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # killed writers' temporaries removed


def _limit_file_size(limit: int) -> None:
    """In the child: files larger than `limit` bytes fail with EFBIG (as a full disk fails a write)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_previous_one(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = run_module("sr_gan.train", *TINY_CLI, "trainer.max_steps=2", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "sr_gan.train",
            *TINY_CLI,
            "trainer.max_steps=4",
            f"hydra.run.dir={run_dir}",
            "ckpt_path=last",
        ],
        cwd=tmp_path,
        env=_env(WANDB_MODE="offline"),
        capture_output=True,
        text=True,
        preexec_fn=functools.partial(_limit_file_size, len(before) // 2),
        timeout=300,
    )
    assert child.returncode == 2, child.stderr[-2000:]
    assert (
        child.stderr.splitlines()[-1].startswith("error: cannot write checkpoint") and "Traceback" not in child.stderr
    )
    assert "previous checkpoint is intact" in child.stderr
    assert last.read_bytes() == before
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_inside_torch_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """A checkpoint larger than the space left (here: this process's files may not grow past 1 MB, and
    it holds 4 MB of weights) fails inside torch.save's zip writer, which reports a RuntimeError
    ("unexpected pos") whose *context* is the OSError: still one line naming the full disk, the
    previous checkpoint intact. (The end-to-end test above runs out of space where the OSError
    itself comes out of torch.save.)"""
    path = tmp_path / "last.ckpt"
    SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(10)}}, path)
    before = path.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, hard))  # the soft limit only: put back below
    try:
        with pytest.raises(UserError) as info:
            SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(1_000_000)}}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert str(info.value).startswith(f"cannot write checkpoint {path}: the disk is full")
    assert isinstance(info.value.__context__, RuntimeError)  # what torch.save raised
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
def test_sigterm_saves_a_resumable_checkpoint_and_exits_143(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = [*TINY_CLI, f"hydra.run.dir={run_dir}"]
    child = subprocess.Popen(
        [sys.executable, "-m", "sr_gan.train", *args, "trainer.max_steps=100000"],
        cwd=tmp_path,
        env=_env(WANDB_MODE="offline"),
        stderr=subprocess.PIPE,
        text=True,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and time.monotonic() < deadline:  # training is under way
        time.sleep(0.2)
    child.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    assert child.wait(timeout=60) == 143, child.stderr.read()[-2000:]
    assert time.monotonic() - sent < 30
    saved = torch.load(last, weights_only=True)
    done = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"]
    assert done >= 2 and saved["SRDataModule"]["stream_position"] == 2 * done  # batch 2 per process

    resumed = run_module("sr_gan.train", *args, f"trainer.max_steps={done + 1}", "ckpt_path=last", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again = torch.load(last, weights_only=True)
    assert again["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == done + 1


@pytest.mark.slow
def test_a_terminal_ctrl_c_stops_after_the_step_with_the_loader_workers_alive(tmp_path: Path) -> None:
    """A terminal sends Ctrl-C to every process of the run, the loader workers too (here: SIGINT to
    the run's own process group during batch 3, the first half of an accumulated iteration). The
    workers ignore it, so the run can finish the iteration (batch 4, from the workers) and its
    validation: last.ckpt holds batch 4, the run exits 130 and prints the notice once. (The
    workers, ended by the signal, took the run down with "error: [Errno 2] No such file or
    directory" and no checkpoint.)"""
    run_dir = tmp_path / "run"
    ctrl_c = ["+callbacks.ctrl_c._target_=tests.helpers.CtrlCDuring", "+callbacks.ctrl_c.batch=3"]
    child = run_module(
        "sr_gan.train",
        *TINY_CLI,
        f"hydra.run.dir={run_dir}",
        "trainer.max_steps=100",
        "trainer.val_check_interval=2",
        "optim.accumulate_batches=2",
        "data.num_workers=2",
        *ctrl_c,
        "+callbacks.ctrl_c.group=true",
        own_session=True,
    )
    assert child.returncode == 130, child.stderr[-3000:]
    assert child.stderr.count(CTRL_C_NOTICE) == 1, child.stderr[-3000:]
    assert "Traceback" not in child.stderr
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 4
    with (run_dir / "csv" / "metrics.csv").open() as rows:
        assert [r["step"] for r in csv.DictReader(rows) if r.get("val/psnr")] == ["3"]  # Lightning's step: batch 4
    assert json.loads((run_dir / "run.json").read_text())["status"] == "interrupted"


# ---------------------------------------------------------------------------- resuming: what and from where
class _Payload:
    """Unpickling this runs code: it creates the file named by `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (self.marker, "pwned"))


def test_a_url_checkpoint_that_would_run_code_is_refused(make_cfg, tmp_path: Path, served: tuple[str, Path]) -> None:
    """A URL checkpoint is fetched and checked at start-up, like a file: refused before the run
    writes its record (it used to fail inside the fit, leaving a run marked failed), in messages
    that name the URL (not the temporary download), which is removed."""
    url, folder = served
    marker = tmp_path / "pwned.txt"
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, folder / "evil.ckpt")
    with pytest.raises(
        UserError, match=rf"^{url}/evil.ckpt: refused to load.*it needs .*pickled Python objects"
    ) as info:
        train(make_cfg(f"ckpt_path={url}/evil.ckpt"))
    assert not marker.exists() and "\n" not in str(info.value)
    torch.save({"conv_first.weight": torch.zeros(1)}, folder / "weights.pth")
    with pytest.raises(UserError, match=rf"^ckpt_path={url}/weights.pth holds weights, not a training run's"):
        train(make_cfg(f"ckpt_path={url}/weights.pth"))
    with pytest.raises(UserError, match="cannot download"):
        train(make_cfg(f"ckpt_path={url}/missing.ckpt"))
    assert not (tmp_path / "run.json").exists() and not list(tmp_path.glob(".sr_gan-download-*"))


def test_the_trainers_checkpoint_plugin_never_unpickles_code(tmp_path: Path) -> None:
    """Lightning reads every checkpoint of a fit and of its test stage (best.ckpt) through the trainer's
    plugin: a local file that would unpickle Python objects is refused before any of it runs."""
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6", "payload": _Payload(marker)}, path)
    with pytest.raises(UserError, match=r"refused to load.*pickled Python objects"):
        SafeCheckpointIO().load_checkpoint(path)
    assert not marker.exists()


def test_a_url_checkpoint_is_downloaded_into_the_folder_given_and_removed(
    tmp_path: Path, served: tuple[str, Path]
) -> None:
    """sr_gan.train fetches a URL checkpoint into the run folder (GBs on the run's disk, not in the
    system's temporary folder, often a small RAM disk); nothing of it is left after the block."""
    url, folder = served
    (folder / "run.ckpt").write_bytes(b"checkpoint bytes")
    run = tmp_path / "run"
    with downloaded(f"{url}/run.ckpt", folder=run) as local:
        assert local.is_relative_to(run) and local.read_bytes() == b"checkpoint bytes"
    assert list(run.iterdir()) == []


RANK = """
import os, sys, time
from pathlib import Path
import sr_gan.checkpoint_io as io
url, folder, barrier = sys.argv[1:]
fetch = io.fetch
io.fetch = lambda *args, **kwargs: time.sleep(3) or fetch(*args, **kwargs)  # as a checkpoint of 440 MB
with io.downloaded_once(url, folder=folder) as local:
    print(local.read_bytes().decode(), flush=True)
    (Path(barrier) / str(os.getpid())).touch()  # as DDP's start-up broadcast: no rank's fit ends before
    while len(list(Path(barrier).iterdir())) < 2:  # every rank has loaded the checkpoint
        time.sleep(0.05)
"""


def test_ranks_started_side_by_side_download_a_url_once(tmp_path: Path) -> None:
    """torchrun or srun start the ranks of one run at once, each its own process with its own
    environment: the first to take the run folder's lock fetches the URL, the other waits and reads
    that copy; nothing is left once both have ended."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "a.ckpt").write_bytes(b"checkpoint a")
    run, barrier = tmp_path / "run", tmp_path / "barrier"
    barrier.mkdir()
    with serve_folder(folder) as (url, requested):
        ranks = [
            subprocess.Popen(
                [sys.executable, "-c", RANK, f"{url}/a.ckpt", str(run), str(barrier)],
                env=child_env(),
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [rank.communicate(timeout=120)[0] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0] and outputs == ["checkpoint a\n"] * 2
    assert requested == ["/a.ckpt"] and list(run.iterdir()) == []


def test_one_runs_processes_read_one_download_of_each_url(tmp_path: Path) -> None:
    """A second process of the run (here a second block in this one) reads the copy the first
    fetched; another URL, or another run folder, is fetched on its own."""
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "a.ckpt").write_bytes(b"checkpoint a")
    (folder / "b.ckpt").write_bytes(b"checkpoint b")
    with serve_folder(folder) as (url, requested):
        with downloaded_once(f"{url}/a.ckpt", folder=tmp_path / "run") as rank0:
            with downloaded_once(f"{url}/a.ckpt", folder=tmp_path / "run") as rank1:
                assert rank1 == rank0 and rank1.read_bytes() == b"checkpoint a"
            with downloaded_once(f"{url}/b.ckpt", folder=tmp_path / "run") as other:
                assert other.read_bytes() == b"checkpoint b"
            assert requested == ["/a.ckpt", "/b.ckpt"]
            with downloaded_once(f"{url}/a.ckpt", folder=tmp_path / "other run") as elsewhere:
                assert elsewhere.read_bytes() == b"checkpoint a"
        assert requested == ["/a.ckpt", "/b.ckpt", "/a.ckpt"]
        with downloaded_once(f"{url}/a.ckpt", folder=tmp_path / "run") as later:  # its copy is gone now
            assert later.read_bytes() == b"checkpoint a"
        assert requested == ["/a.ckpt", "/b.ckpt", "/a.ckpt", "/a.ckpt"]
    assert list((tmp_path / "run").iterdir()) == []


def test_without_file_locks_each_process_downloads_its_own_copy(served, tmp_path: Path) -> None:
    """Some Lustre and NFS mounts refuse flock: the run goes on, each process with its own copy."""
    url, folder = served
    (folder / "a.ckpt").write_bytes(b"checkpoint a")
    with patch("sr_gan.checkpoint_io.fcntl.flock", side_effect=OSError(38, "Function not implemented")):
        with downloaded_once(f"{url}/a.ckpt", folder=tmp_path / "run") as first:
            with downloaded_once(f"{url}/a.ckpt", folder=tmp_path / "run") as second:
                assert first != second and first.read_bytes() == second.read_bytes() == b"checkpoint a"
    assert list((tmp_path / "run").iterdir()) == []


def test_a_failed_download_leaves_nothing_in_the_run_folder(served, tmp_path: Path) -> None:
    url, _ = served
    with pytest.raises(UserError, match=r"^ckpt_path=.*/missing\.ckpt: cannot download it"):
        with downloaded_once(f"{url}/missing.ckpt", folder=tmp_path / "run"):
            pass
    assert list((tmp_path / "run").iterdir()) == []


def test_resume_from_a_url(make_cfg, tmp_path: Path) -> None:
    """The URL is fetched once: the start-up check and Lightning's load read the one copy."""
    folder = tmp_path / "served"
    folder.mkdir()
    train(make_cfg("trainer.max_steps=2", "test=false"))
    (folder / "run.ckpt").write_bytes((tmp_path / "checkpoints" / "last.ckpt").read_bytes())
    with serve_folder(folder) as (url, requested):
        train(make_cfg("trainer.max_steps=3", "test=false", f"ckpt_path={url}/run.ckpt"))
    assert requested == ["/run.ckpt"]
    resumed = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 3
    assert not list(tmp_path.glob(".sr_gan-download-*"))  # the download, in the run folder, is gone


def test_resuming_with_other_networks_is_refused_in_one_line(make_cfg) -> None:
    train(make_cfg("loss=ragan", "trainer.max_steps=1", "test=false"))
    with pytest.raises(UserError, match=r"model\.generator\.num_blocks=1 in the checkpoint, 2 here") as info:
        train(make_cfg("loss=ragan", "trainer.max_steps=2", "model.generator.num_blocks=2", "ckpt_path=last"))
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"discriminator\._target_=sr_gan\.archs\.VGGStyleDiscriminator"):
        train(make_cfg("loss=ragan", "discriminator=unet", "trainer.max_steps=2", "ckpt_path=last"))
    folder = Path(make_cfg().paths.output_dir)  # the refusals left the run's record as the run wrote it
    assert json.loads((folder / "run.json").read_text())["status"] == "done"
    assert OmegaConf.load(folder / "config.yaml").model.generator.num_blocks == 1  # what the error points to


def test_a_checkpoint_naming_files_outside_its_folder_is_refused_before_lightning_deletes_them(
    make_cfg, tmp_path: Path
) -> None:
    """Lightning's ModelCheckpoint takes `best_model_path` from a resumed checkpoint and deletes that
    file (recursively) once a newer checkpoint replaces it, if its folder is among the path's parents
    as written: `<run>/checkpoints/../elsewhere` passed, and a crafted checkpoint removed a folder
    outside the checkpoints. Such a name (a '..', a link, a URL) is refused in one line, nothing deleted."""
    train(make_cfg("trainer.max_steps=2", "test=false"))
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "thesis.tex").parent.mkdir()
    (elsewhere / "thesis.tex").write_text("precious")
    crafted = str(tmp_path / "checkpoints" / ".." / "elsewhere")
    for state in checkpoint["callbacks"].values():
        if "best_model_path" in state:
            state["best_model_path"] = crafted
    torch.save(checkpoint, last)
    with pytest.raises(UserError, match=rf"ckpt_path={last}: .*names '{re.escape(crafted)}', ") as info:
        train(make_cfg("trainer.max_steps=4", "test=false", "ckpt_path=last"))
    assert "\n" not in str(info.value)
    assert (elsewhere / "thesis.tex").read_text() == "precious"


def test_only_mapping_callback_states_are_searched_for_file_names(tmp_path: Path) -> None:
    """A callback state that is no mapping names no file (skipped); a mapping beside it is still checked."""
    path = tmp_path / "run.ckpt"
    bad = {"ModelCheckpoint": {"best_model_path": "https://example.org/best.ckpt"}}
    torch.save({"pytorch-lightning_version": "2.5.0", "callbacks": {"Timer": [1, 2]}}, path)
    assert load_run_checkpoint(path)["callbacks"] == {"Timer": [1, 2]}
    torch.save({"pytorch-lightning_version": "2.5.0", "callbacks": {"Timer": [1, 2]} | bad}, path)
    with pytest.raises(UserError, match=r"names 'https://example\.org/best\.ckpt'"):
        load_run_checkpoint(path)


def test_a_failed_checkpoint_write_of_no_disk_error_is_raised_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a failed write (an OSError, or torch.save's RuntimeError around one) is the one-line "cannot
    write checkpoint": another error is a fault to report whole, and the previous checkpoint stays."""
    path = tmp_path / "last.ckpt"
    SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(10)}}, path)
    before = path.read_bytes()

    def faulty_save(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a fault of torch.save")

    monkeypatch.setattr(torch, "save", faulty_save)
    with pytest.raises(RuntimeError, match="^a fault of torch.save$"):
        SafeCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(10)}}, path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_run_folder_moved_behind_a_link_still_resumes(make_cfg, tmp_path: Path) -> None:
    """A run folder moved and reached through a link at its old place (a disk migration) names its
    checkpoints by their old real paths: resumed, not refused as crafted (a check of real paths
    refused it), and Lightning leaves those names alone."""
    cfg = make_cfg("trainer.max_steps=2", "test=false")
    cfg.paths.output_dir = str(tmp_path / "old" / "run")
    train(cfg)
    (tmp_path / "old").rename(tmp_path / "new")
    (tmp_path / "old").symlink_to(tmp_path / "new")
    cfg = make_cfg("trainer.max_steps=4", "test=false", "ckpt_path=last")
    cfg.paths.output_dir = str(tmp_path / "old" / "run")
    train(cfg)
    last = torch.load(tmp_path / "new" / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4


@pytest.mark.parametrize("zipfile", [True, False])  # torch's format since 1.6, and its legacy pickle
def test_the_start_up_look_at_a_checkpoint_maps_it_and_reads_what_lightning_reads(
    tmp_path: Path, zipfile: bool
) -> None:
    """sr_gan.train checks a resumed checkpoint's networks before Lightning loads it: mapped, not
    read twice (a 440 MB checkpoint: 0.007 s against 0.23 s from the page cache), with the same
    content; a legacy-format file, which cannot be mapped, is read."""
    checkpoint = {"state_dict": {"w": torch.arange(6.0)}, "sr_gan": {"scale": 4}, "pytorch-lightning_version": "2"}
    path = tmp_path / "last.ckpt"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=zipfile)
    mapped, read = load_run_checkpoint(path, mmap=True), SafeCheckpointIO().load_checkpoint(path)
    assert mapped["sr_gan"] == read["sr_gan"] == {"scale": 4}
    assert torch.equal(mapped["state_dict"]["w"], read["state_dict"]["w"])
    weights = tmp_path / "g.pth"
    torch.save({"w": torch.zeros(1)}, weights, _use_new_zipfile_serialization=zipfile)
    with pytest.raises(UserError, match=r"holds weights, not a training run's checkpoint.*model\.init_from="):
        load_run_checkpoint(weights, mmap=True)


def test_ckpt_path_forms(tmp_path: Path) -> None:
    assert resolve_ckpt_path(None, tmp_path) is None
    assert resolve_ckpt_path("", tmp_path) is None  # `ckpt_path=` on the command line: none
    assert resolve_ckpt_path("last", tmp_path) is None  # nothing yet: a fresh start
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    assert resolve_ckpt_path("last", tmp_path) == str(last)
    assert resolve_ckpt_path(str(tmp_path), Path("elsewhere")) == str(last)  # a run folder
    assert resolve_ckpt_path("https://example.org/a.ckpt", tmp_path) == "https://example.org/a.ckpt"
    with pytest.raises(UserError, match="ckpt_path=nowhere.ckpt: no such checkpoint"):
        resolve_ckpt_path("nowhere.ckpt", tmp_path)


def test_a_run_cut_short_is_told_to_resume_in_its_own_folder_a_sweeps_job_in_its_sweeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hint a run cut short prints: its own folder with ckpt_path=last (ckpt_path=<folder> alone
    would go on in a new folder). A sweep's job: the sweep in its folder (hydra.run.dir does not place
    a -m job); it was told `the same command with ckpt_path=<job folder>`, which made every job of a
    new sweep folder a branch of that one job's checkpoint."""
    hint = f"the same command with hydra.run.dir={tmp_path} ckpt_path=last"
    assert _resume_hint(tmp_path) == hint  # no Hydra (sr_gan.train called in process)
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    swept = f"the same sweep with hydra.sweep.dir={tmp_path} ckpt_path=last (its done jobs stay as they are)"
    for mode, subdir, folder, expected in (
        (RunMode.RUN, "", tmp_path, hint),
        (RunMode.MULTIRUN, "2", tmp_path / "2", swept),
        (RunMode.MULTIRUN, "lr=1e-4/2", tmp_path / "lr=1e-4" / "2", swept),  # a subdir of its own
    ):
        config = SimpleNamespace(mode=mode, sweep=SimpleNamespace(subdir=subdir))
        monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda config=config: config))
        assert _resume_hint(folder) == expected


def test_a_requeued_slurm_job_resumes_its_own_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
    assert resolve_ckpt_path(None, tmp_path) is None  # the first attempt starts afresh
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resolve_ckpt_path(None, tmp_path) == str(last)
    assert resolve_ckpt_path("", tmp_path) == str(last)  # `ckpt_path=` in the job script: none given


def test_a_run_folder_whose_subfolder_links_outside_it_is_refused(make_cfg, tmp_path: Path) -> None:
    """A resumed run folder (maybe someone else's) whose checkpoints/ is a link to another folder had the
    resume write its checkpoints there, and replace (delete) the ones of that folder Lightning tracks: it
    is refused in one line naming the link, nothing written there; a link within the run folder resumes."""
    train(make_cfg("trainer.max_steps=2", "test=false"))
    elsewhere, own = tmp_path.parent / f"{tmp_path.name}-elsewhere", tmp_path / "checkpoints"
    own.rename(elsewhere)
    own.symlink_to(elsewhere, target_is_directory=True)
    before = {p.name: p.stat().st_mtime_ns for p in elsewhere.iterdir()}
    with pytest.raises(UserError) as info:
        train(make_cfg("trainer.max_steps=4", "test=false", "ckpt_path=last"))
    assert str(info.value) == (
        f"{own} is a link to {elsewhere}, outside the run folder, where the run would write (and delete) its "
        "checkpoints: replace the link by a folder holding its files, or move the whole run folder there and "
        "pass that folder as hydra.run.dir"
    )
    assert {p.name: p.stat().st_mtime_ns for p in elsewhere.iterdir()} == before
    own.unlink()
    elsewhere.rename(tmp_path / "kept")
    own.symlink_to("kept", target_is_directory=True)  # within the run folder
    train(make_cfg("trainer.max_steps=4", "test=false", "ckpt_path=last"))
    resumed = torch.load(tmp_path / "kept" / "last.ckpt", weights_only=True)
    assert resumed["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 4


@pytest.mark.parametrize("how", ["moved", "linked within"])
def test_a_run_folder_resumed_in_another_place_keeps_its_best_checkpoint(
    make_cfg, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """ModelCheckpoint restores its record (best score, best file) only in the folder it was written in:
    a run folder moved to another disk, or whose checkpoints/ became a link within it, lost it on resume,
    and the next validation wrote best-v1.ckpt beside a stale best.ckpt (which run.json and test named),
    whatever its score. The record now follows the folder: one best.ckpt, the best of all validations."""
    first, second = tmp_path / "first", tmp_path / "second"
    steps = ("trainer.val_check_interval=1", "test=false")
    train(make_cfg("trainer.max_steps=2", *steps))  # validates after batches 1 and 2
    if how == "moved":
        for name in os.listdir(tmp_path):
            if name not in (first.name, "logs"):
                first.mkdir(exist_ok=True)
                (tmp_path / name).rename(first / name)
        first.rename(second)
        folder = second
    else:
        (tmp_path / "checkpoints").rename(tmp_path / "kept")
        (tmp_path / "checkpoints").symlink_to("kept", target_is_directory=True)
        folder = tmp_path
    cfg = make_cfg("trainer.max_steps=4", *steps, "ckpt_path=last")
    cfg.paths.output_dir = str(folder)
    with caplog.at_level(logging.INFO, logger="sr_gan.callbacks"):
        train(cfg)
    checkpoints = (folder / "checkpoints").resolve()
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    with open(folder / "csv" / "metrics.csv") as f:
        psnrs = [float(row["val/psnr"]) for row in csv.DictReader(f) if row.get("val/psnr")]
    assert len(psnrs) == 4
    record = json.loads((folder / "run.json").read_text())
    assert record["metrics"]["best/val/psnr"] == pytest.approx(max(psnrs), abs=1e-4)
    best = torch.load(checkpoints / "best.ckpt", weights_only=True)
    state = next(v for k, v in best["callbacks"].items() if "val/psnr" in k)
    assert (state["dirpath"], state["best_model_path"]) == (str(checkpoints), str(checkpoints / "best.ckpt"))
    assert "best.ckpt's record follows" in caplog.text


def test_a_branch_from_a_moved_run_folder_tests_the_best_checkpoint_where_it_is_now(make_cfg, tmp_path: Path) -> None:
    """A branch (ckpt_path=<run folder>, a new folder) that validates no more tests the best checkpoint
    its checkpoint names: after the run folder moved, its old place (`no such weight file`, after
    training), or for a copy the original's file. It now names the best.ckpt beside the checkpoint read."""
    moved = tmp_path / "project"
    train(make_cfg("trainer.max_steps=2", "trainer.val_check_interval=1", "test=false"))
    moved.mkdir()
    for name in ("checkpoints", "config.yaml", "run.json"):
        (tmp_path / name).rename(moved / name)
    branch = make_cfg("trainer.max_steps=2", f"ckpt_path={moved}")  # its budget is done: no validation
    branch.paths.output_dir = str(tmp_path / "branch")
    train(branch)
    record = json.loads((tmp_path / "branch" / "run.json").read_text())
    assert record["status"] == "done" and "test/psnr" in record["metrics"]


def test_a_moved_folders_record_follows_into_the_folder_resumed_in_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`MovedRunFolder` renames a checkpoint callback's record from the folder it was written in to the
    one it resumes in (reached here through a link), names in that folder only (a name elsewhere stays:
    Lightning removes only files of its folder), and leaves alone a record of the folder itself, a
    branch (ckpt_path in another folder) and a callback the checkpoint holds no record of."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from sr_gan.callbacks import MovedRunFolder

    here = tmp_path / "run" / "checkpoints"
    here.mkdir(parents=True)
    (tmp_path / "link").symlink_to(here, target_is_directory=True)
    best = ModelCheckpoint(dirpath=here, monitor="val/psnr", mode="max")
    unrecorded = ModelCheckpoint(dirpath=here, monitor="val/ssim", mode="max")
    old = "/old/run/checkpoints"

    def record(folder: str) -> dict[str, Any]:
        return {
            "dirpath": folder,
            "best_model_path": f"{folder}/best.ckpt",
            "kth_best_model_path": "/elsewhere/best.ckpt",
            "last_model_path": "",
            "best_k_models": {f"{folder}/best.ckpt": 30.0, "/elsewhere/best.ckpt": 29.0},
        }

    def resume(ckpt_path: Path | str, written_in: str) -> dict[str, Any]:
        checkpoint = {"callbacks": {best.state_key: record(written_in)}}
        trainer = SimpleNamespace(ckpt_path=str(ckpt_path), checkpoint_callbacks=[best, unrecorded])
        with caplog.at_level(logging.INFO, logger="sr_gan.callbacks"):
            MovedRunFolder().on_load_checkpoint(trainer, None, checkpoint)
        return checkpoint["callbacks"][best.state_key]

    expected = record(str(here.resolve())) | {"kth_best_model_path": "/elsewhere/best.ckpt"}
    expected["best_k_models"] = {f"{here.resolve()}/best.ckpt": 30.0, "/elsewhere/best.ckpt": 29.0}
    assert resume(tmp_path / "link" / "last.ckpt", old) == expected
    assert f"checkpoints written in {old}, read from {here.resolve()}: best.ckpt's record follows" in caplog.text
    caplog.clear()
    assert resume(here / "last.ckpt", str(here.resolve())) == record(str(here.resolve()))
    assert resume(f"{old}/last.ckpt", old) == record(old)  # a branch: ckpt_path of another run
    assert "record follows" not in caplog.text


def test_non_finite_weights_never_replace_a_checkpoint(tmp_path: Path) -> None:
    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, path)
    with pytest.raises(UserError, match=r"refused to write .*last\.ckpt: 1 weight tensors hold NaN/Inf \(e\.g\. w\)"):
        io.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, float("nan"), 2.0])}}, path)
    assert torch.equal(torch.load(path, weights_only=True)["state_dict"]["w"], torch.ones(3))


def test_a_relaunch_keeps_the_recorded_start_of_the_run(
    make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Resuming takes G from the checkpoint, so a relaunch may leave model.init_from out (the demo's GAN
    stage sets it on the first start only); config.yaml must still say what the run started from. So
    for its seed: the relaunch goes on with the checkpoint's random states and patch stream, and a
    relaunch without the run's seed=3 recorded the default 42 (a rerun from config.yaml was another run),
    and so did a branch into a new folder."""
    train(make_cfg("trainer.max_steps=1", "test=false"))
    start = tmp_path / "psnr_stage.ckpt"
    start.write_bytes((tmp_path / "checkpoints" / "last.ckpt").read_bytes())
    train(make_cfg("loss=ragan", "trainer.max_steps=1", "test=false", f"model.init_from={start}", "seed=3"))
    with caplog.at_level(logging.WARNING, logger="sr_gan.train"):
        train(make_cfg("loss=ragan", "trainer.max_steps=2", "test=false", "ckpt_path=last"))
    recorded = OmegaConf.load(tmp_path / "config.yaml")
    assert recorded.model.init_from == str(start) and recorded.trainer.max_steps == 2  # the rest is the relaunch's
    assert (recorded.seed, recorded.data.seed) == (3, 3)
    assert "seed=42 (the run's 3), data.seed=42 (the run's 3): a resume goes on with" in caplog.text
    branch = make_cfg("loss=ragan", "trainer.max_steps=3", "test=false", f"ckpt_path={tmp_path}")
    branch.paths.output_dir = str(tmp_path / "branch")  # a new folder: the seed of the run it branches from
    train(branch)
    assert OmegaConf.load(tmp_path / "branch" / "config.yaml").seed == 3


@pytest.mark.parametrize("relaunch", ["the same command", "without model.init_from"])
def test_a_gan_stage_resumes_after_the_run_it_started_from_moved(
    make_cfg, tmp_path: Path, relaunch: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A resume takes G from its checkpoint: model.init_from is neither read nor required then. A GAN
    stage whose PSNR run had moved (scratch to project storage) was refused on resume: the same command
    with `model.init_from=no such file`, and without it `this recipe starts from a PSNR-oriented
    generator` (require_init_from), though its config.yaml keeps the run's model.init_from."""
    train(make_cfg("trainer.max_steps=1", "test=false"))
    start = tmp_path / "scratch" / "best.ckpt"
    start.parent.mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").rename(start)
    gan = ("require_init_from=true", "test=false", f"model.init_from={start}")
    train(make_cfg(*gan, "trainer.max_steps=1"))
    start.rename(tmp_path / "project.ckpt")  # the PSNR run moved
    again = gan if relaunch == "the same command" else gan[:2]
    with caplog.at_level(logging.INFO, logger="sr_gan.train"):
        train(make_cfg(*again, "trainer.max_steps=2", "ckpt_path=last"))
    said = [r.message for r in caplog.records if "not read" in r.message]  # the log says why it is not read
    not_read = f"model.init_from={start} not read: the checkpoint resumed holds the generator"
    assert said == ([not_read] if again == gan else [])
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 2
    assert OmegaConf.load(tmp_path / "config.yaml").model.init_from == str(start)


def test_ckpt_path_last_in_a_folder_without_last_ckpt_still_requires_init_from(make_cfg, tmp_path: Path) -> None:
    """Only a resume goes without model.init_from: ckpt_path=last where no last.ckpt is yet starts from
    scratch, so a GAN recipe (require_init_from) still asks for the PSNR stage's weights."""
    with pytest.raises(UserError, match="^this recipe starts from a PSNR-oriented generator"):
        train(make_cfg("require_init_from=true", "ckpt_path=last"))
    assert not (tmp_path / "run.json").exists()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (LAUGHS, "is not valid YAML (line 1: its aliases expand it past 100,000 values)"),  # 10**9 hung the resume
        ("- seed\n- data\n", "holds a list, not a mapping"),  # an AttributeError traceback
    ],
)
def test_a_damaged_recorded_config_is_named_in_one_line(text: str, problem: str, tmp_path: Path) -> None:
    """The config.yaml of a resumed run folder (maybe someone else's) is read with compare's bounded loader."""
    previous = tmp_path / "config.yaml"
    previous.write_text(text)
    with pytest.raises(UserError) as info:
        keep_recorded_start({"model": {}, "data": {}}, previous)
    assert str(info.value) == (
        f"ckpt_path: the run's {previous} {problem}: restore it, or delete it to record this command's seed "
        "and model.init_from"
    )
    previous.write_text("seed: 3\nmodel: [init_from]\ndata: 7\n")  # sections that are no mappings: not ours
    resolved: dict[str, Any] = {"seed": 1, "model": {}, "data": {"seed": 1}}
    assert keep_recorded_start(resolved, previous) == ["seed=1 (the run's 3)"]


def test_a_resumed_run_keeps_the_environments_of_its_earlier_segments(tmp_path: Path) -> None:
    """config.yaml recorded only the latest segment's environment: a run resumed after a torch upgrade
    lost what its first iterations ran with. Earlier segments that differ are kept, oldest first."""
    previous = tmp_path / "config.yaml"

    def resume(torch_version: str) -> dict[str, Any]:
        resolved = {"model": {}, "data": {}, "environment": {"torch": torch_version, "commit": "abc"}}
        keep_recorded_start(resolved, previous)
        previous.write_text(yaml.safe_dump(resolved))
        return resolved["environment"]

    previous.write_text(yaml.safe_dump({"environment": {"torch": "2.8.0", "commit": "abc"}}))
    assert resume("2.8.0") == {"torch": "2.8.0", "commit": "abc"}  # resumed on the same machine: nothing kept
    assert resume("2.9.1") == {"torch": "2.9.1", "commit": "abc", "earlier": [{"torch": "2.8.0", "commit": "abc"}]}
    assert resume("2.9.1")["earlier"] == [{"torch": "2.8.0", "commit": "abc"}]
    assert [e["torch"] for e in resume("2.10.0")["earlier"]] == ["2.8.0", "2.9.1"]


@pytest.mark.parametrize("earlier", [5, {"torch": "2.7.0"}, [5, "2.6.0", {"torch": "2.7.0"}]])
def test_a_damaged_list_of_earlier_environments_keeps_what_it_can(tmp_path: Path, earlier: Any) -> None:
    """A config.yaml whose environment.earlier is no list, or holds entries that are no mappings (a hand
    edit, a damaged file): the resume went on with what was readable; ``earlier: 5`` stopped it with a
    TypeError traceback ("'int' object is not iterable")."""
    previous = tmp_path / "config.yaml"
    previous.write_text(yaml.safe_dump({"environment": {"torch": "2.8.0", "earlier": earlier}}))
    resolved = {"model": {}, "data": {}, "environment": {"torch": "2.9.1"}}
    keep_recorded_start(resolved, previous)
    kept = [{"torch": "2.7.0"}] if isinstance(earlier, list) else []
    assert resolved["environment"] == {"torch": "2.9.1", "earlier": [*kept, {"torch": "2.8.0"}]}


def test_a_run_resumed_in_its_folder_continues_its_wandb_run(
    make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A pre-empted run's segments are one W&B run (offline: two segment folders of one id, which
    `wandb sync` uploads into it), not one W&B run per segment, under the name of its first (a later
    segment's overrides add ckpt_path and a longer budget: it sends none, and W&B keeps the name); a
    damaged id file starts a new one. The summary's best val/psnr is the run's, not the segment's
    (a first segment's best above all of the second's stands in for a GAN run's fall)."""
    train(make_cfg("logger=wandb", "trainer.max_steps=1", "test=false"))
    bests = json.loads((tmp_path / "wandb" / "bests.json").read_text())
    (tmp_path / "wandb" / "bests.json").write_text(json.dumps(bests | {"val/psnr": bests["val/psnr"] + 50}))
    train(make_cfg("logger=wandb", "trainer.max_steps=2", "test=false", "ckpt_path=last"))
    wandb.teardown()  # W&B's service writes a finished run's file after `finish` returns (seen under load)
    run_id = (tmp_path / "wandb" / "run_id").read_text().strip()
    segments = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and all(folder.name.endswith(f"-{run_id}") for folder in segments)
    names = []
    for folder in segments:
        records = wandb_records(next(folder.glob("run-*.wandb")))
        assert {r.run.run_id for r in records if r.HasField("run")} == {run_id}
        names += [{r.run.display_name for r in records if r.HasField("run")}]
    psnrs = [
        json.loads(i.value_json)
        for r in records
        if r.HasField("summary")
        for i in r.summary.update
        if i.key == "val/psnr"
    ]
    assert psnrs[-1]["max"] == bests["val/psnr"] + 50 and psnrs[-1]["last"] < bests["val/psnr"] + 50
    (first,) = names[0]  # named once, by what the run is: not by where it logs or how it is resumed
    assert first.startswith("train-") and "logger=" not in first and "paths." not in first and names[1] == {""}

    (tmp_path / "wandb" / "run_id").write_text("../../elsewhere\n")  # damaged: a new W&B run, the training goes on
    with caplog.at_level(logging.WARNING, logger="sr_gan.loggers"):
        train(make_cfg("logger=wandb", "trainer.max_steps=3", "test=false", "ckpt_path=last"))
    assert "wandb/run_id does not hold a W&B run id: this run logs to a new W&B run" in caplog.text
    new_id = (tmp_path / "wandb" / "run_id").read_text().strip()
    assert new_id != run_id and len(list((tmp_path / "wandb").glob(f"offline-run-*-{new_id}"))) == 1
    assert json.loads((tmp_path / "run.json").read_text())["batches"] == 3


def test_a_failed_run_rerun_from_scratch_in_its_folder_logs_to_a_new_wandb_run(
    make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run (a sweep's job) that failed before its first checkpoint and is relaunched in its folder
    (``ckpt_path=last``) starts from scratch: it kept the folder's W&B run id, so its rows from
    batch 0 on followed the failed attempt's in one W&B run (two segments of one id, each logging
    trainer/global_step 0), whose name stayed the failed attempt's (optim.generator.lr=1e8: a resumed
    segment sends none). It now logs to a new W&B run under its own name, with a warning naming
    the old one; a resume from a checkpoint keeps its run
    (`test_a_run_resumed_in_its_folder_continues_its_wandb_run`)."""
    with caplog.at_level(logging.WARNING, logger="sr_gan.loggers"), pytest.raises(UserError, match="NaN/Inf"):
        train(make_cfg("logger=wandb", "optim.generator.lr=1e8", "test=false"))
    wandb.teardown()  # W&B's service writes a finished run's file after `finish` returns
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert "W&B run" not in caplog.text  # a first start, from scratch too, had no W&B run to warn about
    old_id = (tmp_path / "wandb" / "run_id").read_text().strip()
    with caplog.at_level(logging.WARNING, logger="sr_gan.loggers"):
        train(make_cfg("logger=wandb", "test=false", "ckpt_path=last"))
    wandb.teardown()
    new_id = (tmp_path / "wandb" / "run_id").read_text().strip()
    assert new_id != old_id
    assert f"starts from scratch (no checkpoint to resume) and logs to a new W&B run {new_id}: W&B run {old_id}" in (
        caplog.text
    )
    (segment,) = (tmp_path / "wandb").glob(f"offline-run-*-{new_id}")
    (name,) = {r.run.display_name for r in wandb_records(next(segment.glob("run-*.wandb"))) if r.HasField("run")}
    assert name.startswith("train-") and "lr=1e8" not in name  # its own name, not the failed attempt's
    assert len(list((tmp_path / "wandb").glob(f"offline-run-*-{old_id}"))) == 1  # the failed attempt's alone


def test_a_copied_run_folder_resumes_into_a_wandb_run_of_its_own(
    make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A run folder copied (the original kept) and resumed logged into the original's W&B run, whose id
    the copy holds: two runs' rows for the same batches in one W&B run, online and at `wandb sync`. The
    copy now logs to a W&B run of its own, saying so; nothing of the original is written (every file's
    bytes and time), and the original goes on in its own W&B run."""
    original, copy = tmp_path / "scratch", tmp_path / "project"
    cfg = make_cfg("logger=wandb", "trainer.max_steps=1", "test=false")
    cfg.paths.output_dir = str(original)
    train(cfg)
    wandb.teardown()  # W&B's service writes a finished run's file after `finish` returns
    shutil.copytree(original, copy, symlinks=True)

    def files(folder: Path) -> dict[str, tuple[bytes, int] | str]:
        """Each file's bytes and time; a link's target as written, never followed: W&B links each run's
        logs/debug-core.log to its service's log in ~/.cache/wandb, which any W&B service started in the
        same second (another test process) writes too."""
        return {
            str(p.relative_to(folder)): os.readlink(p) if p.is_symlink() else (p.read_bytes(), p.stat().st_mtime_ns)
            for p in folder.rglob("*")
            if p.is_symlink() or p.is_file()
        }

    before, run_id = files(original), (original / "wandb" / "run_id").read_text().strip()
    resumed = make_cfg("logger=wandb", "trainer.max_steps=2", "test=false", "ckpt_path=last")
    resumed.paths.output_dir = str(copy)
    with caplog.at_level(logging.WARNING, logger="sr_gan.loggers"):
        train(resumed)
    wandb.teardown()
    assert files(original) == before
    copy_id = (copy / "wandb" / "run_id").read_text().strip()
    assert copy_id != run_id and len(list((copy / "wandb").glob(f"offline-run-*-{copy_id}"))) == 1
    assert f"{copy} is a copy of {original.resolve()}, which logs to W&B run {run_id} too" in caplog.text
    assert f"`wandb sync --id {run_id} {copy / 'wandb'}/offline-run-*-{copy_id}` uploads this copy's" in caplog.text
    assert folder_run_id(copy) == (copy_id, True) and folder_run_id(original) == (run_id, True)


def test_a_run_folder_moved_or_reached_through_a_link_keeps_its_wandb_run(tmp_path: Path) -> None:
    """Only a copy whose original still logs to the W&B run gets its own: a folder moved (its recorded
    place gone or holding another run) or reached through a link (logs/ a link on one launch, the real
    path on the next) goes on in its W&B run."""
    first, moved, link = tmp_path / "scratch" / "run", tmp_path / "project" / "run", tmp_path / "logs"
    run_id, _ = folder_run_id(first)
    moved.parent.mkdir()
    first.rename(moved)
    assert folder_run_id(moved) == (run_id, True)
    shutil.copytree(moved, tmp_path / "copy", symlinks=True)  # copied after the move: the moved one is its original
    assert folder_run_id(tmp_path / "copy")[0] != run_id
    link.symlink_to(moved.parent, target_is_directory=True)
    assert folder_run_id(link / "run") == folder_run_id(moved) == (run_id, True)
    shutil.copytree(moved, first, symlinks=True)  # a copy back in the old place, then the original replaced
    (moved / "wandb" / "run_id").write_text("another1\n")
    assert folder_run_id(first) == (run_id, True)


def test_a_full_disk_when_metrics_csv_gets_new_columns_keeps_its_rows(tmp_path: Path) -> None:
    """New columns (the first validation's, the test's at the end of a long run) rewrite metrics.csv
    whole: a write that fails then leaves the file as it was (Lightning's writer truncated it first:
    a week of rows cut to the part written before the disk was full)."""
    logger = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    for step in range(9, 20000, 10):
        logger.log_metrics({"train/l_g_pix": 0.5}, step=step)
    logger.save()
    path = tmp_path / "csv" / "metrics.csv"
    before = path.read_bytes()
    logger.log_metrics({"test/psnr": 28.0}, step=20000)
    with file_size_limit(len(before) + 100), pytest.raises(OSError, match="File too large"):
        logger.save()
    assert path.read_bytes() == before and not list(path.parent.glob(".*.tmp"))
    resumed = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")  # space freed, the run resumed
    resumed.log_metrics({"test/psnr": 28.0}, step=20000)
    resumed.save()
    rows = list(csv.DictReader(path.open(newline="")))
    assert len(rows) == 2001 and rows[-1]["test/psnr"] == "28.0" and rows[0]["train/l_g_pix"] == "0.5"


@pytest.mark.parametrize("cut", ["0,4,0.1", "0,"])  # the last row cut after its step, or before it (epoch, step, ...)
def test_a_run_resumed_after_a_kill_logs_each_batch_once(make_cfg, tmp_path: Path, cut: str) -> None:
    """A run killed outright (kill -9, out of memory) after its last checkpoint had written rows
    past it; resumed from that checkpoint it trains those batches again: metrics.csv keeps one row
    per logged batch, the resumed run's, as an uninterrupted run's file has; a row the kill cut
    short goes too, whatever of it was written."""
    train(make_cfg("trainer.max_steps=2", "test=false"))
    path = tmp_path / "csv" / "metrics.csv"
    rows = list(csv.DictReader(path.open(newline="")))
    with path.open("a", newline="") as file:  # what the killed run wrote after last.ckpt
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writerows({**rows[0], "step": str(step), "train/l_g_pix": "999"} for step in (2, 3))
        file.write(cut)  # a row cut short by the kill
    train(make_cfg("trainer.max_steps=4", "test=false", "ckpt_path=last"))
    rows = list(csv.DictReader(path.open(newline="")))
    logged = [(int(r["step"]), r["train/l_g_pix"]) for r in rows if r.get("train/l_g_pix")]
    assert [step for step, _ in logged] == [0, 1, 2, 3] and "999" not in dict(logged).values()
    assert [int(r["step"]) for r in rows if r.get("val/psnr")] == [1, 3] and all(r["step"] for r in rows)


def test_a_checkpoint_whose_sr_gan_record_is_no_mapping_is_refused_in_one_line(make_cfg, tmp_path: Path) -> None:
    """A checkpoint whose `sr_gan` key holds a list (damaged or crafted) was an AttributeError traceback."""
    train(make_cfg("trainer.max_steps=2", "test=false"))
    last = tmp_path / "checkpoints" / "last.ckpt"
    torch.save(torch.load(last, weights_only=True) | {"sr_gan": ["not", "a", "record"]}, last)
    with pytest.raises(UserError, match=r"the checkpoint's key 'sr_gan' holds a list, not sr-gan's record") as info:
        train(make_cfg("trainer.max_steps=4", "test=false", "ckpt_path=last"))
    assert "\n" not in str(info.value)


def test_a_checkpoint_whose_random_states_or_stream_would_not_restore_is_refused_in_one_line(
    make_cfg, tmp_path: Path
) -> None:
    """A damaged or crafted RNGState or SRDataModule state was a TypeError traceback when training
    started (or from the seed's read, before); it is one line naming the checkpoint, the run's record
    untouched, and the checkpoint's own states resume."""
    train(make_cfg("trainer.max_steps=2", "test=false"))
    last, crafted = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "crafted.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    rng = checkpoint["callbacks"]["RNGState"]
    cases = {
        "random states (RNGState) would not restore (RNG state must be a torch.ByteTensor)": {
            "callbacks": checkpoint["callbacks"] | {"RNGState": rng | {"torch": torch.zeros(3)}}
        },
        "random states (RNGState) would not restore ('python')": {
            "callbacks": checkpoint["callbacks"] | {"RNGState": {"torch": rng["torch"], "numpy": rng["numpy"]}}
        },
        "patch stream (SRDataModule) would not restore (seed='abc', stream_position=4: not whole numbers (the "
        "position >= 0))": {"SRDataModule": {"seed": "abc", "stream_position": 4}},
        "patch stream (SRDataModule) would not restore (a list, not a mapping)": {"SRDataModule": [1, 2]},
        "patch stream (SRDataModule) would not restore (global_batch=[1, 2]: not 3 whole numbers)": {
            "SRDataModule": checkpoint["SRDataModule"] | {"global_batch": [1, 2]}
        },
    }
    for problem, change in cases.items():
        torch.save(checkpoint | change, crafted)
        with pytest.raises(UserError) as info:
            train(make_cfg("trainer.max_steps=4", "test=false", f"ckpt_path={crafted}"))
        assert str(info.value) == (
            f"ckpt_path={crafted}: its {problem}: the checkpoint is damaged or was not written by sr-gan; resume "
            "from a checkpoint you trust, or start a new run from its weights with model.init_from"
        )
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "done"
    train(make_cfg("trainer.max_steps=4", "test=false", "ckpt_path=last"))


def test_resuming_across_stages_is_refused_in_one_line(make_cfg) -> None:
    """A PSNR stage's checkpoint starts a GAN stage through model.init_from, not ckpt_path (Lightning
    would fail on the discriminator's missing keys); a GAN checkpoint does not resume as a PSNR run."""
    train(make_cfg("loss=l1", "trainer.max_steps=1", "test=false"))
    with pytest.raises(UserError, match=r"PSNR stage .* model\.init_from=") as info:
        train(make_cfg("loss=ragan", "trainer.max_steps=2", "ckpt_path=last"))
    assert "\n" not in str(info.value)
    train(make_cfg("loss=ragan", "trainer.max_steps=1", "test=false", "ckpt_path=null"))
    with pytest.raises(UserError, match="is of a GAN stage"):
        train(make_cfg("loss=l1", "trainer.max_steps=2", "ckpt_path=last"))


def test_ckpt_path_to_a_weights_file_points_to_init_from(make_cfg, tmp_path: Path) -> None:
    weights = tmp_path / "generator.pth"
    torch.save({"params_ema": {"conv_first.weight": torch.zeros(1)}}, weights)
    with pytest.raises(UserError, match=rf"holds weights, not a training run's checkpoint .*init_from={weights}"):
        train(make_cfg(f"ckpt_path={weights}"))


def test_snapshots_are_kept_every_n_iterations_and_resume_exactly(make_cfg, tmp_path: Path) -> None:
    """callbacks.snapshots.every=2, a validation every iteration of 2 batches: iter_0000002 and
    iter_0000004 (named by iterations, not batches; none at 1 and 3), each what that validation's
    last.ckpt holds, its best score included (a snapshot written before the ModelCheckpoints would
    carry the previous validation's: the tiny run's PSNR rises from the first to the second, so
    the check can tell). A run resumed from iter_0000002 ends where the straight one ends, bitwise."""
    common = ["optim.accumulate_batches=2", "trainer.max_steps=4", "trainer.val_check_interval=1", "test=false"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cfg = make_cfg(*common, "callbacks.snapshots.every=2")
    cfg.paths.output_dir = str(straight)
    train(cfg)
    checkpoints = straight / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "best.ckpt",
        "iter_0000002.ckpt",
        "iter_0000004.ckpt",
        "last.ckpt",
    ]
    with open(straight / "csv" / "metrics.csv") as f:
        validated = [float(r["val/psnr"]) for r in csv.DictReader(f) if r.get("val/psnr")]
    assert len(validated) == 4 and validated[1] > validated[0]
    snapshots = [torch.load(checkpoints / f"iter_000000{i}.ckpt", weights_only=True) for i in (2, 4)]
    for snapshot, iterations in zip(snapshots, (2, 4), strict=True):
        assert snapshot["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 2 * iterations
        (by_psnr,) = (state for key, state in snapshot["callbacks"].items() if "val/psnr" in key)
        assert float(by_psnr["best_model_score"]) == pytest.approx(max(validated[:iterations]), abs=1e-6)
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    for key, value in last["state_dict"].items():
        assert torch.equal(snapshots[1]["state_dict"][key], value), key

    cfg = make_cfg(*common, f"ckpt_path={checkpoints / 'iter_0000002.ckpt'}")
    cfg.paths.output_dir = str(resumed)
    train(cfg)
    ended = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert ended["state_dict"].keys() == last["state_dict"].keys()
    for key, value in last["state_dict"].items():
        assert torch.equal(ended["state_dict"][key], value), key
    assert not (resumed / "checkpoints" / "iter_0000004.ckpt").exists()  # snapshots are off by default


def test_snapshots_keep_bounds_them_to_the_newest_across_a_resume(make_cfg, tmp_path: Path) -> None:
    """callbacks.snapshots.keep=2 with a snapshot every iteration: after 4 iterations iter_3 and
    iter_4 stay (each of the others deleted once a newer one was written); a run resumed in the same
    folder counts them, and after iteration 6 keeps iter_5 and iter_6. best.ckpt and last.ckpt stay."""
    common = ["trainer.val_check_interval=1", "callbacks.snapshots.every=1", "callbacks.snapshots.keep=2", "test=false"]
    cfg = make_cfg(*common, "trainer.max_steps=4")
    train(cfg)
    checkpoints = tmp_path / "checkpoints"
    kept = ["best.ckpt", "iter_0000003.ckpt", "iter_0000004.ckpt", "last.ckpt"]
    assert sorted(p.name for p in checkpoints.iterdir()) == kept
    train(make_cfg(*common, "trainer.max_steps=6", "ckpt_path=last"))
    kept = ["best.ckpt", "iter_0000005.ckpt", "iter_0000006.ckpt", "last.ckpt"]
    assert sorted(p.name for p in checkpoints.iterdir()) == kept


def test_snapshots_add_no_line_to_the_log(make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each snapshot logged Lightning's "`weights_only` was not set, defaulting to `False`" (measured:
    train.log grew by that line at every snapshot, 80 at the paper's 5,000 over 400k iterations):
    Snapshots now says it writes a resumable checkpoint, as the other checkpoints do."""
    connector = logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector")
    connector.addHandler(caplog.handler)  # Lightning's loggers do not propagate outside the CLI
    try:
        with caplog.at_level(logging.INFO, logger=connector.name):
            train(make_cfg("trainer.val_check_interval=1", "callbacks.snapshots.every=1", "test=false"))
    finally:
        connector.removeHandler(caplog.handler)
    snapshots = sorted(p.name for p in (tmp_path / "checkpoints").glob("iter_*"))
    assert snapshots == ["iter_0000001.ckpt", "iter_0000002.ckpt"]
    assert "weights_only" not in caplog.text


def test_a_sanity_validation_keeps_no_snapshot(tmp_path: Path) -> None:
    """With trainer.num_sanity_val_steps > 0, a run resumed from iter_0000002.ckpt validates before
    its first batch with the restored batch count (4 batches = 2 iterations): that validation is
    not one of the run's own and must not rewrite the snapshot it resumed from."""
    from types import SimpleNamespace

    from sr_gan.callbacks import Snapshots

    saved: list[Path] = []
    progress = SimpleNamespace(total=SimpleNamespace(completed=4))
    trainer = SimpleNamespace(
        sanity_checking=True,
        state=SimpleNamespace(fn="fit"),
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
        save_checkpoint=lambda path, weights_only: saved.append(path),
    )
    module = SimpleNamespace(accumulate_batches=2)
    Snapshots(tmp_path, every=2).on_validation_end(trainer, module)
    assert saved == []
    trainer.sanity_checking = False  # the same validation within the run keeps it
    Snapshots(tmp_path, every=2).on_validation_end(trainer, module)
    assert saved == [tmp_path / "iter_0000002.ckpt"]


@pytest.mark.parametrize(("rank", "written"), [(1, True), (0, False)])
def test_snapshots_keep_deletes_on_rank_0_once_the_new_one_is_written(tmp_path: Path, rank: int, written: bool) -> None:
    """Under DDP every rank sees the snapshot rank 0 wrote: only rank 0 deletes the older ones (two
    ranks unlinking the same files, one fails on a file the other removed). A snapshot the trainer
    did not write (a diverged run's) deletes none, even when the folder holds more than keep (keep
    lowered on a resume): the older ones are then the only good weights."""
    from types import SimpleNamespace

    from sr_gan.callbacks import Snapshots

    older = [tmp_path / f"iter_000000{i}.ckpt" for i in (1, 2)]
    for path in older:
        path.write_text("x")
    progress = SimpleNamespace(total=SimpleNamespace(completed=3))
    trainer = SimpleNamespace(
        sanity_checking=False,
        is_global_zero=rank == 0,
        state=SimpleNamespace(fn="fit"),
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
        save_checkpoint=lambda path, weights_only: path.write_text("x") if written else None,  # rank 0's, seen by all
    )
    Snapshots(tmp_path, every=1, keep=1).on_validation_end(trainer, SimpleNamespace(accumulate_batches=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in older] + (["iter_0000003.ckpt"] * written)


def _snapshot_warnings(
    folder: Path,
    caplog: pytest.LogCaptureFixture,
    *,
    free: int,
    keep: int | None = None,
    accumulate: int = 1,
    validations: int = 1,
) -> list[str]:
    """What `Snapshots(folder, every=100, keep=keep)` warns in a run of 1,000 batches of `accumulate`
    batches an iteration, validated after each 100 iterations `validations` times, each snapshot 1,000
    bytes on a disk with `free` bytes free."""
    from sr_gan import callbacks
    from sr_gan.callbacks import BatchBudget, Snapshots

    progress = SimpleNamespace(total=SimpleNamespace(completed=0))
    trainer = SimpleNamespace(
        sanity_checking=False,
        is_global_zero=True,
        callbacks=[BatchBudget(1000)],
        state=SimpleNamespace(fn="fit"),
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)),
        save_checkpoint=lambda path, weights_only: path.write_bytes(bytes(1000)),
    )
    snapshots = Snapshots(folder, every=100, keep=keep)
    usage = shutil._ntuple_diskusage(total=10**6, used=10**6 - free, free=free)
    with patch.object(callbacks.shutil, "disk_usage", return_value=usage), caplog.at_level(logging.WARNING):
        for validation in range(1, validations + 1):
            progress.total.completed = 100 * accumulate * validation
            snapshots.on_validation_end(trainer, SimpleNamespace(accumulate_batches=accumulate))
    return [record.getMessage() for record in caplog.records if record.name == "sr_gan.callbacks"]


@pytest.mark.parametrize(("keep", "warned"), [(None, True), (2, False)])
def test_the_first_snapshot_says_when_the_snapshots_to_come_would_fill_the_disk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, keep: int | None, warned: bool
) -> None:
    """A run keeping a snapshot every 100 iterations found out at iteration 500 that its disk was full
    (measured: 40 MB of tmpfs, 6.4 MB checkpoints, 1,000 iterations; at ESRGAN's scale 80 x 440 MB by
    day 5). Its first snapshot now projects the rest: 9 more of 1,000 bytes with 3,500 free (room
    kept for one checkpoint's rewrite) are full by iteration 100 + (3 + 1) x 100; keep=2 fits."""
    warnings = _snapshot_warnings(tmp_path, caplog, free=3500, keep=keep)
    expected = (
        "callbacks.snapshots: 9 more snapshots on the disk (0 MB each) by trainer.max_steps=1000 need 0.00 GB, "
        f"but {tmp_path} has 0.00 GB free: the disk is full by about iteration 500; set callbacks.snapshots.keep=N"
    )
    assert any(expected in warning for warning in warnings) == warned, warnings


@pytest.mark.parametrize(
    ("free", "keep", "accumulate", "warned"),
    [
        (9500, None, 1, True),  # the 9 to come fit, not with room for a rewrite
        (10000, None, 1, False),
        (2500, 2, 1, True),  # keep=2: 2 more at once (3 with the one written), 1,000 short of a rewrite's room
        (3000, 2, 1, False),
        (4500, None, 2, True),  # accumulating 2 batches: 500 iterations, 4 more to come
        (5000, None, 2, False),
    ],
)
def test_the_snapshot_disk_projection_keeps_room_for_a_rewrite_keep_plus_one_and_counts_iterations(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, free: int, keep: int | None, accumulate: int, warned: bool
) -> None:
    """The projection's bounds, each at the byte where it turns: the snapshots to come leave room for
    one checkpoint more (last.ckpt is rewritten beside the old one); with keep=N, N + 1 are there at
    once; a budget of batches accumulated by 2 is half as many iterations."""
    assert bool(_snapshot_warnings(tmp_path, caplog, free=free, keep=keep, accumulate=accumulate)) == warned


def test_the_snapshot_disk_projection_warns_once_a_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Only the run's first snapshot projects the rest: the warning is not repeated at every snapshot."""
    assert len(_snapshot_warnings(tmp_path, caplog, free=3500, validations=3)) == 1


class _FakeRun:
    """A W&B run stand-in that keeps what is logged to it and its summary."""

    def __init__(self) -> None:
        self.logged: list[dict[str, Any]] = []
        self.summary: dict[str, Any] = {}

    def log(self, row: dict[str, Any]) -> None:
        self.logged.append(row)
        self.summary.update(row)  # W&B's default summary: the last value


@pytest.fixture
def fake_wandb_run(monkeypatch: pytest.MonkeyPatch) -> _FakeRun:
    """Lightning's `WandbLogger.experiment` made to return a `_FakeRun` (no wandb.init), once made."""
    run = _FakeRun()

    def experiment(self: WandbLogger) -> _FakeRun:
        self._experiment = run
        return run

    monkeypatch.setattr(WandbLogger, "experiment", property(experiment))
    return run


def test_the_wandb_summary_keeps_the_best_and_the_last_of_each_headline_metric(
    tmp_path: Path, fake_wandb_run: _FakeRun
) -> None:
    """W&B's summary keeps a metric's last value; a GAN's table wants its best: the highest PSNR and
    SSIM, the lowest LPIPS, each beside the last, also across a run's segments (a segment resumed in
    the folder goes on from the bests logged before it). The run logs to its folder's W&B run id."""
    logger = SRWandbLogger(save_dir=str(tmp_path), offline=True, project="p")
    assert logger.experiment is fake_wandb_run
    assert logger._wandb_init["id"] == (tmp_path / "wandb" / "run_id").read_text().strip()
    assert "anonymous" not in logger._wandb_init  # wandb >= 0.19 warns that it ignores it
    for psnr_, lpips_ in ((20.0, 0.3), (22.0, 0.4), (21.0, float("nan"))):
        logger.log_metrics({"val/psnr": psnr_, "val/lpips": lpips_, "train/l_g_pix": 0.1})
    assert fake_wandb_run.summary["val/psnr"] == {"max": 22.0, "last": 21.0}
    assert fake_wandb_run.summary["val/lpips"]["min"] == 0.3 and math.isnan(fake_wandb_run.summary["val/lpips"]["last"])
    assert fake_wandb_run.summary["train/l_g_pix"] == 0.1

    resumed = SRWandbLogger(save_dir=str(tmp_path), offline=True, project="p")  # the next segment
    resumed.log_metrics({"val/psnr": 21.5})
    assert fake_wandb_run.summary["val/psnr"] == {"max": 22.0, "last": 21.5}
    (tmp_path / "wandb" / "run_id").write_text("damaged id\n")  # a new W&B run: its own bests
    SRWandbLogger(save_dir=str(tmp_path), offline=True, project="p").log_metrics({"val/psnr": 21.0})
    assert fake_wandb_run.summary["val/psnr"] == {"max": 21.0, "last": 21.0}


def test_a_diverged_first_validation_and_a_damaged_bests_file_leave_the_later_bests(
    tmp_path: Path, fake_wandb_run: _FakeRun
) -> None:
    """A NaN validation is no best even as the run's first (max(nan, x) is nan: it stayed the best
    for good), and a bests.json an earlier segment left damaged (a value no number) is read as none
    instead of failing the resumed run's first validation."""
    logger = SRWandbLogger(save_dir=str(tmp_path), offline=True, project="p")
    for psnr_ in (float("nan"), 20.0, 22.0):
        logger.log_metrics({"val/psnr": psnr_})
    assert fake_wandb_run.summary["val/psnr"] == {"max": 22.0, "last": 22.0}
    (tmp_path / "wandb" / "bests.json").write_text(json.dumps({"val/psnr": "22.0", "val/ssim": [0.9]}))
    SRWandbLogger(save_dir=str(tmp_path), offline=True, project="p").log_metrics({"val/psnr": 21.0})
    assert fake_wandb_run.summary["val/psnr"] == {"max": 21.0, "last": 21.0}


def test_an_id_given_to_the_wandb_logger_wins_over_the_folders(tmp_path: Path, fake_wandb_run: _FakeRun) -> None:
    logger = SRWandbLogger(save_dir=str(tmp_path), offline=True, id="chosen1", anonymous=True)
    logger.experiment  # noqa: B018 - makes the run
    assert (logger._wandb_init["id"], logger._wandb_init["anonymous"]) == ("chosen1", "allow")
    assert not (tmp_path / "wandb").exists()


@pytest.mark.parametrize("text", ["abc123/../../elsewhere", "abc123 xyz", "ABC123", "a" * 65, ""])
def test_a_run_id_file_holding_more_than_an_id_is_replaced(
    tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The id names W&B's folders (`offline-run-<time>-<id>`): a file holding a valid id followed by
    anything else is damaged too, and replaced by a new id of wandb's kind, not partly read."""
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "run_id").write_text(text + "\n")
    with caplog.at_level(logging.WARNING, logger="sr_gan.loggers"):
        run_id, continued = folder_run_id(tmp_path)
    assert not continued and re.fullmatch(r"[0-9a-f]{8}", run_id) and "does not hold a W&B run id" in caplog.text
    assert (tmp_path / "wandb" / "run_id").read_text() == run_id + "\n"
    assert folder_run_id(tmp_path) == (run_id, True)  # kept from then on


def test_a_copy_of_a_folder_named_by_a_relative_path_is_a_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """wandb/run_folder records the folder's real path even where the run named it relative to its
    working directory: a copy of it is then told from the original (a relative record is not read)."""
    monkeypatch.chdir(tmp_path)
    run_id, _ = folder_run_id(Path("run"))
    assert (tmp_path / "run" / "wandb" / "run_folder").read_text() == f"{tmp_path.resolve() / 'run'}\n"
    shutil.copytree(tmp_path / "run", tmp_path / "copy", symlinks=True)
    assert folder_run_id(Path("copy"))[0] != run_id and folder_run_id(Path("run")) == (run_id, True)


def test_a_run_id_file_of_bytes_that_are_no_text_is_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A run_id (or run_folder) file damaged into bytes that are not UTF-8 is a damaged file like
    any other: replaced with a warning, the training going on; not a UnicodeDecodeError traceback."""
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "run_id").write_bytes(b"\xff\xfe\x00id\n")
    (tmp_path / "wandb" / "run_folder").write_bytes(b"\xff/\n")
    with caplog.at_level(logging.WARNING, logger="sr_gan.loggers"):
        run_id, continued = folder_run_id(tmp_path)
    assert not continued and re.fullmatch(r"[0-9a-f]{8}", run_id) and "does not hold a W&B run id" in caplog.text
    assert folder_run_id(tmp_path) == (run_id, True)


def test_a_checkpoint_path_that_is_no_weight_file_names_ckpt_path_and_what_to_pass(tmp_path: Path) -> None:
    """ckpt_path=photo.png (or an empty file) says ckpt_path and what resuming takes: a run's
    checkpoint, its folder, a URL or last; not "an exported .safetensors or a .pth", which ckpt_path
    refuses."""
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(32))
    with pytest.raises(
        UserError, match=rf"^ckpt_path={image} is not a checkpoint \(it starts with .*run folder"
    ) as info:
        load_run_checkpoint(image)
    assert "safetensors" not in str(info.value)
    empty = tmp_path / "last.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match=r"is not a checkpoint \(it is empty\)"):
        load_run_checkpoint(empty)


def test_bests_of_an_earlier_segment_are_read_only_from_a_mapping_of_numbers(tmp_path: Path) -> None:
    assert read_bests(tmp_path) == {}  # none written
    (tmp_path / BESTS).parent.mkdir()
    (tmp_path / BESTS).write_text('["val/psnr", 30.5]')
    assert read_bests(tmp_path) == {}
    (tmp_path / BESTS).write_text('{"val/psnr": 30, "val/ssim": "high", "train/l_g_pix": 0.1}')
    assert read_bests(tmp_path) == {"val/psnr": 30.0}  # a number of a key W&B summarises as a best


def test_a_run_without_an_earlier_config_keeps_nothing(tmp_path: Path) -> None:
    resolved = {"seed": 1, "model": {"init_from": None}, "data": {"seed": 2}}
    assert keep_recorded_start(resolved, tmp_path / "config.yaml") == []
    assert resolved == {"seed": 1, "model": {"init_from": None}, "data": {"seed": 2}}
