"""Every value a user sets is checked at start-up, in one line naming the key, the value and the rule."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sr_gan.config import (
    UnusedRunFolder,
    WritableOutput,
    check_init_from,
    check_train_config,
    precision_advice,
    register_resolvers,
    resolve_device,
)
from sr_gan.errors import UserError
from sr_gan.schema import Rule
from tests.helpers import CONF_DIR


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=abc", "data.batch_size=abc is not allowed: data.batch_size must be an integer >= 1"),
        ("data.batch_size=0", "data.batch_size=0 is not allowed"),
        ("data.batch_size=-2", "data.batch_size=-2 is not allowed"),
        ("data.batch_size=2.5", "data.batch_size=2.5 is not allowed"),
        ("data.patch_size=0", "data.patch_size=0 is not allowed"),
        ("data.num_workers=-1", "data.num_workers=-1 is not allowed: data.num_workers must be an integer >= 0"),
        ("data.scale=5", "data.scale=5 is not allowed: data.scale must be one of 1, 2, 3, 4, 8"),
        (  # the booleans as they are typed (Python's True and False were shown)
            "model.compile=yes",
            "model.compile=yes is not allowed: model.compile must be one of false, true, inductor, eager, aot_eager",
        ),
        ("trainer.val_check_interval=0", "trainer.val_check_interval=0 is not allowed"),
        ("trainer.val_check_interval=0.5", "trainer.val_check_interval=0.5 is not allowed"),
        ("trainer.max_steps=0", "trainer.max_steps=0 is not allowed"),
        (
            "optim.generator.lr=-1e-4",
            "optim.generator.lr=-0.0001 is not allowed: optim.generator.lr must be a number > 0",
        ),
        ("optim.discriminator.lr=nan", "optim.discriminator.lr=nan is not allowed"),
        (
            "model.ema_decay=1.5",
            "model.ema_decay=1.5 is not allowed: model.ema_decay must be a number > 0 and < 1 or null",
        ),
        ("data.augment=maybe", "data.augment=maybe is not allowed: data.augment must be true or false"),
        ("model.init_from_ema=maybe", "model.init_from_ema=maybe is not allowed: model.init_from_ema must be true or"),
        (  # L.seed_everything's limit: it raised a ValueError traceback after the run folder was made
            "seed=4294967296",
            "seed=4294967296 is not allowed: seed must be an integer >= 0 and <= 4294967295 or null",
        ),
        ("test=flase", "test=flase is not allowed: test must be true or false"),
        ("allow_random_vgg=flase", "allow_random_vgg=flase is not allowed: allow_random_vgg must be true or false"),
        ("demo_psnr_init=flase", "demo_psnr_init=flase is not allowed: demo_psnr_init must be true or false"),
        ("require_init_from=maybe", "require_init_from=maybe is not allowed: require_init_from must be true or"),
        ("trainer.precision=fp8", "trainer.precision=fp8 is not allowed"),
        (  # Lightning has it, but it casts the EMA and Adam's state to bf16 (and crashed on float32 inputs)
            "trainer.precision=bf16-true",
            "trainer.precision=bf16-true is not allowed: trainer.precision must be one of 32-true, 32, bf16-mixed, "
            "16-mixed",
        ),
        ("loss.adversarial_weight=-1", "loss.adversarial_weight=-1 is not allowed"),
        ("loss.pixel_weight=true", "loss.pixel_weight=true is not allowed: loss.pixel_weight must be a number >= 0"),
        ("optim.scheduler.gamma=1.5", "optim.scheduler.gamma=1.5 is not allowed"),
        ("module.d_init_steps=-1", "module.d_init_steps=-1 is not allowed: module.d_init_steps must be an integer >="),
        ("data.val_crop=0", "data.val_crop=0 is not allowed: data.val_crop must be an integer >= 1 or null"),
        ("data.patch_size=30", "data.patch_size=30 is not a multiple of data.scale=4: patches are cut on the scale"),
        ("callbacks.snapshots.every=0", "callbacks.snapshots.every=0 is not allowed"),
        (  # TINY validates every 2 iterations
            "callbacks.snapshots.every=5",
            "callbacks.snapshots.every=5 is not a multiple of trainer.val_check_interval=2: snapshots are kept at "
            "validations; e.g. callbacks.snapshots.every=4",
        ),
        (  # below the interval: the hint is the interval, not 0
            "callbacks.snapshots.every=1",
            "callbacks.snapshots.every=1 is not a multiple of trainer.val_check_interval=2: snapshots are kept at "
            "validations; e.g. callbacks.snapshots.every=2",
        ),
        ("discriminator.input_size=16", "discriminator.input_size=16 differs from data.patch_size=32: the discrimina"),
    ],
)
def test_bad_values_are_refused_at_start_up_in_one_line(make_cfg, override: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        check_train_config(make_cfg("loss=ragan", override))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_a_patch_the_discriminator_cannot_take_is_refused_at_start_up(make_cfg) -> None:
    """discriminator=unet halves the HR patch three times: data.patch_size=36 was refused at the first
    GAN batch, after the run folder, the W&B run and (in the demo) the PSNR stage were made; the
    VGG-style and SRGAN discriminators refused a patch that is no multiple of 32 / 16 when built, in
    the demo after minutes of its PSNR stage."""
    with pytest.raises(UserError) as info:
        check_train_config(make_cfg("loss=ragan", "discriminator=unet", "data.patch_size=36"))
    assert str(info.value) == (
        "data.patch_size=36 is not a multiple of 8, which UNetDiscriminatorSN needs: e.g. data.patch_size=32"
    )
    with pytest.raises(UserError, match="e.g. data.patch_size=24$"):  # on the x3 grid too
        check_train_config(make_cfg("loss=ragan", "discriminator=unet", "data.scale=3", "data.patch_size=33"))
    check_train_config(make_cfg("loss=ragan", "discriminator=unet", "data.patch_size=40"))
    with pytest.raises(UserError, match=r"^data.patch_size=100 is not a multiple of 32, which VGGStyleDiscriminator"):
        check_train_config(make_cfg("loss=ragan", "data.patch_size=100", "discriminator.input_size=100"))
    with pytest.raises(UserError, match=r"^data.patch_size=40 is not a multiple of 16, which SRGANDiscriminator"):
        check_train_config(make_cfg("loss=srgan", "data.patch_size=40", "discriminator.input_size=40"))


def test_a_gan_recipe_without_init_from_names_every_recipes_psnr_stage(make_cfg) -> None:
    """experiment=realesrgan_x4 refuses to start from noise too: its PSNR stage is realesrnet_x4."""
    with pytest.raises(UserError) as info:
        check_init_from(make_cfg("loss=ragan", "require_init_from=true"), resuming=False)
    message = str(info.value)
    assert message.startswith("this recipe starts from a PSNR-oriented generator: set model.init_from=")
    assert "experiment=rrdb_psnr_x4 for ESRGAN" in message and "experiment=realesrnet_x4 for Real-ESRGAN" in message


def test_a_made_degradation_beside_lr_files_is_refused_in_one_line(make_cfg) -> None:
    """experiment=esrgan_x4 degradation=realesrgan: data=div2k's LR files were used and the
    degradation never ran (bit-equal losses, bicubic baseline unchanged), without a word."""
    with pytest.raises(UserError) as info:
        check_train_config(make_cfg("experiment=esrgan_x4", "degradation=realesrgan", "model.init_from=x.ckpt"))
    assert str(info.value).startswith("degradation=RealESRGANDegradation makes the training LR from the HR, but ")
    assert str(info.value).endswith(
        "set data.train_lr_dir=null (and data.val_lr_dir=null to validate on the degradation too)"
    )
    check_train_config(make_cfg("experiment=realesrgan_x4", "model.init_from=x.ckpt"))  # its LR folders are null
    check_train_config(make_cfg("degradation=realesrgan"))  # the demo's photos: no LR files


@pytest.mark.parametrize(
    ("override", "message"),
    [  # Hydra's answer to a typo'd key is "To append to your config use +trainer.max_step=4"
        (
            "+trainer.max_step=4",
            "trainer.max_step is not an argument of Lightning's Trainer: did you mean trainer.max_steps?",
        ),
        ("+trainer.foo=1", "trainer.foo is not an argument of Lightning's Trainer: see conf/trainer/default.yaml"),
    ],
)
def test_an_unknown_trainer_key_is_refused_at_start_up_in_one_line(make_cfg, override: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        check_train_config(make_cfg(override))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    check_train_config(make_cfg("+trainer.detect_anomaly=true"))  # any Trainer argument may be added
    check_train_config(make_cfg("+trainer._convert_=all"))  # and Hydra's instantiation keys


def test_a_network_of_the_users_own_is_checked_at_start_up_naming_the_demo_and_its_fix(
    make_cfg, usernet: ModuleType, tmp_path: Path
) -> None:
    """model=mynet from a config folder of the user's (hydra.searchpath): the default experiment=demo
    sizes sr_gan's generators with num_features and num_blocks, which a network of the user's own does
    not take. That was Hydra's several-line TypeError once the run folder was made, naming neither the
    demo nor ~experiment; a key mistyped or a package off PYTHONPATH likewise."""
    (tmp_path / "userconf" / "model").mkdir(parents=True)
    (tmp_path / "userconf" / "model" / "mynet.yaml").write_text(
        "generator:\n  _target_: usernet.TinyNet\n  scale: ${data.scale}\ninit_from: null\nema_decay: null\n"
    )
    mine = (f"hydra.searchpath=[file://{tmp_path / 'userconf'}]", "model=mynet")
    with pytest.raises(UserError) as info:
        check_train_config(make_cfg(*mine, tiny=False))
    assert str(info.value) == (
        "model.generator.num_features is not an argument of usernet.TinyNet: experiment=demo sets it for "
        "sr_gan's networks: add ~experiment, or ~model.generator.num_features ~model.generator.num_blocks "
        "to keep its budgets"
    )
    with pytest.raises(UserError) as info:  # a key of the user's beside the demo's: ~experiment drops the demo's only
        check_train_config(make_cfg(*mine, "+model.generator.depth=2", tiny=False))
    assert str(info.value).endswith("or ~model.generator.num_features ~model.generator.num_blocks to keep its budgets")
    demo = ("~model.generator.num_features", "~model.generator.num_blocks")
    check_train_config(cfg := make_cfg(*mine, *demo, tiny=False))
    assert type(instantiate(cfg.module).generator) is usernet.TinyNet
    cfg = make_cfg(*mine, "~experiment", tiny=False)
    check_train_config(cfg)
    assert type(instantiate(cfg.module).generator) is usernet.TinyNet
    for overrides, message in [
        (["+model.generator.sclae=2"], "model.generator.sclae is not an argument of usernet.TinyNet: did you mean "),
        (["+model.generator.depth=2"], "model.generator.depth is not an argument of usernet.TinyNet: remove it with "),
        (["loss.pixel._target_=usernet.TinyLoss", "+loss.pixel.weigth=2"], "loss.pixel.weigth is not an argument"),
        (["model.generator._target_=userpkg2.TinyNet"], "model.generator._target_=userpkg2.TinyNet cannot be imported"),
    ]:
        with pytest.raises(UserError, match=message):
            check_train_config(make_cfg(*mine, "~experiment", *overrides, tiny=False))
    own_loss = ("loss.pixel._target_=usernet.TinyLoss", "+loss.pixel.weight=2")
    check_train_config(make_cfg(*mine, "~experiment", *own_loss, tiny=False))
    check_train_config(make_cfg(*mine, "~experiment", "loss.pixel._target_=builtins.dict", tiny=False))  # no signature
    any_key = ("model.generator._target_=usernet.not_a_network", "+model.generator.depth=2")  # (*args, **kwargs)
    check_train_config(make_cfg(*mine, "~experiment", *any_key, tiny=False))
    (tmp_path / "userpkg" / "broken.py").write_text("raise RuntimeError('a bug in the user module')\n")
    with pytest.raises(ImportError, match="a bug in the user module"):  # its own error to read, not PYTHONPATH
        check_train_config(make_cfg(*mine, "~experiment", "model.generator._target_=broken.Net", tiny=False))
    (tmp_path / "userconf" / "experiment").mkdir()  # an experiment of the user's own: none of sr_gan's to name
    (tmp_path / "userconf" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\nmodel:\n  generator:\n    depth: 2\n"
    )
    with pytest.raises(
        UserError, match=r"^model.generator.depth is not an argument of usernet.TinyNet: remove it with"
    ):
        check_train_config(make_cfg(*mine, "experiment=mine", tiny=False))


def test_a_gpu_trainer_without_a_gpu_names_the_cpu_trainer(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # Apple silicon: Lightning's gpu is MPS
    check_train_config(make_cfg("trainer=gpu", "trainer.accelerator=gpu"))
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(
        UserError, match=r"trainer.accelerator=gpu but this machine has no usable GPU .*: use trainer=cpu"
    ):
        check_train_config(make_cfg("trainer=gpu", "trainer.accelerator=gpu"))


def test_sync_batchnorm_on_cpus_is_one_line(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's SyncBatchNorm runs on GPUs only: on CPUs (trainer.accelerator=cpu, or auto without a GPU)
    the run is refused at start-up instead of raising from inside DDP's set-up."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for accelerator in ("cpu", "auto"):
        cfg = make_cfg("trainer=ddp", f"trainer.accelerator={accelerator}", "trainer.sync_batchnorm=true")
        with pytest.raises(
            UserError, match=r"^trainer.sync_batchnorm=true needs GPUs .*: set trainer.sync_batchnorm=false"
        ):
            check_train_config(cfg)
    check_train_config(make_cfg("trainer=ddp", "trainer.accelerator=cpu"))  # without it: fine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    check_train_config(make_cfg("trainer=ddp", "trainer.accelerator=auto", "trainer.sync_batchnorm=true"))


def test_the_shipped_configs_pass(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the paper recipes ask for trainer=gpu
    for experiment in ("demo", "srresnet_x4", "rrdb_psnr_x4"):
        check_train_config(make_cfg(f"experiment={experiment}", tiny=False))
    check_train_config(make_cfg("loss=ragan", "model.ema_decay=null", "seed=null"))


def test_the_readmes_basicsr_psnr_schedule_is_basicsrs(make_cfg, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's override for BasicSR's RRDB-PSNR schedule (train_RRDBNet_PSNR_x4.yml:
    CosineAnnealingRestartLR, periods 4 x 250k, restart weights 1, eta_min 1e-7) starts and gives
    that schedule's rates; it named CosineAnnealingLR with T_max=400000, which neither stage uses."""
    (override,) = re.findall(r"`(optim\.scheduler\._target_=[^`]*)`", (CONF_DIR.parent / "README.md").read_text())
    cfg = make_cfg("experiment=rrdb_psnr_x4", *override.split(), tiny=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the recipe asks for trainer=gpu
    check_train_config(cfg)
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.optim.generator.lr)
    scheduler = instantiate(cfg.optim.scheduler)(optimizer)
    base, eta_min, period = 2e-4, 1e-7, 250_000
    for iteration in (1, 125_000, 249_999, 250_001, 400_000, 625_000, 999_999):
        # BasicSR's get_lr: cosine from the start of the period that holds the iteration (ends included)
        start = max(c for c in range(0, cfg.trainer.max_steps, period) if c < iteration)
        expected = eta_min + 0.5 * (base - eta_min) * (1 + math.cos(math.pi * (iteration - start) / period))
        scheduler.step(iteration)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9), iteration


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")))
def test_the_optimizers_get_plain_python_values_so_checkpoints_load_weights_only(make_cfg, experiment: str) -> None:
    """Adam keeps `betas` as given in its param_groups up to torch 2.6: a ListConfig there made every
    checkpoint fail torch.load(weights_only=True) (resume, evaluate, upscale all refuse it)."""
    optim = make_cfg(f"experiment={experiment}", tiny=False).optim
    for player in ("generator", "discriminator"):
        factory = instantiate(optim[player])
        assert type(factory.keywords["betas"]) is list, (player, type(factory.keywords["betas"]))


def test_rule_bounds_mix_ints_and_floats() -> None:
    assert Rule(float, above=0).allows(3) and not Rule(float, above=0).allows(0)
    assert Rule(int, low=1).allows(1) and not Rule(int, low=1).allows(True)
    assert Rule(float, low=0, high=1).allows(1.0) and not Rule(float, low=0, high=1).allows(float("inf"))
    assert not Rule(float, low=0).allows(float("inf"))  # a number is finite, bounded above or not


def test_a_device_name_is_checked_in_one_line() -> None:
    with pytest.raises(UserError, match="device='nonsense' is not a device"):
        resolve_device("nonsense")
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available here"):
            resolve_device("cuda")


@pytest.mark.parametrize(
    ("precision", "capability", "warned"),
    [
        ("bf16-mixed", (7, 0), True),
        ("bf16-mixed", (7, 5), True),
        ("bf16-mixed", (8, 0), False),
        ("16-mixed", (7, 0), False),
    ],
)
def test_bf16_on_a_gpu_without_bf16_tensor_cores_is_told_to_use_16_mixed(
    make_cfg, monkeypatch: pytest.MonkeyPatch, precision: str, capability: tuple[int, int], warned: bool
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    advice = precision_advice(make_cfg("trainer=gpu", "trainer.accelerator=gpu", f"trainer.precision={precision}"))
    assert (advice is not None) == warned
    if warned:
        assert advice.startswith("trainer.precision=bf16-mixed on Tesla V100-SXM2-16GB (compute capability 7.")
        assert "trainer.precision=16-mixed" in advice
    assert precision_advice(make_cfg("trainer=cpu", "trainer.precision=bf16-mixed")) is None


def test_a_missing_data_folder_is_refused_at_start_up_naming_key_and_fix(make_cfg, tmp_path) -> None:
    """It was a FileNotFoundError from the data module, after the run folder and networks were made."""
    from sr_gan.config import check_data_folders

    with pytest.raises(UserError) as info:
        check_data_folders(make_cfg("data=div2k", f"paths.data_dir={tmp_path / 'data'}"))
    assert str(info.value).startswith(f"data.train_hr_dir={tmp_path}/data/DIV2K/DIV2K_train_HR does not exist: ")
    assert f"python -m sr_gan.data.download div2k --root {tmp_path}/data" in str(info.value)
    hr = tmp_path / "hr"
    hr.mkdir()
    with pytest.raises(UserError, match=rf"^data.train_hr_dir={hr} holds no image files \(.png/.jpg"):
        check_data_folders(make_cfg("data=folder", f"data.train_hr_dir={hr}", f"data.val_hr_dir={hr}"))
    from PIL import Image

    Image.new("RGB", (8, 8)).save(hr / "x.png")
    with pytest.raises(UserError, match=r"^data.val_hr_dir=/nowhere does not exist: pass a folder of images"):
        check_data_folders(make_cfg("data=folder", f"data.train_hr_dir={hr}", "data.val_hr_dir=/nowhere"))
    check_data_folders(make_cfg("data=folder", f"data.train_hr_dir={hr}", f"data.val_hr_dir={hr}"))
    check_data_folders(make_cfg("data=demo", f"paths.cache_dir={tmp_path / 'empty'}"))  # made on first use


def test_resolvers_size_the_demo_by_its_objective_and_file_runs_by_stage() -> None:
    """``${if_pixel_loss:a,b}``: a only without perceptual and adversarial terms; ``${job_type:}``: gan
    with an adversarial term, else psnr, and a tool's task name outside training."""
    register_resolvers()
    pixel = {"_target_": "torch.nn.L1Loss"}
    cases = [
        ({"pixel": pixel, "perceptual": None, "adversarial": None}, "train", (1, "psnr")),
        ({"pixel": pixel, "perceptual": {"layer": "conv5_4"}, "adversarial": None}, "train", (2, "psnr")),
        ({"pixel": None, "perceptual": None, "adversarial": {"kind": "ragan"}}, "train", (2, "gan")),
        ({"pixel": pixel, "perceptual": None, "adversarial": None}, "evaluate", (1, "evaluate")),
    ]
    for loss, task, expected in cases:
        cfg = OmegaConf.create({"task_name": task, "loss": loss, "size": "${if_pixel_loss:1,2}", "job": "${job_type:}"})
        assert (cfg.size, cfg.job) == expected, (loss, task)


def test_a_sweep_folder_holding_runs_is_named_by_its_first_jobs_record(tmp_path: Path) -> None:
    """The refusal of a folder holding runs names the first file it finds, in order: a run's run.json
    before its checkpoints, the sweep's job 0 before job 1."""
    from sr_gan.config import _held_run

    for job in ("1", "0"):
        (tmp_path / job / "checkpoints").mkdir(parents=True)
        (tmp_path / job / "checkpoints" / "last.ckpt").touch()
        (tmp_path / job / "run.json").write_text("{}")
    assert _held_run(tmp_path, jobs="*/") == tmp_path / "0" / "run.json"
    assert _held_run(tmp_path / "1", jobs="") == tmp_path / "1" / "run.json"
    assert _held_run(tmp_path / "0" / "checkpoints", jobs="") is None


def test_a_sweep_relaunched_with_ckpt_path_last_into_a_folder_without_jobs_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A sweep relaunched to resume its jobs without its hydra.sweep.dir goes into a new timestamped
    folder, where every job starts from scratch: each job said only `ckpt_path=last: no <job>/checkpoints/
    last.ckpt yet`, naming the new folder. The sweep now says once that its folder holds no job, and
    how a sweep resumes; a folder holding a job (the relaunch done right) gets no such line."""
    swept = tmp_path / "sweep"
    (swept / "0").mkdir(parents=True)
    (swept / "0" / "run.json").write_text("{}")
    said = {}
    for folder, ckpt_path in ((tmp_path / "new", "last"), (swept, "last"), (tmp_path / "branches", "a/last.ckpt")):
        caplog.clear()
        config = OmegaConf.create({"hydra": {"sweep": {"dir": str(folder)}}, "ckpt_path": ckpt_path})
        with caplog.at_level(logging.INFO, logger="sr_gan"):
            UnusedRunFolder().on_multirun_start(config)
        said[folder.name] = [r.message for r in caplog.records if "every job starts from scratch" in r.message]
    assert said.pop("branches") == []  # every job branches from that checkpoint
    assert said == {
        "new": [
            f"ckpt_path=last: hydra.sweep.dir={tmp_path / 'new'} holds no job yet, every job starts from scratch "
            "(a sweep resumes its jobs when relaunched into its own folder: hydra.sweep.dir=<that folder>)"
        ],
        "sweep": [],
    }


def test_the_hydra_callbacks_check_a_runs_or_a_sweeps_folder_and_let_a_resume_or_a_rank_in(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """conf/hydra/default.yaml's callbacks, before Hydra writes: WritableOutput tries the run's folder
    for a run and the sweep's for a sweep; UnusedRunFolder refuses a new run in a folder holding a run
    (its run.json or a checkpoint; for a sweep, a job's), but not a resume (ckpt_path, a requeued
    SLURM job) nor a rank other than 0, however its launcher numbers it (torchrun's rank 1 on a
    second node has LOCAL_RANK 0; srun's SLURM_PROCID; Lightning's own NODE_RANK): it joins the run
    rank 0 started."""
    (tmp_path / "file").write_text("not a folder")
    held = tmp_path / "held"
    (held / "checkpoints").mkdir(parents=True)
    (held / "checkpoints" / "last.ckpt").write_bytes(b"")
    free, unwritable = tmp_path / "free", tmp_path / "file" / "runs"
    swept = tmp_path / "sweep"  # a sweep whose job 0 was stopped before its first checkpoint
    (swept / "0").mkdir(parents=True)
    (swept / "0" / "run.json").write_text("{}")
    (swept / "multirun.yaml").write_text("{}")
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)

    def config(run: Path, sweep: Path, **top: object) -> DictConfig:
        return OmegaConf.create({"hydra": {"run": {"dir": str(run)}, "sweep": {"dir": str(sweep)}}, **top})

    for start, good, bad in (
        (WritableOutput().on_run_start, config(free, unwritable), config(unwritable, free)),
        (WritableOutput().on_run_start, config(free, unwritable), config(tmp_path / "file", free)),  # the folder a file
        (WritableOutput().on_multirun_start, config(unwritable, free), config(free, unwritable)),
        (UnusedRunFolder().on_run_start, config(free, held), config(held, free)),
        (UnusedRunFolder().on_run_start, config(free, held), config(swept / "0", free)),  # run.json alone
        (UnusedRunFolder().on_multirun_start, config(held, free), config(free, swept)),  # a job's run.json
    ):
        start(good)
        with pytest.raises(SystemExit) as refused:
            start(bad)
        assert refused.value.code == 2
    UnusedRunFolder().on_run_start(config(held, free, ckpt_path="last"))
    for launcher in (
        {"RANK": "1", "LOCAL_RANK": "0"},
        {"SLURM_PROCID": "1"},
        {"NODE_RANK": "1"},
        {"SLURM_RESTART_COUNT": "1"},
    ):
        with monkeypatch.context() as rank:
            for name, value in launcher.items():
                rank.setenv(name, value)
            UnusedRunFolder().on_run_start(config(held, free))


def test_path_arg_fetches_a_url_only_for_a_key_that_takes_one_and_refuses_an_empty_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`url=True` (upscale/export ckpt, interpolate psnr and gan): an http(s) URL is fetched into
    torch.hub's cache and that file returned; any other key reads it as a path (never a download).
    An empty value (``ckpt=``) is "not set", not the current folder."""
    from sr_gan.config import path_arg
    from tests.helpers import serve_folder

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    served = tmp_path / "served"
    served.mkdir()
    (served / "g.pth").write_bytes(b"weights")
    with serve_folder(served) as (url, requested):
        cfg = OmegaConf.create({"ckpt": f"{url}/g.pth", "empty": ""})
        with pytest.raises(UserError, match=r"^ckpt=http:/127\.0\.0\.1:\d+/g\.pth: no such file"):
            path_arg(cfg, "ckpt", example="g.pth", must_exist=True)
        assert requested == []
        fetched = path_arg(cfg, "ckpt", example="g.pth", must_exist=True, url=True)
        assert fetched == tmp_path / "torch" / "hub" / "checkpoints" / "g.pth" and requested == ["/g.pth"]
    for options in ({"must_exist": True, "url": True}, {"output": True}):
        with pytest.raises(UserError, match=r"^'empty' is not set: add empty=g\.pth$"):
            path_arg(cfg, "empty", example="g.pth", **options)


@pytest.mark.parametrize(("mode", "offline"), [(None, True), ("offline", True), ("disabled", True), ("online", False)])
def test_wandb_is_offline_unless_wandb_mode_is_online(
    monkeypatch: pytest.MonkeyPatch, mode: str | None, offline: bool
) -> None:
    """conf/logger/wandb.yaml: no account or network needed; checkpoints go to W&B as artifacts
    only online. Without WANDB_MODE (the tests' own environment sets it) the run is offline."""
    register_resolvers()
    if mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", mode)
    wandb = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "logger" / "wandb.yaml").wandb
    assert (wandb.offline, wandb.log_model) == (offline, not offline)


def test_a_sweep_folder_without_its_multirun_yaml_sweeps_no_key(tmp_path: Path) -> None:
    from sr_gan.config import _swept_keys

    assert _swept_keys(tmp_path / "multirun.yaml") == set()  # (a launcher that writes none)
