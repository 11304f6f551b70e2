"""The demo's GAN stage starts from the cached PSNR stage of the same generator (both papers' recipe)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict, read_write

import sr_gan
import sr_gan.train
from sr_gan import demo_stage
from sr_gan.demo_stage import RESUME_HINT
from sr_gan.run_folders import read_run
from sr_gan.train import train


def test_a_demo_gan_run_starts_from_its_psnr_stage_trained_once(
    make_cfg, tmp_path: Path, monkeypatch, caplog: pytest.LogCaptureFixture
) -> None:
    """... and only the GAN run names the next commands, of its own checkpoint (the stage's were noise
    in the middle of the GAN run's output)."""
    monkeypatch.setattr(
        demo_stage, "_STAGE", [*demo_stage._STAGE, "trainer.max_steps=2", "trainer.val_check_interval=2"]
    )
    cache = tmp_path / "cache"
    gan = ["loss=ragan", "demo_psnr_init=true", f"paths.cache_dir={cache}", "trainer.max_steps=1", "test=false"]
    cfg = make_cfg(*gan)
    assert demo_stage.needs_psnr_stage(cfg)
    with caplog.at_level(logging.INFO, logger="sr_gan.train"):
        train(cfg)
    upscale = [line for line in caplog.messages if "python -m sr_gan.upscale" in line]
    assert upscale == [f"  python -m sr_gan.upscale ckpt={tmp_path / 'checkpoints' / 'last.ckpt'} input=<your photos>"]
    (stage,) = [p for p in (cache / "demo_psnr_stage").iterdir() if p.is_dir()]
    checkpoint = stage / "checkpoints" / "last.ckpt"
    assert cfg.model.init_from == str(checkpoint)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["sr_gan"]["discriminator"] is None and saved["state_dict"]["generator.conv_first.weight"].shape[0] == 8
    stamp = checkpoint.stat().st_mtime_ns
    choices = read_run(stage).choices  # compare reads the stage like any run: its group choices
    assert (choices["loss"], choices["discriminator"], choices["model"]) == ("l1", "none", "rrdb")
    recorded = OmegaConf.load(stage / "config.yaml").choices  # and its config records them, not the GAN run's
    assert (recorded.loss, recorded.discriminator, recorded.logger) == ("l1", "none", "csv")
    assert OmegaConf.load(tmp_path / "config.yaml").choices.loss == "ragan"  # the GAN run's records its own

    again = make_cfg(*gan)
    train(again)  # reuses the finished stage
    assert again.model.init_from == str(checkpoint) and checkpoint.stat().st_mtime_ns == stamp
    other = make_cfg(*gan, "model.generator.num_features=4")  # another generator: another stage
    assert demo_stage.stage_config(other).config.paths.output_dir != str(stage)


@pytest.mark.parametrize(
    "overrides", [["loss=l1"], ["loss=ragan", "demo_psnr_init=false"], ["loss=ragan", "model.init_from=x.ckpt"]]
)
def test_no_stage_where_none_is_due(make_cfg, overrides: list[str]) -> None:
    assert not demo_stage.needs_psnr_stage(
        make_cfg(*overrides, "demo_psnr_init=true" if "demo_psnr_init=false" not in overrides else "seed=1")
    )


def test_runs_in_other_folders_share_one_stage(make_cfg, tmp_path: Path) -> None:
    """The stage's key leaves out the calling run's folder (``trainer.default_root_dir`` resolves to it):
    two GAN runs with their own ``hydra.run.dir`` reuse one PSNR stage, not train one each."""
    cfg = make_cfg("loss=ragan", "demo_psnr_init=true")
    runtime = HydraConfig.instance().cfg.hydra.runtime  # type: ignore[union-attr]
    folders = []
    for run_dir in ("run_a", "run_b"):
        with read_write(runtime), open_dict(runtime):
            runtime.output_dir = str(tmp_path / run_dir)
        folders.append(demo_stage.stage_config(cfg).config.paths.output_dir)
    assert folders[0] == folders[1] and "run_" not in folders[0]


def test_a_stage_cut_short_goes_on_from_its_last_checkpoint(make_cfg, tmp_path: Path, monkeypatch) -> None:
    """A PSNR stage stopped by Ctrl-C or SIGTERM kept its last.ckpt; the GAN run started again resumes the
    stage (it trained it again from batch 0, appending to the same metrics.csv)."""
    import json

    from sr_gan.run_summary import RunRecord, summary

    monkeypatch.setattr(
        demo_stage, "_STAGE", [*demo_stage._STAGE, "trainer.max_steps=2", "trainer.val_check_interval=2"]
    )
    gan = ["loss=ragan", "demo_psnr_init=true", f"paths.cache_dir={tmp_path / 'cache'}", "trainer.max_steps=1"]
    ends = []  # each run's closing summary: (folder, resume hint, whether it names the next commands)

    def spy(record: RunRecord, **kwargs: object) -> list[str]:
        ends.append((record.folder, kwargs["resume"], kwargs["next_steps"]))
        return summary(record, **kwargs)

    monkeypatch.setattr(sr_gan.train, "summary", spy)
    train(make_cfg(*gan, "test=false"))
    (stage,) = [p for p in (tmp_path / "cache" / "demo_psnr_stage").iterdir() if p.is_dir()]
    # the stage is resumed by the GAN command (its own folder's command would resume the GAN run from
    # it) and names no next commands: the GAN run names them, and is resumed in its own folder
    assert ends == [
        (stage, RESUME_HINT, False),
        (tmp_path, f"the same command with hydra.run.dir={tmp_path} ckpt_path=last", True),
    ]
    record = json.loads((stage / "run.json").read_text())
    (stage / "run.json").write_text(json.dumps({**record, "status": "preempted"}))  # as a SIGTERM leaves it
    train(make_cfg(*gan, "test=false"))
    resumed = json.loads((stage / "run.json").read_text())
    assert resumed["status"] == "done" and resumed["earlier_s"] == record["wall_s"]
    cut = RunRecord(folder=stage, status="preempted")
    lines = summary(cut, best_psnr=None, last={}, resume=RESUME_HINT)
    assert "resume: the same GAN command again" in "\n".join(lines)


def test_a_ddp_rank_other_than_0_trains_the_stage_with_rank_0_which_holds_the_lock(
    make_cfg, tmp_path: Path, monkeypatch
) -> None:
    """Under DDP every rank trains the stage together; rank 0 holds the lock that keeps parallel sweep
    jobs from training it twice. Rank 1 waiting for that lock waited for itself (rank 0 trains with it)."""
    import fcntl
    import threading

    from lightning.pytorch.utilities import rank_zero_only

    cfg = make_cfg("loss=ragan", "demo_psnr_init=true", f"paths.cache_dir={tmp_path / 'cache'}")
    folder = Path(demo_stage.stage_config(cfg).config.paths.output_dir)
    folder.mkdir(parents=True)
    trained = []
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    with open(folder.parent / f"{folder.name}.lock", "w") as held:  # rank 0, training the stage
        fcntl.flock(held, fcntl.LOCK_EX)
        rank1 = threading.Thread(target=demo_stage.psnr_stage_checkpoint, args=(cfg, lambda *a, **k: trained.append(1)))
        rank1.start()
        rank1.join(timeout=20)
        finished = not rank1.is_alive()
    rank1.join()
    assert finished and trained == [1]


def test_each_seed_has_its_own_stage_trained_with_that_seed(make_cfg) -> None:
    """The seed makes the PSNR stage (its initial weights, its patch stream): a GAN run's stage is
    trained with the run's seed, and two seeds get a stage each."""
    stages = {
        s: demo_stage.stage_config(make_cfg("loss=ragan", "demo_psnr_init=true", f"seed={s}")).config for s in (1, 2)
    }
    assert (stages[1].seed, stages[2].seed) == (1, 2)
    assert stages[1].paths.output_dir != stages[2].paths.output_dir
    drawn = make_cfg("loss=ragan", "demo_psnr_init=true", "seed=null")
    drawn.seed = 1  # what sr_gan.train draws and records for seed=null: the stage is that seed's
    assert demo_stage.stage_config(drawn).config.paths.output_dir == stages[1].paths.output_dir


def test_another_sr_gan_version_trains_its_own_stage(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache was keyed by the config alone: a stage trained by an earlier release was taken by the
    next, whose code may train it otherwise. sr-gan's version is in the key."""
    cfg = make_cfg("loss=ragan", "demo_psnr_init=true")
    before = demo_stage.stage_config(cfg).config.paths.output_dir
    assert demo_stage.stage_config(cfg).config.paths.output_dir == before
    monkeypatch.setattr("sr_gan.__version__", "99.0.0")
    assert demo_stage.stage_config(cfg).config.paths.output_dir != before


def test_an_edit_to_the_code_trains_its_own_stage(make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clone's edit (here to RRDBNet's file) leaves the version as it is: the stage it cached
    before the edit was taken by a run of the edited code. The source files are in the key."""
    package = tmp_path / "sr_gan"
    shutil.copytree(demo_stage.PACKAGE_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(demo_stage, "PACKAGE_DIR", package)
    cfg = make_cfg("loss=ragan", "demo_psnr_init=true")
    before = demo_stage.stage_config(cfg).config.paths.output_dir
    assert demo_stage.stage_config(cfg).config.paths.output_dir == before
    arch = package / "archs" / "rrdbnet.py"
    arch.write_text(arch.read_text() + "\n# an edit\n")
    assert demo_stage.stage_config(cfg).config.paths.output_dir != before


def test_each_thread_count_has_its_own_stage(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU run's weights depend on torch's thread count (the SRResNet stage's SSIM: 0.7820 with one
    thread, 0.7830 with two): a stage cached with one count was taken by runs with another. The count
    the stage trains with (exported OMP_NUM_THREADS, or the run's cpu_threads) is in the key."""
    cfg = make_cfg("loss=ragan", "demo_psnr_init=true")
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    three = demo_stage.stage_config(cfg).config.paths.output_dir
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert demo_stage.stage_config(cfg).config.paths.output_dir != three
    forced = demo_stage.stage_config(make_cfg("loss=ragan", "demo_psnr_init=true", "cpu_threads=3")).config
    assert forced.cpu_threads == 3 and forced.paths.output_dir == three  # the run's count, not the exported one


def test_the_source_digest_covers_the_whole_package_by_name_and_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key hashes every .py file of the installed package (not a part of it), each under its
    path: a file renamed (its code moved elsewhere) keys a stage of its own, and the order in
    which the filesystem lists the files (a fresh clone's) does not change the key."""
    assert demo_stage.PACKAGE_DIR == Path(sr_gan.__file__).parent
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "a.py").write_text("x = 1\n")
    (package / "sub" / "b.py").write_text("y = 2\n")
    digest = demo_stage.source_digest(package)
    listed = Path.rglob
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: reversed(list(listed(self, pattern))))
    assert demo_stage.source_digest(package) == digest
    (package / "sub" / "b.py").rename(package / "sub" / "c.py")
    assert demo_stage.source_digest(package) != digest


def test_the_stage_composes_alike_inside_a_hydra_app(make_cfg) -> None:
    """`python -m sr_gan.train` calls it inside Hydra's app (its global Hydra set): composed with that
    one rather than a context of its own, to the same stage."""
    from hydra import initialize_config_dir

    cfg = make_cfg("loss=ragan", "demo_psnr_init=true")
    alone = demo_stage.stage_config(cfg)
    with initialize_config_dir(config_dir=str(demo_stage.CONF_DIR), version_base="1.3"):
        inside = demo_stage.stage_config(cfg)
    assert inside.config == alone.config and inside.config.loss.get("adversarial") is None
