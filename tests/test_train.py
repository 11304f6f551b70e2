"""Training: the GAN step's halves, EMA, batch budgets, init_from, and every config combination."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from sr_gan.callbacks import BudgetProgressBar, PreemptionCheckpoint
from sr_gan.data import read_image
from sr_gan.data.demo import prepare_skimage_photos
from sr_gan.errors import UserError
from sr_gan.lit import EMAUpdater, SRGANModule, make_ema
from sr_gan.lit.ddp import PlayerDDPStrategy
from sr_gan.loggers import ResumableCSVLogger
from sr_gan.metrics import psnr, quantize
from sr_gan.ops import bicubic_degrade, imresize
from sr_gan.train import build_module, build_trainer, train
from tests.helpers import serve_folder

CONF = Path(__file__).resolve().parents[1] / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------- composition
# Every (loss, discriminator) pair, each with one of the models, so that every pair of options from
# two groups composes together. The model group refers to no loss/discriminator key (and they to
# none of its), so all 3-way combinations (3x as many composes, 0.3 s each) add no coverage.
_DISCRIMINATORS = [*_options("discriminator"), "implied"]
_PAIRWISE = [
    (_options("model")[(i + j) % len(_options("model"))], loss, discriminator)
    for i, loss in enumerate(_options("loss"))
    for j, discriminator in enumerate(_DISCRIMINATORS)
]


@pytest.mark.parametrize(("model", "loss", "discriminator"), _PAIRWISE)
def test_every_combination_composes(make_cfg, model: str, loss: str, discriminator: str) -> None:
    overrides = [f"model={model}", f"loss={loss}"]
    if discriminator != "implied":
        overrides.append(f"discriminator={discriminator}")
    cfg = make_cfg(*overrides)
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    gan = cfg.loss.adversarial is not None
    if discriminator == "implied":  # a GAN loss brings its discriminator, a PSNR loss none
        assert (cfg.discriminator is not None) == gan


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes(make_cfg, experiment: str) -> None:
    cfg = make_cfg(f"experiment={experiment}", tiny=False)
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def test_esrgan_recipe_carries_the_paper_values(make_cfg) -> None:
    cfg = make_cfg("experiment=esrgan_x4", tiny=False)
    assert cfg.model.generator._target_ == "sr_gan.archs.RRDBNet"
    assert (cfg.model.generator.num_blocks, cfg.model.ema_decay) == (23, 0.999)
    assert cfg.discriminator._target_ == "sr_gan.archs.VGGStyleDiscriminator"
    assert cfg.discriminator.input_size == cfg.data.patch_size == 128
    assert cfg.data.batch_size == 16
    assert cfg.loss.adversarial._target_ == "sr_gan.losses.RelativisticGANLoss"
    assert (cfg.loss.adversarial_weight, cfg.loss.pixel_weight) == (5e-3, 1e-2)
    assert list(cfg.loss.perceptual.layers) == ["conv5_4"]
    assert cfg.loss.perceptual.criterion._target_ == "torch.nn.L1Loss"  # the ESRGAN reference code: L1 on features
    assert cfg.optim.generator.lr == cfg.optim.discriminator.lr == 1e-4
    assert list(cfg.optim.scheduler.milestones) == [50000, 100000, 200000, 300000]
    assert cfg.trainer.max_steps == 400000
    assert cfg.require_init_from and cfg.model.init_from is None
    assert cfg.model.init_from_ema is False  # BasicSR's train_ESRGAN_x4.yml loads `params`, not `params_ema`
    assert cfg.group == "esrgan_x4"  # W&B group


def test_srgan_recipe_carries_the_paper_values(make_cfg) -> None:
    cfg = make_cfg("experiment=srgan_x4", tiny=False)
    assert cfg.model.generator._target_ == "sr_gan.archs.SRResNet"
    assert cfg.discriminator._target_ == "sr_gan.archs.SRGANDiscriminator"
    assert cfg.data.patch_size == cfg.discriminator.input_size == 96
    assert cfg.loss.adversarial_weight == 1e-3
    assert list(cfg.loss.perceptual.layers) == ["relu5_4"]
    assert cfg.loss.perceptual.feature_scale == pytest.approx(1 / 12.75)
    assert cfg.loss.perceptual.criterion._target_ == "torch.nn.MSELoss"  # SRGAN Eq. 5: MSE of the feature maps
    assert list(cfg.optim.scheduler.milestones) == [100000] and cfg.optim.scheduler.gamma == 0.1
    assert cfg.trainer.max_steps == 200000


def test_realesrgan_recipe_carries_the_paper_values(make_cfg) -> None:
    cfg = make_cfg("experiment=realesrgan_x4", tiny=False)
    assert cfg.data.degradation._target_ == "sr_gan.ops.RealESRGANDegradation"
    assert cfg.data.train_lr_dir is None and cfg.data.val_lr_dir is None  # LR made on the device
    assert cfg.discriminator._target_ == "sr_gan.archs.UNetDiscriminatorSN"
    assert cfg.loss.adversarial._target_ == "sr_gan.losses.VanillaGANLoss"
    assert (cfg.loss.pixel_weight, cfg.loss.perceptual_weight, cfg.loss.adversarial_weight) == (1.0, 1.0, 0.1)
    assert list(cfg.loss.perceptual.layers) == ["conv1_2", "conv2_2", "conv3_4", "conv4_4", "conv5_4"]
    assert list(cfg.loss.perceptual.layer_weights) == [0.1, 0.1, 1.0, 1.0, 1.0]
    assert (cfg.data.patch_size, cfg.data.batch_size, cfg.model.ema_decay) == (256, 12, 0.999)
    assert cfg.optim.generator.lr == cfg.optim.discriminator.lr == 1e-4 and cfg.trainer.max_steps == 400000
    realesrnet = make_cfg("experiment=realesrnet_x4", tiny=False)
    assert realesrnet.optim.generator.lr == 2e-4
    # the reference's train_realesr{gan,net}_x4plus.yml: use_hflip: True, use_rot: False; the papers' recipes
    # (BasicSR train_ESRGAN_x4.yml, use_rot: True) keep the 90-degree rotations
    for recipe in (cfg, realesrnet):
        assert (recipe.data.augment, recipe.data.rotate) == (True, False)
    assert make_cfg("experiment=esrgan_x4", tiny=False).data.rotate is True


# Each paper recipe's training schedule as its source gives it (SRGAN Sec. 3.2; ESRGAN Sec. 4.1 with
# BasicSR's iteration totals and EMA; Real-ESRGAN Sec. 4.1 and options/train_realesr{net,gan}_x4plus.yml): G's (and D's)
# Adam rate and betas, the milestones and their factor, the iterations, the batch, the HR patch,
# the generator EMA, D's steps per G step and its warm-up, the precision.
_ADAM, _ADAM_099 = (0.9, 0.999), (0.9, 0.99)
_PAPER_SCHEDULES = {
    "srresnet_x4": (1e-4, _ADAM, None, [], None, 1_000_000, 16, 96, None),
    "srgan_x4": (1e-4, _ADAM, (1e-4, _ADAM), [100_000], 0.1, 200_000, 16, 96, None),
    "rrdb_psnr_x4": (2e-4, _ADAM, None, [200_000, 400_000, 600_000, 800_000], 0.5, 1_000_000, 16, 128, 0.999),
    "esrgan_x4": (1e-4, _ADAM, (1e-4, _ADAM), [50_000, 100_000, 200_000, 300_000], 0.5, 400_000, 16, 128, 0.999),
    "realesrnet_x4": (2e-4, _ADAM_099, None, [1_000_000], 0.5, 1_000_000, 12, 256, 0.999),
    "realesrgan_x4": (1e-4, _ADAM_099, (1e-4, _ADAM_099), [400_000], 0.5, 400_000, 12, 256, 0.999),
}


@pytest.mark.parametrize("experiment", sorted(_PAPER_SCHEDULES))
def test_each_paper_recipe_trains_on_its_papers_schedule(make_cfg, experiment: str) -> None:
    cfg = make_cfg(f"experiment={experiment}", tiny=False)
    optim, milestones = cfg.optim, list(cfg.optim.scheduler.milestones)
    discriminator = None if cfg.discriminator is None else (optim.discriminator.lr, tuple(optim.discriminator.betas))
    schedule = (
        *(optim.generator.lr, tuple(optim.generator.betas), discriminator),
        *(milestones, optim.scheduler.gamma if milestones else None, cfg.trainer.max_steps),
        *(cfg.data.batch_size, cfg.data.patch_size, cfg.model.ema_decay),
    )
    assert schedule == _PAPER_SCHEDULES[experiment]
    # step decay in all six: rrdb_psnr_x4 halves as ESRGAN Sec. 4.1, not BasicSR's cosine restarts (docs/recipes.md)
    assert optim.scheduler._target_ == "torch.optim.lr_scheduler.MultiStepLR"
    # flips in all six; 90-degree rotations too but in Real-ESRGAN's (use_rot: False)
    assert (cfg.data.augment, cfg.data.rotate) == (True, not experiment.startswith("realesr"))
    assert (cfg.module.d_steps_per_g_step, cfg.module.d_init_steps, optim.accumulate_batches) == (1, 0, 1)
    assert cfg.trainer.precision == "32-true"


def test_the_demo_trains_on_real_world_degradations(make_cfg) -> None:
    metric = train(make_cfg("degradation=realesrgan", "trainer.max_steps=2", "test=false", "optimized_metric=val/psnr"))
    assert metric is not None and math.isfinite(metric)


# ---------------------------------------------------------------------------- one step each
_RUN_ONE = (
    [(m, "l1", None) for m in _options("model")]
    + [("srresnet", loss, None) for loss in _options("loss") if loss not in ("l1",)]
    + [("rrdb", "ragan", d) for d in ("srgan", "vgg128", "unet")]
)


_TERMS = (("pix", "pixel"), ("percep", "perceptual"), ("gan", "adversarial"))


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])  # bf16-mixed: trainer=gpu's, on CPU autocast
@pytest.mark.parametrize(("model", "loss", "discriminator"), _RUN_ONE)
def test_every_option_trains_one_batch(make_cfg, tmp_path, model, loss, discriminator, precision) -> None:
    overrides = [
        f"model={model}",
        f"loss={loss}",
        "trainer.max_steps=1",
        "test=false",
        f"trainer.precision={precision}",
    ]
    if discriminator:
        overrides.append(f"discriminator={discriminator}")
    cfg = make_cfg(*overrides, "optimized_metric=val/psnr")
    metric = train(cfg)
    assert metric is not None and math.isfinite(metric)
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    # the batch trained exactly the configured terms, each finite
    (row,) = [r for r in _metrics(tmp_path) if r.get("train/lr_g")]
    logged = {k for k, v in row.items() if k.startswith(("train/l_g_", "train/l_d_")) and v}
    wanted = {f"train/l_g_{t}" for t, key in _TERMS if cfg.loss[key] is not None}
    wanted |= {"train/l_d_real", "train/l_d_fake"} if cfg.discriminator is not None else set()
    assert logged == wanted and all(math.isfinite(float(row[k])) for k in logged)


# ---------------------------------------------------------------------------- the GAN step
class _Spy(SRGANModule):
    """Checks, between the halves of a batch, which parameters moved and which got gradients."""

    def generator_step(self, sr, hr, opt_g, **kwargs):
        d_before = [p.detach().clone() for p in self.discriminator.parameters()]
        g_before = [p.detach().clone() for p in self.generator.parameters()]
        for p in self.discriminator.parameters():
            p.grad = None  # left from the previous D step; the G step must not fill it
        logs = super().generator_step(sr, hr, opt_g, **kwargs)
        assert all(p.grad is None for p in self.discriminator.parameters()), "G step reached D"
        assert all(torch.equal(a, p) for a, p in zip(d_before, self.discriminator.parameters()))
        assert any(not torch.equal(a, p) for a, p in zip(g_before, self.generator.parameters()))
        self.halves = [*getattr(self, "halves", []), "g"]
        return logs

    def discriminator_step(self, fake, hr, opt_d, **kwargs):
        g_before = [p.detach().clone() for p in self.generator.parameters()]
        d_before = [p.detach().clone() for p in self.discriminator.parameters()]
        logs = super().discriminator_step(fake, hr, opt_d, **kwargs)
        assert all(torch.equal(a, p) for a, p in zip(g_before, self.generator.parameters()))
        assert any(not torch.equal(a, p) for a, p in zip(d_before, self.discriminator.parameters()))
        self.halves = [*getattr(self, "halves", []), "d"]
        return logs


def _fit(cfg, module_cls=SRGANModule, prepare=None):
    """Fit cfg.module built as `module_cls` (after `prepare(module)`) on cfg.data, without logging."""
    import lightning as L
    from hydra.utils import instantiate

    from sr_gan.callbacks import BatchBudget

    module = module_cls(**instantiate(cfg.module, _target_="builtins.dict"))  # module_cls may be a local class
    if prepare is not None:
        prepare(module)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=-1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        callbacks=[BatchBudget(cfg.trainer.max_steps * cfg.optim.accumulate_batches)],
    )
    trainer.fit(module, datamodule=instantiate(cfg.data))
    return module, trainer


def test_gan_step_halves_touch_only_their_player(make_cfg) -> None:
    module, _ = _fit(make_cfg("model=rrdb", "loss=ragan", "loss.perceptual=null"), _Spy)
    assert module.halves == ["g", "d", "g", "d"]


def test_discriminator_warm_up_and_k_skip_generator_batches(make_cfg) -> None:
    cfg = make_cfg(
        "loss=srgan",
        "loss.perceptual=null",
        "trainer.max_steps=5",
        "module.d_init_steps=2",
        "module.d_steps_per_g_step=2",
    )
    module, trainer = _fit(cfg, _Spy)
    # batches 0,1: D only (warm-up); then G on every second batch, D on every batch: BasicSR counts
    # iterations from 1 and updates G when `current_iter % net_d_iters == 0 and current_iter > init`,
    # so of batches 2, 3, 4 (its iterations 3, 4, 5) batch 3 alone
    assert module.halves == ["d", "d", "d", "g", "d", "d"]
    assert trainer.global_step == 6  # Lightning counts optimizer steps ...
    assert module.batches_done == 5  # ... the budget counts batches


def test_budget_milestones_and_validation_count_batches(make_cfg, tmp_path, monkeypatch) -> None:
    cfg = make_cfg(
        "loss=ragan",
        "trainer.max_steps=3",
        "trainer.val_check_interval=2",
        "optim.scheduler.milestones=[2]",
        "optim.generator.lr=0.1",
        "optim.discriminator.lr=0.1",
        "test=false",
    )
    logged = []  # the strips as a logger with images (W&B) gets them: key, files, step
    monkeypatch.setattr(
        ResumableCSVLogger,
        "log_image",
        lambda self, key, images, step: logged.append((key, images, step)),
        raising=False,
    )
    train(cfg)
    rows = _metrics(tmp_path)
    lrs = [float(r["train/lr_g"]) for r in rows if r.get("train/lr_g")]
    assert lrs == pytest.approx([0.1, 0.1, 0.05])  # 3 batches, halved after the 2nd
    assert len([r for r in rows if r.get("val/psnr")]) == 2  # at batch 2 and at the end (3)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["val_0000002", "val_0000003"]
    # The last validation's strip, of the first validation image only (module.num_samples=1): bicubic |
    # SR | HR side by side, each as its 8-bit file would hold it, recomputed here from the photo.
    (strip,) = (tmp_path / "samples" / "val_0000003").iterdir()
    bicubic, sr, hr = read_image(strip).tensor_split(3, dim=-1)
    photo = read_image(Path(cfg.data.val_hr_dir) / strip.name)
    assert strip.name == sorted(p.name for p in Path(cfg.data.val_hr_dir).iterdir())[0]
    assert torch.equal(hr, photo[:, : photo.shape[1] // 4 * 4, : photo.shape[2] // 4 * 4])
    expected = quantize(imresize(bicubic_degrade(hr[None].float() / 255, 4), 4))[0]
    assert torch.equal(bicubic, expected.to(torch.uint8))
    assert (sr.float() - bicubic.float()).abs().mean() > 1  # the generator's output, not a copy
    name = strip.stem  # W&B gets each strip at the batch of its validation (a later step drops what it logs)
    assert logged == [
        (f"val/samples/{name}", [str(tmp_path / "samples" / f"val_{b:07d}" / strip.name)], b) for b in (2, 3)
    ]
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6  # two optimizers: Lightning's counter ran twice as fast
    assert ckpt["sr_gan"]["generator"]["_target_"] == "sr_gan.archs.RRDBNet"
    assert not any(k.startswith("perceptual_loss.") for k in ckpt["state_dict"])


def test_the_progress_bar_counts_the_batches_the_budget_trains(make_cfg) -> None:
    """trainer.max_steps=3 iterations of optim.accumulate_batches=2 batches: the run trains 6 loader
    batches and validates every 2 x 2; the progress bar's total is those 6 batches, not 3."""
    cfg = make_cfg("trainer.max_steps=3", "optim.accumulate_batches=2", "trainer.enable_progress_bar=true")
    trainer = build_trainer(cfg)
    (bar,) = [c for c in trainer.callbacks if isinstance(c, BudgetProgressBar)]
    assert (bar.total_train_batches, trainer.val_check_interval) == (3 * 2, 2 * 2)


def test_each_validation_bar_replaces_the_one_before(tmp_path) -> None:
    """Lightning hid each finished validation's bar and kept it (one more Rich task a validation, for
    the whole run: 3, 4, 5, 6, 7 tasks after five validations): the bar keeps the training task, the
    sanity check's and one validation's, whatever the number of validations."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    bar, tasks = BudgetProgressBar(5), []

    class CountTasks(L.Callback):
        def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
            if not trainer.sanity_checking:
                tasks.append(len(bar.progress.tasks))

    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=5,
        val_check_interval=1,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[bar, CountTasks()],
    )
    trainer.fit(BoringModel())
    assert tasks == [3] * 5


@pytest.mark.parametrize(
    ("overrides", "player_ddp"),
    [
        ([], False),
        (["trainer.devices=2"], True),  # without trainer=ddp: Lightning's one DDP around the module failed
        (["trainer.num_nodes=2"], True),
        (["trainer.devices='2'"], True),  # as Lightning reads a count given as text
        (["trainer.strategy=ddp"], True),  # Lightning's name for its DDP: ours is that DDP, per player
        (["trainer.devices=2", "trainer.strategy=ddp_spawn"], False),  # another strategy of the user's own is kept
    ],
)
def test_more_than_one_process_trains_with_a_ddp_wrapper_per_player(make_cfg, overrides, player_ddp) -> None:
    cfg = make_cfg("loss=ragan", *overrides)
    strategy = build_trainer(cfg).strategy
    assert isinstance(strategy, PlayerDDPStrategy) == player_ddp
    if player_ddp:
        assert strategy._ddp_kwargs == {"find_unused_parameters": False, "broadcast_buffers": False}


# ---------------------------------------------------------------------------- EMA, init_from
def test_generator_ema_arithmetic() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    ema = make_ema(net)
    start = [p.detach().clone() for p in net.parameters()]
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net[1].running_mean.fill_(3.0)
    EMAUpdater(ema, net)(0.9)
    for e, s, p in zip(ema.parameters(), start, net.parameters()):
        torch.testing.assert_close(e, 0.9 * s + 0.1 * p)
    assert torch.equal(ema[1].running_mean, net[1].running_mean)  # buffers copied, not averaged
    assert not any(p.requires_grad for p in ema.parameters())


def test_validation_uses_the_ema_generator(make_cfg) -> None:
    module = build_module(make_cfg("model=rrdb"))
    assert module.inference_generator is module.generator_ema
    module = build_module(make_cfg("model=rrdb", "model.ema_decay=null"))
    assert module.inference_generator is module.generator


def test_an_rrdbnet_at_x2_validates_odd_sized_images_and_refuses_patches_it_cannot_take(make_cfg, tmp_path) -> None:
    """RRDBNet at x1/x2 pixel-unshuffles its input: an LR side that is no multiple of the factor
    (Set14's comic at x2: 125 rows) stopped validation with torch's stack trace after training.
    Validation edge-pads the LR image to the multiple and crops the SR back, as upscale and
    evaluate do; a training patch it cannot take is refused before the run starts."""
    with pytest.raises(UserError, match=r"data.patch_size=34 gives 17-px LR .* multiple of 4$"):
        build_module(make_cfg("data.scale=2", "data.patch_size=34"))
    val_dir = tmp_path / "val"
    val_dir.mkdir()
    demo = Path(os.environ["SR_GAN_CACHE"]) / "skimage_photos"
    prepare_skimage_photos(demo)
    photo = read_image(demo / "val" / "chelsea.png")
    Image.fromarray(photo[:, :50, :46].permute(1, 2, 0).numpy()).save(val_dir / "odd.png")  # LR 25 x 23
    cfg = make_cfg("data.scale=2", f"data.val_hr_dir={val_dir}", "data.val_max_images=null", "test=false")
    train(cfg)
    (row,) = (r for r in _metrics(tmp_path) if r.get("val/psnr"))
    datamodule = instantiate(cfg.data)
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    batch = datamodule.on_after_batch_transfer(datamodule.on_before_batch_transfer(batch, 0), 0)  # LR made there
    assert batch["lr"].shape[-2:] == (25, 23)
    module = build_module(cfg)
    module.load_state_dict(torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    with torch.no_grad():
        sr = module.generator_ema(F.pad(batch["lr"], (0, 1, 0, 1), mode="replicate"))[..., :50, :46]
    assert float(row["val/psnr"]) == pytest.approx(float(psnr(sr, batch["hr"], crop_border=2).mean()), abs=1e-4)


def test_init_from_loads_the_psnr_stage_exactly(make_cfg, tmp_path, caplog) -> None:
    """G and its EMA start from the PSNR stage's EMA of G (model.init_from_ema=true, BasicSR's
    param_key_g: params_ema) or from its G (false: `params`, as BasicSR's ESRGAN stage); the log
    says which."""
    train(make_cfg("model=rrdb", "test=false"))
    ckpt_path = tmp_path / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt_path, weights_only=True)["state_dict"]
    assert not all(
        torch.equal(v, state[f"generator_ema.{k.removeprefix('generator.')}"])
        for k, v in state.items()
        if k.startswith("generator.")
    )  # the two differ, so the picks below are told apart
    picks = (
        (True, "generator_ema.", "its EMA of G: model.init_from_ema=true"),
        (False, "generator.", "G's own weights, not its EMA: model.init_from_ema=false"),
    )
    for ema, prefix, said in picks:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sr_gan.train"):
            module = build_module(
                make_cfg("model=rrdb", "loss=ragan", f"model.init_from={ckpt_path}", f"model.init_from_ema={ema}")
            )
        for network in (module.generator, module.generator_ema):
            for key, value in network.state_dict().items():
                assert torch.equal(value, state[f"{prefix}{key}"]), (ema, key)
        assert f"generator initialised from {ckpt_path} ({said})" in caplog.text
    # a file holding one set says which it is, or nothing: the log says what G took
    ema_only = {"params_ema": {k.removeprefix("generator_ema."): v for k, v in state.items() if "generator_ema." in k}}
    plain = {k.removeprefix("generator."): v for k, v in state.items() if k.startswith("generator.")}
    for name, saved, said in (
        ("basicsr.pth", ema_only, "its EMA of G, the only ones it holds"),
        ("plain.pth", plain, "the weights it holds; it does not say whether they are an EMA"),
    ):
        torch.save(saved, tmp_path / name)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="sr_gan.train"):
            build_module(make_cfg("model=rrdb", f"model.init_from={tmp_path / name}", "model.init_from_ema=false"))
        assert f"generator initialised from {tmp_path / name} ({said})" in caplog.text


def test_init_from_a_url_is_fetched_once_into_torch_hubs_cache_and_checked(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """model.init_from=<URL> (e.g. the released ESRGAN weights Real-ESRNet starts from, a BasicSR file
    named with its SHA-256 prefix): downloaded into torch.hub's cache once (the second build reads
    the cache), checked against the prefix, loaded as a file is. A download that does not match its
    name is one line naming model.init_from, and nothing of it is kept."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    state = {key: value + 1 for key, value in build_module(make_cfg("model=rrdb")).generator.state_dict().items()}
    served = tmp_path / "served"
    served.mkdir()
    torch.save({"params_ema": state}, served / "file.pth")
    name = f"esrgan-{hashlib.sha256((served / 'file.pth').read_bytes()).hexdigest()[:8]}.pth"
    (served / "file.pth").rename(served / name)
    (served / "bad-deadbeef.pth").write_bytes((served / name).read_bytes())
    with serve_folder(served) as (url, requested):
        for _ in range(2):
            module = build_module(make_cfg("model=rrdb", f"model.init_from={url}/{name}"))
            for key, value in module.generator.state_dict().items():
                assert torch.equal(value, state[key]), key
        assert requested == [f"/{name}"] and (cache / name).read_bytes() == (served / name).read_bytes()
        with pytest.raises(UserError) as info:
            build_module(make_cfg("model=rrdb", f"model.init_from={url}/bad-deadbeef.pth"))
        assert str(info.value).startswith(
            f"model.init_from={url}/bad-deadbeef.pth: the download does not match the SHA-256 prefix deadbeef"
        )
        with pytest.raises(UserError, match=rf"^model\.init_from={url}/missing\.pth: cannot download it"):
            build_module(make_cfg("model=rrdb", f"model.init_from={url}/missing.pth"))
    assert sorted(p.name for p in cache.iterdir()) == [name]


@pytest.mark.parametrize(("name", "what"), [("missing.ckpt", "no such file"), ("", "a folder, not a file")])
def test_init_from_that_is_no_file_names_the_key_and_the_fix(make_cfg, tmp_path, name: str, what: str) -> None:
    """It read '<path>: no such weight file' (a folder too), naming neither model.init_from nor the fix."""
    path = tmp_path / name
    with pytest.raises(UserError) as caught:
        build_module(make_cfg("model=rrdb", f"model.init_from={path}"))
    assert str(caught.value).startswith(f"model.init_from={path}: {what}; pass an existing file, e.g. model.init_from=")


def test_init_from_weights_holding_nan_names_the_file_not_the_learning_rate(make_cfg, tmp_path) -> None:
    state = build_module(make_cfg("model=rrdb")).generator.state_dict()
    state["conv_first.weight"][0] = float("nan")
    torch.save(state, tmp_path / "nan.pth")
    with pytest.raises(UserError, match=r"nan\.pth: 1 tensors hold NaN/Inf \(e\.g\. conv_first\.weight\)"):
        build_module(make_cfg("model=rrdb", f"model.init_from={tmp_path / 'nan.pth'}"))


def test_init_from_another_size_names_keys_shapes_and_the_settings_to_match(make_cfg, tmp_path) -> None:
    torch.save(
        build_module(make_cfg("model=rrdb")).generator.state_dict(), tmp_path / "small.pth"
    )  # 8 features, 1 block
    bigger = ("model.generator.num_features=16", "model.generator.num_blocks=2")
    with pytest.raises(UserError) as caught:
        build_module(make_cfg("model=rrdb", *bigger, f"model.init_from={tmp_path / 'small.pth'}"))
    message = str(caught.value)
    assert (
        "does not fit the configured generator sr_gan.archs.RRDBNet (30 missing ['body.1.rdb1.conv1.weight'" in message
    )
    assert "wrong shape ['conv_first.weight (8, 3, 3, 3) in the file, (16, 3, 3, 3) here'" in message
    assert message.endswith(
        "model.generator.* (num_features, num_blocks, ...) and data.scale of the run that wrote it (its config.yaml)"
    )


# ---------------------------------------------------------------------------- paper recipes
def _div2k_layout(root: Path, scale: int = 4) -> None:
    """A miniature DIV2K tree (4 train, 2 valid images) with MATLAB-bicubic LR, as the official one."""
    from torchvision.io import write_png

    from sr_gan.ops import bicubic_degrade

    torch.manual_seed(0)
    for split, count in (("train", 4), ("valid", 2)):
        hr_dir = root / "DIV2K" / f"DIV2K_{split}_HR"
        lr_dir = root / "DIV2K" / f"DIV2K_{split}_LR_bicubic" / f"X{scale}"
        hr_dir.mkdir(parents=True)
        lr_dir.mkdir(parents=True)
        for i in range(count):
            hr = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12), size=(48, 48), mode="bilinear")
            hr = (hr * 255).round() / 255
            lr = bicubic_degrade(hr, scale)
            write_png((hr[0] * 255).to(torch.uint8), str(hr_dir / f"{i:04d}.png"))
            write_png((lr[0] * 255).round().to(torch.uint8), str(lr_dir / f"{i:04d}x{scale}.png"))


@pytest.mark.parametrize("experiment", ["srresnet_x4", "rrdb_psnr_x4", "realesrnet_x4"])
def test_psnr_recipes_start_on_a_div2k_tree(make_cfg, tmp_path, experiment: str) -> None:
    """The recipes' data wiring (paths, paired LR) on a tiny DIV2K; sizes shrunk to run on a CPU."""
    _div2k_layout(tmp_path / "data")
    cfg = make_cfg(
        f"experiment={experiment}",
        f"paths.data_dir={tmp_path / 'data'}",
        "trainer.precision=32-true",
        "test=false",
    )
    paired = experiment != "realesrnet_x4"  # Real-ESRNet makes its LR on the device
    assert (cfg.data.train_lr_dir or "").endswith("DIV2K/DIV2K_train_LR_bicubic/X4") == paired
    bicubic = train(OmegaConf.merge(cfg, {"optimized_metric": "val/psnr_bicubic"}))
    if not paired:
        assert bicubic is not None and math.isfinite(bicubic)
        return
    # ... the validation pairs each HR file with its LR file: the logged bicubic baseline is theirs
    folder = tmp_path / "data" / "DIV2K"
    hrs = [read_image(folder / "DIV2K_valid_HR" / f"{i:04d}.png")[None] / 255 for i in range(2)]
    lrs = [read_image(folder / "DIV2K_valid_LR_bicubic/X4" / f"{i:04d}x4.png")[None] / 255 for i in range(2)]
    expected = torch.cat([psnr(imresize(lr, 4), hr, crop_border=4) for hr, lr in zip(hrs, lrs, strict=True)])
    assert bicubic == pytest.approx(expected.mean().item(), abs=1e-4)


def _losses(run_dir: Path) -> list[dict[str, str]]:
    return [
        {k: v for k, v in r.items() if k.startswith("train/") and v} for r in _metrics(run_dir) if r["train/l_d_real"]
    ]


def test_resume_is_exact(make_cfg, tmp_path) -> None:
    """N batches straight == N/2, a new process-like start from last.ckpt, N/2 more: bitwise equal
    weights, optimizer states, schedules and per-batch losses (G, EMA, D; RaGAN + perceptual), and
    the same draws from the global torch, NumPy and Python generators at every batch (a user's
    augmentation or dropout: the RNGState callback carries them over)."""
    common = [
        "loss=ragan",
        "trainer.val_check_interval=2",
        "optim.scheduler.milestones=[3]",
        "test=false",
        "optim.generator.lr=1e-3",
        "optim.discriminator.lr=2e-4",
    ]
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"

    def run(folder: Path, *overrides: str) -> None:
        draws = ["+callbacks.draws._target_=tests.helpers.GlobalDraws", f"+callbacks.draws.path={folder}/draws.jsonl"]
        cfg = make_cfg(*common, *draws, *overrides)
        cfg.paths.output_dir = str(folder)
        train(cfg)

    run(straight_dir, "trainer.max_steps=4")
    run(resumed_dir, "trainer.max_steps=2")
    half = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=True)
    run(resumed_dir, "trainer.max_steps=4", "ckpt_path=last")

    straight, resumed = (
        torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (straight_dir, resumed_dir)
    )
    assert half["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 2
    assert resumed["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 4
    assert half["SRDataModule"]["stream_position"] == 2 * 2 and resumed["SRDataModule"]["stream_position"] == 4 * 2
    assert straight["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    assert not torch.equal(
        half["state_dict"]["generator.conv_first.weight"], resumed["state_dict"]["generator.conv_first.weight"]
    )
    for ours, theirs in zip(straight["optimizer_states"], resumed["optimizer_states"], strict=True):
        for state, other in zip(ours["state"].values(), theirs["state"].values(), strict=True):
            assert all(torch.equal(state[k], other[k]) for k in state)
    assert [s["last_epoch"] for s in resumed["lr_schedulers"]] == [4, 4]  # G and D schedules, in batches
    assert [s["_last_lr"] for s in resumed["lr_schedulers"]] == [[1e-3 * 0.5], [2e-4 * 0.5]]
    assert _losses(straight_dir) == _losses(resumed_dir)  # metrics.csv kept batches 1-2, appended 3-4
    draws = [(d / "draws.jsonl").read_text().splitlines() for d in (straight_dir, resumed_dir)]
    assert len(draws[0]) == 4 and draws[0] == draws[1]  # without the states: batch 3 drew batch 1's numbers


def test_a_gan_stage_started_from_weights_resumes_exactly_without_init_from(make_cfg, tmp_path) -> None:
    """The EMA of a GAN stage started from a PSNR stage (model.init_from) decays at model.ema_decay
    from its first batch; one started from random weights ramps up. A relaunch with ckpt_path may
    leave model.init_from out (the demo's GAN stage sets it on the first start only): it must go on
    with the run's decay, not the ramp (it did: the EMA fell onto the live G, -0.66 dB on the demo)."""
    psnr = make_cfg("trainer.max_steps=2", "test=false")
    psnr.paths.output_dir = str(tmp_path / "psnr")
    train(psnr)
    start = tmp_path / "psnr" / "checkpoints" / "last.ckpt"
    common = ["loss=ragan", "trainer.val_check_interval=2", "test=false", "model.ema_decay=0.9"]

    def run(folder: Path, *overrides: str) -> dict:
        cfg = make_cfg(*common, *overrides)
        cfg.paths.output_dir = str(folder)
        train(cfg)
        return torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)

    straight = run(tmp_path / "straight", "trainer.max_steps=4", f"model.init_from={start}")
    half = run(tmp_path / "resumed", "trainer.max_steps=2", f"model.init_from={start}")
    resumed = run(tmp_path / "resumed", "trainer.max_steps=4", "ckpt_path=last")
    assert half["sr_gan"]["ema_from_weights"] is True and resumed["sr_gan"]["ema_from_weights"] is True
    emas = [key for key in straight["state_dict"] if key.startswith("generator_ema.")]
    assert emas and all(torch.equal(straight["state_dict"][k], resumed["state_dict"][k]) for k in emas)
    assert not all(torch.equal(half["state_dict"][k], resumed["state_dict"][k]) for k in emas)  # it moved


def test_a_run_given_no_seed_records_the_seed_it_drew_which_reruns_it(make_cfg, tmp_path) -> None:
    """seed=null draws a seed and records it: config.yaml said ``seed: null`` while the initial weights
    and the patch stream came from unrecorded random seeds, so no run could repeat it. The recorded
    seed reruns it bitwise, and a resume in its folder keeps that seed in its record."""

    def run(folder: Path, *overrides: str) -> tuple[DictConfig, dict]:
        cfg = make_cfg("test=false", *overrides)
        cfg.paths.output_dir = str(folder)
        train(cfg)
        last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
        return OmegaConf.load(folder / "config.yaml"), last

    drawn, first = run(tmp_path / "drawn", "seed=null")
    assert isinstance(drawn.seed, int) and drawn.data.seed == drawn.seed == first["SRDataModule"]["seed"]
    _, again = run(tmp_path / "again", f"seed={drawn.seed}")
    for key, value in first["state_dict"].items():
        assert torch.equal(value, again["state_dict"][key]), key
    resumed, _ = run(tmp_path / "drawn", "seed=null", "trainer.max_steps=3", "ckpt_path=last")
    assert resumed.seed == drawn.seed


# The variables srun and torchrun set that decide whether seed=null derives the seed from the job
LAUNCHERS = ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_ID", "SLURM_STEP_ID", "TORCHELASTIC_RUN_ID", "WORLD_SIZE")


def test_seed_null_ranks_started_by_srun_or_torchrun_take_one_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    """seed=null in ranks that srun or torchrun started: each ran the whole command and drew its own
    seed (other patch streams; rank 0's recorded seed did not rerun the run). They now derive one
    alike from the job (srun's job and step ids, torchrun's rendezvous id), another job another;
    torchrun's default rendezvous id (the same for every job) is refused in one line; a process
    alone still draws from the operating system."""
    from sr_gan.train import _drawn_seed

    for name in (*LAUNCHERS, "RANK"):
        monkeypatch.delenv(name, raising=False)

    def seeds(environments: list[dict[str, str]]) -> list[int]:
        drawn = []
        for environment in environments:
            for name in LAUNCHERS:
                monkeypatch.delenv(name, raising=False)
            for name, value in environment.items():
                monkeypatch.setenv(name, value)
            drawn.append(_drawn_seed(None))
        return drawn

    srun = [
        {"SLURM_NTASKS": "8", "SLURM_PROCID": str(r), "SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0"} for r in range(3)
    ]
    ranks = seeds(srun)
    assert len(set(ranks)) == 1 and 0 <= ranks[0] <= 2**32 - 1
    assert seeds([srun[0] | {"SLURM_JOB_ID": "4243"}]) != ranks[:1]
    torchrun = [{"TORCHELASTIC_RUN_ID": "job-7", "WORLD_SIZE": "4", "RANK": str(r)} for r in range(2)]
    assert len(set(seeds(torchrun))) == 1 and seeds(torchrun)[:1] != ranks[:1]
    with pytest.raises(UserError, match=r"^seed=null under torchrun: .* give seed=<n>, or torchrun --rdzv-id="):
        seeds([torchrun[0] | {"TORCHELASTIC_RUN_ID": "none"}])
    assert len(set(seeds([{}, {}, {"SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_JOB_ID": "4242"}]))) == 3


def test_seed_null_is_derived_only_in_ranks_of_a_multi_process_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """A seed is derived from the job only where srun or torchrun started more than one rank: a single
    torchrun process (even with torchrun's default id) and srun's one task, or a shell of an allocation
    of 8 tasks that srun did not start (no SLURM_PROCID), draw theirs; two steps of one srun job are
    two jobs. A resumed checkpoint's seed is kept up to the largest seed (2**32 - 1)."""
    from sr_gan.schema import MAX_SEED
    from sr_gan.train import _drawn_seed

    def two_seeds(**environment: str) -> set[int]:
        for name in LAUNCHERS:
            monkeypatch.delenv(name, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        return {_drawn_seed(None), _drawn_seed(None)}

    assert len(two_seeds(TORCHELASTIC_RUN_ID="none", WORLD_SIZE="1")) == 2
    assert len(two_seeds(SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_JOB_ID="4242", SLURM_STEP_ID="0")) == 2
    assert len(two_seeds(SLURM_NTASKS="8", SLURM_JOB_ID="4242")) == 2
    step = {"SLURM_NTASKS": "8", "SLURM_PROCID": "0", "SLURM_JOB_ID": "4242"}
    assert two_seeds(**step, SLURM_STEP_ID="0") != two_seeds(**step, SLURM_STEP_ID="1")
    assert _drawn_seed({"SRDataModule": {"seed": MAX_SEED}}) == MAX_SEED


def test_a_preemption_inside_an_accumulated_iteration_stops_at_its_end_and_resumes_exactly(make_cfg, tmp_path) -> None:
    """optim.accumulate_batches=2, SIGTERM during batch 3 (the first half of iteration 2): the run
    finishes the iteration, saves last.ckpt after batch 4 and exits 143 (a checkpoint holds no
    half-accumulated gradients); resumed, it ends with the weights and optimizer states of the run
    that was not interrupted (bitwise)."""
    common = ["loss=ragan", "optim.accumulate_batches=2", "trainer.max_steps=3", "test=false"]

    def run(folder: Path, *overrides: str) -> None:
        cfg = make_cfg(*common, *overrides)
        cfg.paths.output_dir = str(folder)
        train(cfg)

    run(tmp_path / "straight")
    sigterm = ["+callbacks.sigterm._target_=tests.helpers.SigtermDuring", "+callbacks.sigterm.batch=3"]
    with pytest.raises(SystemExit) as stopped:
        run(tmp_path / "preempted", *sigterm)
    assert stopped.value.code == 143
    last = tmp_path / "preempted" / "checkpoints" / "last.ckpt"
    half = torch.load(last, weights_only=True)
    assert half["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 4
    run(tmp_path / "preempted", "ckpt_path=last")
    validated = [[r["step"] for r in _metrics(tmp_path / d) if r.get("val/psnr")] for d in ("straight", "preempted")]
    assert validated[0] == validated[1] and len(validated[0]) == 2  # the validation due at batch 4 ran whole
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(last, weights_only=True)
    assert resumed["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 6
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    for ours, theirs in zip(straight["optimizer_states"], resumed["optimizer_states"], strict=True):
        for state, other in zip(ours["state"].values(), theirs["state"].values(), strict=True):
            assert all(torch.equal(state[k], other[k]) for k in state)


@pytest.mark.parametrize("stop", [1, 2])  # a batch without a validation, and one with
def test_a_run_resumed_after_a_preemption_logs_the_steps_of_the_run_that_was_not_interrupted(
    make_cfg, tmp_path, stop
) -> None:
    """SIGTERM during batch `stop` of 4 (validations at 2 and 4), then ckpt_path=last: every
    metrics.csv row, training and validation, has the step it has in the run that was not
    interrupted. Stopped after batch 1, the resumed run logged its validations and last row one
    step too early (1 and 2 where the straight run has 1 and 3): a correction meant for a stop at a
    validation was applied after any batch."""

    def run(folder: Path, *overrides: str) -> list[str]:
        cfg = make_cfg("trainer.max_steps=4", "test=false", *overrides)
        cfg.paths.output_dir = str(folder)
        train(cfg)
        return [r["step"] + ("v" if r.get("val/psnr") else "") for r in _metrics(folder)]

    sigterm = ["+callbacks.sigterm._target_=tests.helpers.SigtermDuring", f"+callbacks.sigterm.batch={stop}"]
    with pytest.raises(SystemExit) as stopped:
        run(tmp_path / "preempted", *sigterm)
    assert stopped.value.code == 143
    assert run(tmp_path / "preempted", "ckpt_path=last") == run(tmp_path / "straight")


def test_a_sigterm_in_the_last_batch_ends_the_job_as_preempted_without_its_test_stage(make_cfg, tmp_path) -> None:
    """The budget's last batch is the stop batch: the fit ends as planned, then the job stops with
    143 and a last.ckpt instead of going on to the test stage (a scheduler's grace period would
    end it with SIGKILL there, and no job script would requeue it)."""
    sigterm = ["+callbacks.sigterm._target_=tests.helpers.SigtermDuring", "+callbacks.sigterm.batch=2"]
    with pytest.raises(SystemExit) as stopped:
        train(make_cfg("trainer.max_steps=2", "test=true", *sigterm))
    assert stopped.value.code == 143
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 2
    assert not any(r.get("test/psnr") for r in _metrics(tmp_path))


def test_a_sigterm_during_the_final_validation_ends_the_job_as_preempted(make_cfg, tmp_path) -> None:
    """A SIGTERM that comes after the last batch's check (in the final validation) still stops the job
    with 143 and a last.ckpt once the fit ends, without its test stage: the job script requeues it
    and the resumed run has nothing left to train."""
    sigterm = ["+callbacks.sigterm._target_=tests.helpers.SigtermInValidation", "+callbacks.sigterm.batch=2"]
    with pytest.raises(SystemExit) as stopped:
        train(make_cfg("trainer.max_steps=2", "test=true", *sigterm))
    assert stopped.value.code == 143
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "preempted"
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 2
    assert not any(r.get("test/psnr") for r in _metrics(tmp_path))


def test_a_rank_other_than_0_trains_without_writing_the_runs_record_or_samples(make_cfg, tmp_path, monkeypatch) -> None:
    """Under DDP every rank runs sr_gan.train in the one run folder: rank 0 alone writes config.yaml,
    run.json and the validation strips (another rank's strips are of other images, under the same
    names). One process taken for rank 1 trains, validates and writes none of them; as rank 0 it
    writes all three."""
    overrides = ("trainer.max_steps=1", "trainer.val_check_interval=1", "test=false")
    with monkeypatch.context() as rank1:
        rank1.setattr(L.Trainer, "is_global_zero", property(lambda self: False))
        train(make_cfg(*overrides))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file() and _metrics(tmp_path)[-1]["val/psnr"]
    assert not [p.name for p in tmp_path.iterdir() if p.name in ("config.yaml", "run.json", "samples")]
    for name in ("config.yaml", "run.json"):  # (samples: validations write them anew)
        (tmp_path / name).unlink(missing_ok=True)
    train(make_cfg(*overrides))
    assert {"config.yaml", "run.json", "samples"} <= {p.name for p in tmp_path.iterdir()}


class _TwoRanks:
    """What PreemptionCheckpoint reads of a Trainer on rank 0 of 2, whose rank 1 got a SIGTERM: the
    strategy combines this rank's flag with rank 1's (``all``: both, else either)."""

    world_size, log_every_n_steps, is_global_zero = 2, 2, True

    def __init__(self) -> None:
        rank1 = True
        self.strategy = SimpleNamespace(
            reduce_boolean_decision=lambda own, all=True: own and rank1 if all else own or rank1
        )
        self._signal_connector = SimpleNamespace(received_sigterm=False)
        self.fit_loop = SimpleNamespace(
            epoch_loop=SimpleNamespace(batch_progress=SimpleNamespace(total=SimpleNamespace()))
        )

    def after_batch(self, callback: PreemptionCheckpoint, batches: int) -> bool:
        """Lightning's stop flag once the callback saw batch `batches` end."""
        self.fit_loop.epoch_loop.batch_progress.total.processed = batches
        callback.on_train_batch_end(self, SimpleNamespace(accumulate_batches=1))
        return self._signal_connector.received_sigterm


def test_a_sigterm_on_another_rank_stops_this_one_on_the_logging_interval_and_at_the_end(tmp_path) -> None:
    """Under DDP a SIGTERM reaches one rank (rank 1 here): rank 0, which got none, stops on the same
    batch, the first of the logging interval (not between intervals: no sync there), and a SIGTERM
    that came after the last batch's check ends rank 0's fit as pre-empted too (else rank 0 would go
    on to its test stage and wait there for rank 1). One process stops after the batch it got it in."""
    callback, trainer = PreemptionCheckpoint(tmp_path), _TwoRanks()
    assert not callback.requested
    assert [trainer.after_batch(callback, batches) for batches in (1, 2)] == [False, True]
    with pytest.raises(SIGTERMException):
        callback.on_train_end(trainer, None)
    alone, trainer.world_size = PreemptionCheckpoint(tmp_path), 1  # one process: nothing to sync, every batch
    trainer.strategy, trainer._signal_connector.received_sigterm = (
        SimpleNamespace(reduce_boolean_decision=lambda own, all=True: own),
        False,
    )
    alone.requested = True
    assert trainer.after_batch(alone, 1)


def test_the_test_stage_scores_the_best_checkpoint_not_the_last_weights(make_cfg, tmp_path) -> None:
    """G and its EMA are zeroed as batch 3 starts, so the final validation (batch 3, a black image) is
    below the one at batch 2: the test stage loads best.ckpt (batch 2) and scores what it scored there
    (with the weights the fit ended with it scored the black image)."""
    spoil = ["+callbacks.spoil._target_=tests.helpers.ZeroGeneratorFrom", "+callbacks.spoil.batch=3"]
    train(make_cfg("trainer.max_steps=3", "trainer.val_check_interval=2", "test=true", *spoil))
    rows = _metrics(tmp_path)
    validated = [float(r["val/psnr"]) for r in rows if r.get("val/psnr")]
    (tested,) = [float(r["test/psnr"]) for r in rows if r.get("test/psnr")]
    assert len(validated) == 2 and validated[1] < validated[0] - 1
    assert tested == pytest.approx(validated[0], abs=1e-4)


def test_resuming_a_run_whose_budget_is_spent_trains_no_further_batch(make_cfg, tmp_path) -> None:
    """A relaunch of a run whose budget is spent but which did not end done (a SIGTERM after its last
    batch: status 143 before its test stage) with the same trainer.max_steps trains nothing: last.ckpt
    keeps its batch count and its weights. Its run.json counts batches, not Lightning's optimizer steps
    (two a GAN batch), and adds the relaunch to the recorded wall time. (A run that ended done is left
    as it is: `test_a_done_run_relaunched_in_its_folder_is_left_as_it_is`.)"""
    common = ["loss=ragan", "loss.perceptual=null", "trainer.max_steps=2", "test=false"]
    train(make_cfg(*common))
    last, record = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "run.json"
    assert json.loads(record.read_text())["batches"] == 2
    before = torch.load(last, weights_only=True)
    cut_short = {"wall_s": 1000.0, "status": "preempted"}  # a long first segment, stopped after its last batch
    record.write_text(json.dumps(json.loads(record.read_text()) | cut_short))
    train(make_cfg(*common, "ckpt_path=last"))
    after = torch.load(last, weights_only=True)
    assert after["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 2
    for key, value in before["state_dict"].items():
        assert torch.equal(value, after["state_dict"][key]), key
    resumed = json.loads(record.read_text())
    assert (resumed["status"], resumed["batches"]) == ("done", 2) and 1000.0 < resumed["wall_s"] < 1300.0


def test_a_done_run_relaunched_in_its_folder_is_left_as_it_is(make_cfg, tmp_path, caplog) -> None:
    """A sweep relaunched into its folder with ckpt_path=last (to resume its killed and pre-empted jobs)
    resumed its done jobs too: they trained nothing but tested again, which logged at the last batch's
    step and dropped that batch's and the last validation's metrics.csv rows (30 batches: 30 training
    rows -> 29 and compare's best PSNR fell to an earlier validation's, 9.20 -> 9.18 dB), added a W&B
    segment and wall time. Such a run is left as it is now (its files unchanged) and returns its
    recorded test score to the sweeper; a larger trainer.max_steps trains it further."""
    train(make_cfg("trainer.max_steps=2"))
    files = [tmp_path / "run.json", tmp_path / "csv" / "metrics.csv", *(tmp_path / "checkpoints").glob("*.ckpt")]
    before = {path: path.read_bytes() for path in files}
    tested = json.loads((tmp_path / "run.json").read_text())["metrics"]["test/psnr"]
    with caplog.at_level(logging.INFO, logger="sr_gan"):
        assert train(make_cfg("trainer.max_steps=2", "ckpt_path=last")) == pytest.approx(tested, abs=1e-6)
    assert {path: path.read_bytes() for path in files} == before
    assert f"{tmp_path} is done (run.json: 2 batches of 2, tested): nothing to train or test" in caplog.text
    train(make_cfg("trainer.max_steps=3", "ckpt_path=last"))
    assert json.loads((tmp_path / "run.json").read_text())["batches"] == 3
    rows = _metrics(tmp_path)
    assert [r["step"] for r in rows if r.get("train/l_g_pix")] == ["0", "1", "2"]


def test_a_done_run_relaunched_with_a_smaller_budget_or_no_test_asked_is_left_as_it_is(
    make_cfg, tmp_path, caplog
) -> None:
    """A run done with test=false, relaunched with test=false and a smaller trainer.max_steps, is done
    too (its budget is trained, no test is owed) and returns its recorded optimized_metric; a run.json
    that does not count its batches (a hand edit) is no done run: the run resumes, as one resumed from
    a last.ckpt other than its folder's own does."""
    train(make_cfg("trainer.max_steps=2", "test=false"))
    record = tmp_path / "run.json"
    recorded = record.read_text()
    relaunch = ("trainer.max_steps=1", "test=false", "optimized_metric=val/psnr", "ckpt_path=last")
    with caplog.at_level(logging.INFO, logger="sr_gan"):
        value = train(make_cfg(*relaunch))
    assert value == pytest.approx(json.loads(recorded)["metrics"]["val/psnr"], abs=1e-6)
    assert record.read_text() == recorded
    assert f"{tmp_path} is done (run.json: 2 batches of 1): nothing to train or test" in caplog.text
    record.write_text(json.dumps({k: v for k, v in json.loads(recorded).items() if k != "batches"}))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sr_gan"):
        train(make_cfg(*relaunch))
    assert "is done" not in caplog.text and json.loads(record.read_text())["batches"] == 2
    elsewhere = tmp_path / "elsewhere" / "last.ckpt"  # a last.ckpt, not the folder's own: the run goes on from it
    elsewhere.parent.mkdir()
    shutil.copy(tmp_path / "checkpoints" / "last.ckpt", elsewhere)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="sr_gan"):
        train(make_cfg("trainer.max_steps=2", "test=false", f"ckpt_path={elsewhere}"))
    assert "is done" not in caplog.text


def test_a_done_run_owing_its_test_or_resumed_from_another_checkpoint_is_not_left_as_it_is(
    make_cfg, tmp_path, caplog
) -> None:
    """Only a run done as asked is left as it is: one that trained its budget without its test
    (test=false) and is relaunched with test=true is tested, and a resume from another of its
    checkpoints (best.ckpt, not last.ckpt) goes on from that checkpoint."""
    train(make_cfg("trainer.max_steps=2", "test=false"))
    with caplog.at_level(logging.INFO, logger="sr_gan"):
        train(make_cfg("trainer.max_steps=2", "ckpt_path=last"))
        assert "is done" not in caplog.text
        assert "test/psnr" in json.loads((tmp_path / "run.json").read_text())["metrics"]
        train(make_cfg("trainer.max_steps=2", f"ckpt_path={tmp_path / 'checkpoints' / 'best.ckpt'}"))
    assert "is done" not in caplog.text


def test_a_ctrl_c_before_the_first_validation_saves_a_checkpoint_that_resumes(make_cfg, tmp_path, caplog) -> None:
    """A Ctrl-C during batch 2, long before the first validation: the run ends after that batch with
    a resumable last.ckpt (Lightning's own Ctrl-C saved nothing: the batches were lost), status 130,
    the record says interrupted and the closing lines say how to resume; resumed, it goes on."""
    ctrl_c = ["+callbacks.ctrl_c._target_=tests.helpers.CtrlCDuring", "+callbacks.ctrl_c.batch=2"]
    common = ["trainer.val_check_interval=10", "test=false"]
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background shell's pytest ignores it
    try:
        with pytest.raises(SystemExit) as stopped, caplog.at_level(logging.INFO, logger="sr_gan"):
            train(make_cfg("trainer.max_steps=10", *common, *ctrl_c))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the fit put the handler back
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert stopped.value.code == 130
    record = json.loads((tmp_path / "run.json").read_text())
    assert (record["status"], record["error"], record["batches"]) == ("interrupted", None, 2)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert (
        torch.load(last, weights_only=True)["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 2
    )
    # in its own folder: ckpt_path=<folder> alone resumed into a new timestamped folder (a second W&B run,
    # metrics.csv and run.json split, the best score forgotten) and ckpt_path=last alone started afresh there
    assert f"resume: the same command with hydra.run.dir={tmp_path} ckpt_path=last" in caplog.messages
    assert any(m.startswith("Ctrl-C: saved a resumable checkpoint after batch 2") for m in caplog.messages)

    train(make_cfg("trainer.max_steps=3", *common, "ckpt_path=last"))
    assert (
        torch.load(last, weights_only=True)["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 3
    )
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "done"


def test_a_second_ctrl_c_stops_at_once_without_a_checkpoint(make_cfg, tmp_path) -> None:
    """Two Ctrl-Cs during batch 2: the second one stops the run at once, as Lightning does (exit
    status 1, no checkpoint written for it), and the record still says interrupted, not failed."""
    ctrl_c = ["+callbacks.ctrl_c._target_=tests.helpers.CtrlCDuring", "+callbacks.ctrl_c.batch=2"]
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)  # Lightning ignores Ctrl-C as it shuts down
    try:
        with pytest.raises(SystemExit) as stopped:
            train(
                make_cfg(
                    "trainer.max_steps=10",
                    "trainer.val_check_interval=10",
                    "test=false",
                    *ctrl_c,
                    "+callbacks.ctrl_c.times=2",
                )
            )
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert stopped.value.code == 1
    record = json.loads((tmp_path / "run.json").read_text())
    assert (record["status"], record["error"], record["batches"]) == ("interrupted", None, 1)
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_a_second_ctrl_c_while_the_first_ones_checkpoint_is_written_leaves_the_last_one_whole(
    make_cfg, tmp_path
) -> None:
    """The second Ctrl-C lands inside the first one's checkpoint write: the write is abandoned, the
    last.ckpt of the validation at batch 2 stays as it was (no partial file, no temporary), the run
    exits 1 and its record says interrupted."""
    ctrl_c = ["+callbacks.ctrl_c._target_=tests.helpers.CtrlCAgainWhileSaving", "+callbacks.ctrl_c.batch=3"]
    sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    cfg = make_cfg("trainer.max_steps=10", "trainer.val_check_interval=2", "test=false", *ctrl_c)
    last = tmp_path / "checkpoints" / "last.ckpt"
    try:
        with pytest.raises(SystemExit) as stopped:
            train(cfg)
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert stopped.value.code == 1
    record = json.loads((tmp_path / "run.json").read_text())
    assert (record["status"], record["error"]) == ("interrupted", None)
    saved = torch.load(last, weights_only=True)
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 2
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_a_run_started_with_ctrl_c_ignored_keeps_ignoring_it(make_cfg, tmp_path) -> None:
    """A job started in the background (`python -m sr_gan.train ... &`) ignores SIGINT, as Python
    does: the run does not take it over, and a SIGINT sent to it changes nothing."""
    ctrl_c = ["+callbacks.ctrl_c._target_=tests.helpers.CtrlCDuring", "+callbacks.ctrl_c.batch=2"]
    sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        train(make_cfg("trainer.max_steps=3", "test=false", *ctrl_c))
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, sigint)
    record = json.loads((tmp_path / "run.json").read_text())
    assert (record["status"], record["batches"]) == ("done", 3)


def test_rng_states_travel_in_the_checkpoint() -> None:
    import random

    import numpy as np

    from sr_gan.callbacks import RNGState

    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # the legacy normal draws in pairs: the second one waits in the state (has_gauss)
    saved = RNGState().state_dict()
    expected = (torch.rand(3), np.random.rand(3), np.random.randn(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    callback = RNGState()
    callback.load_state_dict(saved)
    callback.on_train_start(None, None)
    again = (torch.rand(3), np.random.rand(3), np.random.randn(3), random.random())
    assert torch.equal(again[0], expected[0]) and (again[1] == expected[1]).all() and again[3] == expected[3]
    assert (again[2] == expected[2]).all()  # the waiting normal too: without it every later normal differs


def test_a_sweeps_ended_job_gives_the_gpus_cached_memory_back_and_restarts_its_peak(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Between a sweep's jobs the collector runs, then, where CUDA is in use, the cached blocks go back
    to the driver and the peak counter restarts (each job's memory/gpu_peak_gib its own); off a GPU
    nothing of CUDA is called."""
    import gc

    import sr_gan.train

    calls: list[str] = []
    monkeypatch.setattr(gc, "collect", lambda: calls.append("collect") or 0)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda: calls.append("reset_peak_memory_stats"))
    for initialized, called in ((True, ["collect", "empty_cache", "reset_peak_memory_stats"]), (False, ["collect"])):
        calls.clear()
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda initialized=initialized: initialized)
        sr_gan.train._release_job_memory()
        assert calls == called, initialized


def test_cuda_rng_states_go_back_to_the_gpus_the_resumed_run_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint of 4 GPUs' random states resumed where 2 are seen: the first 2 states go to
    devices 0 and 1 (`set_rng_state_all` set device 2 too: "invalid device ordinal" on a real GPU,
    a traceback when training started), and a state per GPU seen is checked before anything runs."""
    from sr_gan.callbacks import RNGState

    set_states: list[tuple[int, int]] = []

    def set_rng_state(state: torch.Tensor, device: int = 0) -> None:
        if device >= 2:
            raise RuntimeError("CUDA error: invalid device ordinal")
        set_states.append((int(state[0]), device))

    for module in (torch.cuda, torch.cuda.random):
        monkeypatch.setattr(module, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    state = RNGState().state_dict() | {"cuda": [torch.full((16,), gpu, dtype=torch.uint8) for gpu in range(4)]}
    RNGState.check_state(state)
    callback = RNGState()
    callback.load_state_dict(state)
    callback.on_train_start(None, None)
    assert set_states == [(0, 0), (1, 1)]
    RNGState.check_state(state | {"cuda": [torch.zeros(8, dtype=torch.uint8)]})  # a seed alone: torch takes it too
    uint8 = torch.zeros(16, dtype=torch.uint8)
    # {}: no state in it, but no list for the restore to slice on a GPU machine
    for crafted in ([torch.zeros(16)], [torch.zeros(3, dtype=torch.uint8)], uint8, {}):
        with pytest.raises(TypeError, match="its CUDA states are not uint8 tensors of 8 or 16 bytes"):
            RNGState.check_state(state | {"cuda": crafted})


@pytest.mark.parametrize(
    ("loss", "layers"),
    [
        ("vgg22", {"relu2_2"}),
        ("vgg54", {"relu5_4"}),
        ("srgan", {"relu5_4"}),
        ("srgan_vgg22", {"relu2_2"}),
        ("srgan_preact", {"conv5_4"}),
        ("esrgan", {"conv5_4"}),
        ("ragan", {"conv5_4"}),
    ],
)
def test_each_perceptual_loss_uses_exactly_its_layers(make_cfg, loss: str, layers: set[str]) -> None:
    """Hydra merges mappings: a config derived from another must not keep the parent's layer too."""
    assert set(make_cfg(f"loss={loss}").loss.perceptual.layers) == layers


def test_a_layer_override_replaces_the_layers(make_cfg) -> None:
    cfg = make_cfg("loss=esrgan", "loss.perceptual.layers=[conv2_2,conv3_4]", "loss.perceptual.layer_weights=[0.5,1]")
    assert build_module(cfg).perceptual_loss.layer_weights == {"conv2_2": 0.5, "conv3_4": 1.0}


def test_an_ema_from_random_weights_warms_up_and_one_from_trained_weights_does_not(make_cfg) -> None:
    torch.manual_seed(0)
    initial = {}
    cfg = make_cfg("model=rrdb", "model.ema_decay=0.999", "trainer.max_steps=3", "optim.generator.lr=1e-2")
    module, _ = _fit(cfg, prepare=lambda m: initial.update({k: v.clone() for k, v in m.generator.state_dict().items()}))
    assert module.current_ema_decay == pytest.approx(4 / 13)  # after 3 iterations: (1 + 3) / (10 + 3)
    ema, live = module.generator_ema.state_dict(), module.generator.state_dict()
    to_live = sum((ema[k] - live[k]).norm() for k in live)
    assert to_live < 0.5 * sum((initial[k] - live[k]).norm() for k in live)  # the average follows G, not the init
    assert module.ema_from_weights is False
    built = build_module(make_cfg("model=rrdb", "model.ema_decay=0.999"))
    built.init_generator_from(module.generator.state_dict())
    assert built.ema_from_weights is True


def test_a_random_vgg_is_recorded_as_what_ran(make_cfg, tmp_path) -> None:
    """The ImageNet VGG19 cannot be fetched here: the run warns once and records pretrained: false."""
    from omegaconf import OmegaConf

    cfg = make_cfg("loss=vgg54", "trainer.max_steps=1", "test=false")
    cfg.loss.perceptual.pretrained = True  # as a user's config says; the download fails offline
    with pytest.warns(UserWarning, match="RANDOM VGG19") as caught:
        train(cfg)
    assert len([w for w in caught if "RANDOM VGG19" in str(w.message)]) == 1
    recorded = OmegaConf.load(tmp_path / "config.yaml")
    assert recorded.loss.perceptual.pretrained is False and "RANDOM VGG19" in recorded.warnings[0]
    assert recorded.module.perceptual_loss.pretrained is False  # the module's copy of the loss config


def test_the_discriminator_sees_the_unsharpened_hr_as_real(make_cfg) -> None:
    """Real-ESRGAN: L1 and perceptual aim at the USM-sharpened target, D's real images are the HR
    (reference gan_gt_usm: False)."""
    seen = []

    class Spy(SRGANModule):
        def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
            seen.append({"target": batch["hr"], "real": batch["hr_real"]})
            return super().training_step(batch, batch_idx)

        def discriminator_step(self, fake, hr, opt_d, **kwargs):  # noqa: ANN001, ANN202
            seen[-1]["d_real"] = hr
            return super().discriminator_step(fake, hr, opt_d, **kwargs)

    _fit(make_cfg("loss=ragan", "degradation=realesrgan", "loss.perceptual=null", "trainer.max_steps=1"), Spy)
    (batch,) = seen
    assert torch.equal(batch["d_real"], batch["real"]) and not torch.equal(batch["real"], batch["target"])


@pytest.mark.parametrize(("code", "goes_on"), [(2, True), (143, False), (130, False), (1, False)])
def test_only_a_sweep_job_refused_on_its_input_lets_the_sweep_go_on(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int, goes_on: bool
) -> None:
    """A sweep's job that ends on its input (status 2: its line printed) is handed to Hydra as a failed
    job, and the sweep runs its next jobs; a job pre-empted (143), interrupted (130) or crashed ends
    the sweep with its status, so that the scheduler requeues it or the user sees it at once."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    import sr_gan.train
    from sr_gan.errors import SweepJobFailed

    job = SimpleNamespace(mode=RunMode.MULTIRUN, sweep=SimpleNamespace(subdir="3"), job=SimpleNamespace(num=3))
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: job))
    monkeypatch.setattr(sr_gan.train, "_release_job_memory", lambda: None)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # no check of the config's ${hydra:...} values, which this job lacks

    def ends(cfg: DictConfig) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(sr_gan.train, "train", ends)
    cfg = make_cfg()
    cfg.paths.output_dir = str(tmp_path / "sweep" / "3")
    (tmp_path / "sweep" / "3" / ".hydra").mkdir(parents=True)  # all Hydra made of a job refused at start-up
    if goes_on:
        with pytest.raises(SweepJobFailed, match=r"^job 3 of the sweep failed \(its error above, .*sweep/3\); the"):
            sr_gan.train.main(cfg)
        assert not (tmp_path / "sweep" / "3").exists()  # its folder goes, as a single run's
    else:
        with pytest.raises(SystemExit) as stopped:
            sr_gan.train.main(cfg)
        assert stopped.value.code == code


def test_a_run_registers_the_record_its_rank_watch_writes_when_it_stops_rank_0(
    make_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`RankWatch` stops a rank 0 left waiting for a failed rank (SIGKILL: rank 0 writes nothing more):
    the run registered, as it started, what records its end then: run.json failed, with the line and
    the batches done (a registration dropped left run.json saying 'running')."""
    import sr_gan.ranks
    from sr_gan.run_summary import read_record

    monkeypatch.setattr(sr_gan.ranks, "_on_stop", None)
    train(make_cfg("test=false"))
    line = "rank 1 failed (exit status 2) and rank 0, waiting for it, had not ended the run 30 s later: ..."
    sr_gan.ranks._on_stop(line)  # as the watch's thread calls it
    record = read_record(tmp_path)
    assert (record["status"], record["error"], record["batches"]) == ("failed", line, 2)
