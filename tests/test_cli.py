"""``python -m sr_gan.train`` end to end, as a user runs it: run folder, sweep, one-line errors."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.io import write_png

import sr_gan
from sr_gan.data import ValImageDataset, read_image
from sr_gan.data.demo import prepare_skimage_photos
from sr_gan.metrics import psnr
from sr_gan.ops import bicubic_degrade, imresize
from sr_gan.run_summary import source_commit
from tests.conftest import TINY
from tests.helpers import run_module, serve_folder, wandb_records

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return run_module("sr_gan.train", *args, f"paths.log_dir={tmp_path}", timeout=timeout)


def _tiny(*extra: str) -> list[str]:
    return [o for o in TINY if not o.startswith(("logger=", "trainer.max_steps"))] + list(extra)


_DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]


def _bicubic_psnr(folder: Path, *, images: int) -> float:
    """Mean PSNR of bicubic x4 over the (mod-cropped) images of `folder`, computed here from the files."""
    val = ValImageDataset(hr_dir=folder, scale=4)
    hrs = [item["hr"][None].float() / 255 for item in val]
    assert len(hrs) == images
    return torch.cat([psnr(imresize(bicubic_degrade(hr, 4), 4), hr, crop_border=4) for hr in hrs]).mean().item()


def test_train_cli_writes_a_complete_run_folder(tmp_path: Path) -> None:
    proc = _run(tmp_path, *_tiny("trainer.max_steps=3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    assert (run / ".hydra" / "config.yaml").exists()  # the composed config, as Hydra writes it
    resolved = (run / "config.yaml").read_text()  # ... and resolved: values, no interpolations
    assert "${" not in resolved and "_target_: sr_gan.archs.RRDBNet" in resolved
    assert "\ngroup: demo\n" in resolved  # the W&B group: the experiment the run belongs to
    recorded = yaml.safe_load(resolved)["environment"]  # the code and libraries it ran with
    assert (recorded["sr_gan"], recorded["torch"], recorded["lightning"]) == (
        sr_gan.__version__,
        version("torch"),
        version("lightning"),
    )
    assert recorded["commit"] == source_commit(Path(sr_gan.__file__).resolve().parents[2])
    assert recorded["torch_threads"] == os.environ["OMP_NUM_THREADS"]  # tests/conftest.py's, the child's count
    assert recorded["sr_gan_trust"] == os.environ.get("SR_GAN_TRUST")  # what a user's network needs to load
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    with open(run / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    validated = [r for r in rows if r.get("val/psnr")]
    (tested,) = [r for r in rows if r.get("test/psnr")]
    # the best checkpoint (by val/psnr) was tested on the validation images: it scores what it scored there
    best = max(validated, key=lambda r: float(r["val/psnr"]))
    for key in ("psnr", "ssim"):
        assert float(tested[f"test/{key}"]) == pytest.approx(float(best[f"val/{key}"]), abs=1e-4)
    demo_val = Path(os.environ["SR_GAN_CACHE"]) / "skimage_photos" / "val"
    assert float(validated[-1]["val/psnr_bicubic"]) == pytest.approx(_bicubic_psnr(demo_val, images=2), abs=1e-4)
    assert list((run / "samples").glob("val_*/*.png")), "validation strips written"
    assert list((run / "wandb").glob("offline-run-*")), "W&B ran offline beside the Hydra output"
    record = json.loads((run / "run.json").read_text())
    assert (record["status"], record["batches"], record["error"]) == ("done", 3, None)
    assert record["metrics"]["val/psnr"] == pytest.approx(float(validated[-1]["val/psnr"]), abs=1e-5)
    assert "train.log" in {p.name for p in run.iterdir()} and "batches in" in (run / "train.log").read_text()


def test_train_cli_sweeps_with_multirun(tmp_path: Path) -> None:
    trainers = ["+callbacks.live._target_=tests.helpers.LiveTrainers", f"+callbacks.live.file={tmp_path / 'live'}"]
    proc = _run(tmp_path, "-m", "loss=l1,srgan", *_tiny("trainer.max_steps=1", "test=false"), *trainers)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the jobs share this process: the first job's trainer (with its networks) is gone as the second starts
    assert (tmp_path / "live").read_text().split() == ["1", "1"]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    assert all((sweep / j / "checkpoints" / "last.ckpt").exists() for j in jobs)
    # W&B (offline): the sweep is the group, a job is named by its overrides and typed by its stage,
    # and the config holds the group choices as keys to group and filter by.
    for job, (loss, stage) in zip(jobs, [("l1", "psnr"), ("srgan", "gan")]):
        records = wandb_records(next((sweep / job / "wandb").glob("offline-run-*/run-*.wandb")))
        (run,) = [r.run for r in records if r.HasField("run")]
        assert (run.run_group, run.job_type) == (f"demo-{sweep.name}", stage)
        assert run.display_name == f"train-loss={loss}"  # the swept key only
        config = {item.key: item.value_json for r in records if r.HasField("config") for item in r.config.update}
        assert json.loads(config["choices"])["loss"] == loss and json.loads(config["choices"])["model"] == "rrdb"
        assert json.loads((sweep / job / "run.json").read_text())["status"] == "done"


def test_a_sweeps_failed_job_lets_the_next_jobs_run(tmp_path: Path) -> None:
    """A sweep's job that fails on its input (a NaN, a value only it gets) ended the whole sweep with
    its exit status 2: the jobs after it never ran, and never would on a relaunch (measured: lr=1e8 as
    job 1 of 3 left no job 2). Hydra's launchers run the next jobs of one that raises: the sweep runs
    them, then ends with status 2 and a line naming the failed job and how to see every job's status."""
    proc = _run(tmp_path, "-m", "seed=4294967296,1", *_tiny("trainer.max_steps=1", "test=false", "logger=csv"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    assert "error: seed=4294967296 " in proc.stderr  # the job's own line, as it failed
    assert json.loads((sweep / "1" / "run.json").read_text())["status"] == "done"
    assert proc.stderr.splitlines()[-1] == (
        f"error: job 0 of the sweep failed (its error above, {sweep / '0'}); the sweep runs its other jobs regardless: "
        f"python -m sr_gan.compare {sweep} shows each job's status"
    )


def test_a_run_refused_at_start_up_leaves_no_run_folder(tmp_path: Path) -> None:
    proc = _run(tmp_path, *_tiny("data.batch_size=0", "logger=csv"))
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1].startswith("error: data.batch_size=0 is not allowed")
    assert not (tmp_path / "train").exists()  # nor the empty train/runs/ made for it (paths.log_dir stays)


def test_a_refused_runs_cleanup_keeps_a_folder_holding_anything_else(tmp_path: Path) -> None:
    """Only Hydra's own files (.hydra/, train.log) make a folder unused: one that holds a checkpoint,
    with or without train.log, is a run's and stays, with the folders above it."""
    from sr_gan.train import _remove_if_unused

    for name, files in {"with_log": ["train.log", "last.ckpt"], "without_log": ["last.ckpt"]}.items():
        folder = tmp_path / "train" / "runs" / name
        folder.mkdir(parents=True)
        for file in files:
            (folder / file).write_text("x")
        _remove_if_unused(folder, tmp_path)
        assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    unused = tmp_path / "log" / "train" / "runs" / "refused"
    (unused / ".hydra").mkdir(parents=True)
    _remove_if_unused(unused, tmp_path / "log")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log", "train"]  # the folders made for it go, not log_dir
    assert not any((tmp_path / "log").iterdir())


@pytest.mark.parametrize("bad", ["bogus.png", "small.png"])
def test_a_data_folder_with_a_bad_image_is_refused_before_the_run_folder(tmp_path: Path, bad: str) -> None:
    """An image that is none, or smaller than a training crop, in a folder of the user's own: one line
    with the file and the fix, and no run folder (its headers are read before the run's record is
    written; the run failed at 0 batches and left its folder, which `compare` then listed)."""
    prepare_skimage_photos(photos := tmp_path / "photos")
    folder = tmp_path / "mine"
    folder.mkdir()
    for photo in sorted((photos / "val").iterdir())[:1]:
        (folder / photo.name).write_bytes(photo.read_bytes())
    if bad == "bogus.png":
        (folder / bad).write_text("not an image")
    else:
        write_png(torch.zeros(3, 16, 16, dtype=torch.uint8), str(folder / bad))
    data = ["data=folder", f"data.train_hr_dir={folder}", f"data.val_hr_dir={folder}"]
    proc = _run(tmp_path / "logs", *_tiny(*data, "logger=csv"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    fix = "replace it, or remove it from its folder" if bad == "bogus.png" else "remove it or lower data.patch_size"
    assert proc.stderr.splitlines()[-1].startswith("error: ") and str(folder / bad) in proc.stderr
    assert proc.stderr.strip().endswith(fix)
    assert not (tmp_path / "logs" / "train").exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["trainer.max_step=4"], "error: trainer.max_step is not a key of the config: did you mean trainer.max_steps?"),
        (["-m", "model=rrdb,rrbd"], "error: model=rrbd is not an option of model: did you mean model=rrdb? options: "),
    ],
)
def test_a_mistyped_override_is_one_line_and_makes_no_folder(tmp_path: Path, args, line) -> None:
    """Hydra's own report is several lines with its config search path, exit 1 (`sr_gan.cli`)."""
    proc = run_module("sr_gan.train", *args, f"paths.log_dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(line)
    assert not list(tmp_path.glob("train/*/*"))  # no run folder, no sweep folder


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=ragan", "discriminator=none"], "needs a discriminator"),
        (["loss=srgan", "discriminator.input_size=96"], "discriminator.input_size=96 differs from data.patch_size=32"),
        (["experiment=esrgan_x4", "data=demo"], "model.init_from"),
        (["data=folder"], "data.train_hr_dir, data.val_hr_dir must be set (the config leaves them '???'): add "),
        (["data=folder", "data.train_hr_dir=/x"], "data.val_hr_dir must be set (the config leaves it '???'): add "),
        (["data=folder", "data.train_hr_dir=/nowhere", "data.val_hr_dir=/nowhere"], "/nowhere does not exist"),
    ],
)
def test_train_cli_bad_settings_fail_in_one_line(tmp_path: Path, overrides, message) -> None:
    proc = _run(tmp_path, *_tiny(*overrides, "logger=csv"))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unwritable_log_dir_is_one_line_before_hydra_makes_the_run_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    log_dir = tmp_path / "notes.txt" / "logs"
    proc = run_module("sr_gan.train", *_tiny("trainer.max_steps=1"), f"paths.log_dir={log_dir}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith(f"error: cannot make the output folder {log_dir}/train/runs/")
    assert proc.stderr.strip().endswith("(Not a directory): set paths.log_dir to a folder you can write to")


def _a_finished_run(folder: Path) -> dict[Path, bytes]:
    """What a run leaves that a new one would overwrite (contents are not read by the check)."""
    files = {folder / "run.json": b'{"status": "done"}', folder / "checkpoints" / "last.ckpt": b"weights"}
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


@pytest.mark.parametrize("sweep", [False, True])
def test_a_new_run_refuses_a_folder_that_holds_a_run(tmp_path: Path, sweep: bool) -> None:
    """A fixed hydra.run.dir (or sweep dir) relaunched without ckpt_path would overwrite the earlier run's
    checkpoints and mix its records: one line, before Hydra writes there; resuming it is allowed."""
    folder = tmp_path / "run"
    files = _a_finished_run(folder / "0" if sweep else folder)
    where = ["trainer.max_steps=1,2", f"hydra.sweep.dir={folder}"] if sweep else [f"hydra.run.dir={folder}"]
    proc = _run(tmp_path, *(["-m"] if sweep else []), *_tiny(*where))
    key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    found = "0/run.json" if sweep else "run.json"
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {key}={folder} already holds a run ({found}), which a new run would overwrite: "
        "resume it with ckpt_path=last, or choose another folder"
    )
    assert all(path.read_bytes() == content for path, content in files.items())
    assert sorted(p.name for p in folder.iterdir()) == (["0"] if sweep else ["checkpoints", "run.json"])


def test_train_cli_runs_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    """trainer=ddp: G and D each under its own DDP wrapper, rank-0-only files, metrics reduced over ranks;
    3 validation images on 2 ranks: each counted once (a padding sampler would repeat one). seed=null:
    rank 1 takes the seed rank 0 drew and recorded (it drew its own: another patch stream, which the
    recorded seed did not rerun)."""
    demo = Path(os.environ["SR_GAN_CACHE"]) / "skimage_photos"
    prepare_skimage_photos(demo)
    val_dir = tmp_path / "val"
    val_dir.mkdir()
    for source in sorted((demo / "val").iterdir()):
        (val_dir / source.name).write_bytes(source.read_bytes())
    astronaut = read_image(demo / "train" / "astronaut.png")[:, 100:180, 120:220]  # a third, odd-sized image
    write_png(astronaut.contiguous(), str(val_dir / "astronaut.png"))
    overrides = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
    data = ["data=folder", f"data.train_hr_dir={demo / 'train'}", f"data.val_hr_dir={val_dir}", "data.batch_size=2"]
    proc = _run(tmp_path, *_tiny(*overrides, *data, "loss=ragan", "trainer.max_steps=4", "logger=csv", "seed=null"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    seed = yaml.safe_load((run / "config.yaml").read_text())["seed"]
    assert f"[rank: 1] Seed set to {seed}\n" in (run / "train_ddp_process_1.log").read_text()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 4  # per rank
    assert ckpt["SRDataModule"]["stream_position"] == 4 * 2 * 2  # batches x batch size x ranks
    with open(run / "csv" / "metrics.csv") as f:
        tested = [r for r in csv.DictReader(f) if r.get("test/psnr_bicubic")]
    # 3 images on 2 ranks: the logged mean must be over each image once
    assert float(tested[-1]["test/psnr_bicubic"]) == pytest.approx(_bicubic_psnr(val_dir, images=3), abs=1e-4)


def test_two_devices_train_a_gan_and_count_each_validation_image_once(tmp_path: Path) -> None:
    """trainer.devices=2 without trainer=ddp, a GAN stage: one DDP wrapper per player all the same
    (Lightning's own DDP around the module failed on the unused parameters of each player's backward).
    1 validation image on 2 ranks (DIV2K's 10 on 16 GPUs): rank 1 validates a stand-in weighted 0;
    Lightning refused the run before (a rank's validation loader of zero length). With W&B and a
    random VGG it is one W&B run whose summary holds the warning (rank 1, which has no W&B run,
    failed the run with a TypeError on writing it)."""
    two = [
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "loss=ragan",
        "discriminator=unet",
        "discriminator.num_features=8",
    ]
    proc = _run(tmp_path, *_tiny(*two, "data.val_max_images=1", "trainer.max_steps=2", "logger=wandb"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    (wandb_run,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    summary = {i.key: i.value_json for r in wandb_records(wandb_run) if r.HasField("summary") for i in r.summary.update}
    assert "RANDOM VGG19" in json.loads(summary["warnings"])
    with open(run / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    first = ValImageDataset(hr_dir=Path(os.environ["SR_GAN_CACHE"]) / "skimage_photos" / "val", scale=4).pairs[0].hr
    (single := tmp_path / "first").mkdir()
    (single / first.name).write_bytes(first.read_bytes())
    expected = _bicubic_psnr(single, images=1)
    assert [float(r["val/psnr_bicubic"]) for r in rows if r.get("val/psnr_bicubic")] == pytest.approx(
        [expected], abs=1e-4
    )
    assert float(next(r for r in rows if r.get("test/psnr_bicubic"))["test/psnr_bicubic"]) == pytest.approx(
        expected, abs=1e-4
    )


def test_a_sweep_on_two_ranks_runs_each_job_once_on_both(tmp_path: Path) -> None:
    """-m with trainer=ddp, 2 CPU ranks: each job starts its rank 1 as that job. Lightning's rank 1
    re-ran the command line, the whole sweep: it went on to the next jobs by itself, into a second
    sweep folder, and the later jobs started no rank of their own (sr_gan.ranks)."""
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
    proc = _run(tmp_path, "-m", "loss=l1,mse", *_tiny(*ddp, "trainer.max_steps=2", "test=false"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    for job in ("0", "1"):
        assert json.loads((sweep / job / "run.json").read_text())["status"] == "done"
        assert (sweep / job / "train_ddp_process_1.log").read_text().count("generator: RRDBNet") == 1  # its job only


def _weights_after(tmp_path: Path, *overrides: str) -> dict[str, torch.Tensor]:
    """The state dict of ``last.ckpt`` after 4 batches of a GAN stage with a BatchNorm-free D."""
    gan = ["loss=srgan", "discriminator=unet", "discriminator.num_features=8", "trainer.precision=32-true"]
    proc = _run(tmp_path, *_tiny(*gan, *overrides, "trainer.max_steps=4", "test=false", "logger=csv"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _strips(folder: Path) -> dict[tuple[str, str], torch.Tensor]:
    """The validation strips of the one run under `folder`, by (validation, image)."""
    (run,) = (folder / "train" / "runs").iterdir()
    return {(png.parent.name, png.stem): read_image(png) for png in (run / "samples").glob("*/*.png")}


def test_ddp_on_two_ranks_trains_as_one_process_on_their_joint_batch(tmp_path: Path) -> None:
    """trainer=ddp, 2 CPU ranks x batch 2 = one process x batch 4 (the ranks share the one process's
    patch stream): G's and D's gradients are averaged over the ranks in both halves of the GAN step.
    Without the reduction (e.g. D's forward passes outside its DDP wrapper) a rank trains on its own
    half: the control, one process x batch 2, is ~1e-3 away. Rank 1 starts from other weights: the
    strategy makes every rank start from rank 0's, the EMA (in no DDP wrapper) included.
    Both save the strips of the validation set's 2 images: rank 0 saved its own alone (image 0)."""
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    starts = tmp_path / "starts"
    other_start = ["+callbacks.other._target_=tests.helpers.OtherStartOnRank1", f"+callbacks.other.folder={starts}"]
    ranks = _weights_after(tmp_path / "ddp", *ddp, "data.batch_size=2", "module.num_samples=2", *other_start)
    rank0, rank1 = (torch.load(starts / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert any(k.startswith("generator_ema.") for k in rank0)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    joint = _weights_after(tmp_path / "joint", "data.batch_size=4", "module.num_samples=2")
    half = _weights_after(tmp_path / "half", "data.batch_size=2")
    strips = {side: _strips(tmp_path / side) for side in ("ddp", "joint")}
    validations = {(f"val_{b:07d}", image) for b in (2, 4) for image in ("chelsea", "coffee")}
    assert set(strips["ddp"]) == set(strips["joint"]) == validations
    for key, strip in strips["ddp"].items():  # bicubic | SR | HR: equal, the SR within a level
        assert (strip.int() - strips["joint"][key].int()).abs().max() <= 1, key
    assert ranks.keys() == joint.keys() and any(k.startswith("discriminator.") for k in ranks)
    for key in ranks:  # G, its EMA, D and D's spectral-norm vectors (measured: <= 2e-6 apart)
        torch.testing.assert_close(ranks[key], joint[key], rtol=1e-4, atol=1e-5, msg=key)
    for player in ("generator.", "discriminator."):
        worst = max((half[k] - joint[k]).abs().max().item() for k in joint if k.startswith(player))
        assert worst > 1e-4, player  # the comparison can tell a half batch from the whole


def test_ddp_with_compiled_networks_trains_as_one_process(tmp_path: Path) -> None:
    """trainer=ddp model.compile=eager on 2 CPU ranks: dynamo compiles G and D inside their DDP
    wrappers (which splits their graphs at DDP's buckets) on each rank, and the run ends with the
    weights of one process on the joint batch. (The eager backend runs the same kernels as no
    compilation; inductor's are tested in one process, tests/test_speed.py.)"""
    frames = tmp_path / "frames"
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=2", "model.compile=eager"]
    probe = ["+callbacks.frames._target_=tests.helpers.CompiledFrames", f"+callbacks.frames.folder={frames}"]
    ranks = _weights_after(tmp_path / "ddp", *ddp, *probe)
    assert [int((frames / f"rank{r}.txt").read_text()) > 0 for r in (0, 1)] == [True, True]
    joint = _weights_after(tmp_path / "joint", "data.batch_size=4")
    for key in ranks:
        torch.testing.assert_close(ranks[key], joint[key], rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("signalled", ["0", "1", "null"], ids=["rank0", "rank1", "every_rank"])
def test_ddp_preemption_stops_every_rank_after_the_same_iteration(tmp_path: Path, signalled: str) -> None:
    """trainer=ddp, 2 ranks, optim.accumulate_batches=2, trainer.log_every_n_steps=3, SIGTERM during
    batch 2 to rank 0 only (a ``kill`` of the run's process), rank 1 only, or every rank (SLURM's
    pre-emption): the ranks read it after batch 3 (the logging interval), stop after batch 4 (the
    iteration's end) once its validation has run, save once and exit 143, run.json ``preempted``.
    (Lightning's own handler deadlocked here: rank 0 saving its checkpoint, rank 1 in the next
    batch's collective.) Resumed (once: the checkpoint is rank 0's whoever was signalled), the run
    validates and ends as the run that was not interrupted. The resume reads the checkpoint from a
    URL: rank 0 downloads it once, and rank 1, which Lightning starts from rank 0, reads rank 0's
    copy (each rank used to fetch its own)."""
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=2"]
    common = [*ddp, "optim.accumulate_batches=2", "trainer.log_every_n_steps=3"]
    gan = ["loss=srgan", "discriminator=unet", "discriminator.num_features=8", "trainer.precision=32-true"]
    settings = _tiny(*gan, *common, "trainer.max_steps=4", "test=false", "logger=csv")
    sigterm = ["+callbacks.sigterm._target_=tests.helpers.SigtermDuring", "+callbacks.sigterm.batch=2"]
    stopped = _run(tmp_path / "preempted", *settings, *sigterm, f"+callbacks.sigterm.rank={signalled}")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert (stopped.stdout + stopped.stderr).count("saved a resumable checkpoint") == 1  # rank 0's, the one written
    (run,) = (tmp_path / "preempted" / "train" / "runs").iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "preempted"
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 4
    if signalled != "0":
        return
    straight = _weights_after(tmp_path / "straight", *common)
    served = tmp_path / "served"
    served.mkdir()
    (served / "last.ckpt").write_bytes((run / "checkpoints" / "last.ckpt").read_bytes())
    with serve_folder(served) as (url, requested):
        resumed = _run(tmp_path / "preempted", *settings, f"ckpt_path={url}/last.ckpt", f"hydra.run.dir={run}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert requested == ["/last.ckpt"] and not list(run.glob(".sr_gan-download-*"))
    weights = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    for key in straight:
        torch.testing.assert_close(weights[key], straight[key], rtol=1e-4, atol=1e-5, msg=key)
    (done,) = (tmp_path / "straight" / "train" / "runs").iterdir()
    validated = [_validated_steps(folder) for folder in (done, run)]
    assert validated[0] == validated[1] and len(validated[0]) == 2  # at batches 4 and 8, each whole


@pytest.mark.parametrize(("failing", "batch"), [(1, 1), (0, 1), (0, 0)], ids=["rank1", "rank0", "rank0_in_set_up"])
def test_a_rank_that_fails_is_named_with_its_own_error_by_the_run(tmp_path: Path, failing: int, batch: int) -> None:
    """trainer=ddp, 2 CPU ranks, a one-line error on one rank only (a bad input only it reads), as the
    first batch starts or, on rank 0, as the trainer sets up (a file only rank 0 checks; rank 1 waits
    in the set-up's barrier): the run ends with that rank's line within seconds, and run.json records
    it failed. The other rank's own failure, gloo's 'Connection closed by peer' on the connection the
    failed rank closed, was the traceback that ended the output and rank 0's recorded error; it is
    not printed now."""
    fail = ["+callbacks.fail._target_=tests.helpers.FailOnRank", f"+callbacks.fail.rank={failing}"]
    message = f"cannot read image planted{failing}.png: its IDAT chunk is damaged"
    fail += [f"+callbacks.fail.batch={batch}", f"+callbacks.fail.message='{message}'"]
    proc = _run(tmp_path, *_tiny(*_DDP, "test=false"), *fail, timeout=120)
    expected = f"rank 1 failed: {message}" if failing else message
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1] == f"error: {expected}", proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Connection closed" not in proc.stderr + proc.stdout
    (run,) = (tmp_path / "train" / "runs").iterdir()
    record = json.loads((run / "run.json").read_text())
    assert (record["status"], record["error"]) == ("failed", expected)


def test_a_failed_rank_is_reported_by_rank_0_however_long_it_takes(tmp_path: Path) -> None:
    """Rank 1 fails while rank 0 takes 6 s to handle its own end of the run (a slow disk, a W&B
    upload): Lightning's watch over the ranks it starts killed rank 0 (SIGKILL) within 5 s of rank 1's
    exit, without its line, run.json left 'running'; rank 0 now ends the run itself."""
    message = "cannot read image planted1.png: its IDAT chunk is damaged"
    fail = ["+callbacks.fail._target_=tests.helpers.FailOnRank", "+callbacks.fail.rank=1"]
    slow = ["+callbacks.slow._target_=tests.helpers.SlowToReport", "+callbacks.slow.seconds=6"]
    proc = _run(tmp_path, *_tiny(*_DDP, "test=false"), *fail, f"+callbacks.fail.message='{message}'", *slow)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines()[-1] == f"error: rank 1 failed: {message}"
    (run,) = (tmp_path / "train" / "runs").iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "failed"


def test_a_killed_rank_is_named_and_the_run_resumes(tmp_path: Path) -> None:
    """Rank 1 killed (SIGKILL: out of host memory, kill -9) during batch 2: rank 0 ended on gloo's
    'Connection reset by peer' traceback, recorded as the run's error; it now names the rank, how it
    ended and how to resume, and the relaunch it names finishes the run from last.ckpt (batch 1)."""
    settings = _tiny(*_DDP, "test=false", "trainer.max_steps=3", "trainer.val_check_interval=1")
    kill = ["+callbacks.kill._target_=tests.helpers.KilledOnRank", "+callbacks.kill.rank=1", "+callbacks.kill.batch=2"]
    proc = _run(tmp_path, *settings, *kill)
    (run,) = (tmp_path / "train" / "runs").iterdir()
    line = (
        "rank 1 ended without an error of its own: killed by SIGKILL (kill -9, or out of host memory: the kernel's "
        f"log, dmesg, names it); resume: the same command with hydra.run.dir={run} ckpt_path=last"
    )
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1] == f"error: {line}", proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert json.loads((run / "run.json").read_text())["error"] == line
    resumed = _run(tmp_path, *settings, f"hydra.run.dir={run}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads((run / "run.json").read_text())
    assert (record["status"], record["batches"]) == ("done", 3)


def test_a_stuck_rank_stops_the_run_after_the_strategys_timeout(tmp_path: Path) -> None:
    """Rank 1 hangs outside any collective (a hung file system) for 120 s: rank 0 waits
    trainer.strategy.timeout_s=20 s (a timedelta Lightning's option alone cannot take from a config;
    it also bounds the wait for the ranks to start, 7 s here), ends in one line naming that key (was
    gloo's 'Timed out waiting 20000ms' traceback), and kills rank 1, which outlived it (holding its
    GPU) until its hang ended."""
    pid_file = tmp_path / "rank1.pid"
    stuck = ["+callbacks.stuck._target_=tests.helpers.StuckOnRank", "+callbacks.stuck.rank=1"]
    stuck += ["+callbacks.stuck.batch=2", "+callbacks.stuck.seconds=120", f"+callbacks.stuck.pid_file={pid_file}"]
    try:
        proc = _run(tmp_path, *_tiny(*_DDP, "test=false", "trainer.strategy.timeout_s=20"), *stuck)
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert proc.stderr.splitlines()[-1].startswith(
            "error: waited trainer.strategy.timeout_s=20 seconds for another rank, which is stuck"
        )
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)  # gone, reaped by rank 0
    finally:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_a_nan_loss_on_one_rank_stops_every_rank_naming_it(tmp_path: Path) -> None:
    """Rank 1 alone computes a NaN pixel loss (a NaN batch of its own), which DDP's all-reduce spreads
    to every rank's gradient norm: the guard's records are combined over the ranks, so every rank
    stops at the same check and the run's error names the loss (rank 0 named only the norm)."""
    nan = ["+callbacks.nan._target_=tests.helpers.NaNInputOnRank", "+callbacks.nan.rank=1", "+callbacks.nan.batch=2"]
    proc = _run(tmp_path, *_tiny(*_DDP, "test=false", "trainer.max_steps=3"), *nan)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    error = json.loads((run / "run.json").read_text())["error"]
    assert error.startswith("training stopped: train/l_g_pix, train/grad_norm_g became NaN/Inf at batch 2 "), error


def _validated_steps(run: Path) -> list[str]:
    """The logged steps of a run's validations (metrics.csv rows holding val/psnr)."""
    with open(run / "csv" / "metrics.csv") as f:
        return [r["step"] for r in csv.DictReader(f) if r.get("val/psnr")]


def test_ddp_accumulation_averages_each_iteration_over_the_ranks(tmp_path: Path) -> None:
    """trainer=ddp with optim.accumulate_batches=2: 2 ranks x batch 2 x 2 micro-batches = one process
    x batch 4 x 2. The first micro-batch's gradients stay on their rank (DDP's ``no_sync``, one
    all-reduce per iteration: tests/test_gan_step.py counts them); the last micro-batch's backward
    averages the ranks' sums (planted the other way round, syncing the first micro-batch and keeping
    the last local: DDP raises)."""
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]
    ranks = _weights_after(tmp_path / "ddp", *ddp, "data.batch_size=2", "optim.accumulate_batches=2")
    joint = _weights_after(tmp_path / "joint", "data.batch_size=4", "optim.accumulate_batches=2")
    for key in ranks:
        torch.testing.assert_close(ranks[key], joint[key], rtol=1e-4, atol=1e-5, msg=key)


def test_other_hydra_errors_are_not_taken_for_the_ones_given_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only `experiment=null` and `--cfg hydra --resolve` get their one line; any other ValueError or
    interpolation error is Hydra's (or ours) and is raised as it is."""
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    from sr_gan.cli import _hydra_alone, _null_group, _printed_unresolvable

    monkeypatch.setattr(sys, "argv", ["train", "experiment=null"])
    assert _null_group(ValueError("Config group override must be a string or a list. Got NoneType")) is not None
    assert _null_group(ValueError("another value error")) is None
    err = InterpolationResolutionError("x")
    monkeypatch.setattr(sys, "argv", ["train", "--cfg", "job", "--resolve"])
    assert _hydra_alone(err) is None
    monkeypatch.setattr(sys, "argv", ["train", "--cfg", "hydra"])
    assert _hydra_alone(err) is None
    monkeypatch.setattr(sys, "argv", ["train", "--cfg", "hydra", "--resolve"])
    assert _hydra_alone(err).startswith("--cfg hydra --resolve: a key of hydra reads the tool's config")
    assert _printed_unresolvable(err, tool="train") is None  # raised by no config's resolution
    try:
        OmegaConf.resolve(OmegaConf.create({"a": "${nope}"}))
    except InterpolationResolutionError as raised:
        err = raised
    assert _printed_unresolvable(err, tool="train") == (
        "a=${nope} cannot be resolved: the config has no key nope; python -m sr_gan.train --cfg job lists the keys"
    )
    monkeypatch.setattr(sys, "argv", ["train", "--cfg", "job"])
    assert _printed_unresolvable(err, tool="train") is None  # nothing resolved on the command line


def test_an_error_that_is_no_user_error_keeps_its_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    """A fault of ours (or a library's) must not be dressed as the user's one-line mistake with status 2."""
    from sr_gan.errors import exit_on_user_error

    def broken() -> None:
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="^a bug$"):
        exit_on_user_error(broken)()
    assert capsys.readouterr().err == ""
