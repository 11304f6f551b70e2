"""The GAN step, checked from outside: gradients, loss-term weights, update signs, EMA in validation.

Each test runs `SRGANModule` under a real Lightning Trainer on one fixed batch and compares what
the module did (the gradients its optimizers stepped with, the parameters before/after, the logged
values) with an independent recomputation from copies of G and D taken before the batch. The
adversarial losses are re-written here with softplus (``-log sigma(x) = softplus(-x)``), not with
the module's BCE calls. Only the public surface is used: constructor arguments, ``generator``,
``generator_ema``, ``discriminator``, the Trainer and the logged keys. No VGG: the perceptual slot
gets a cheap stand-in (any ``(sr, hr) -> scalar`` module is accepted there).

Planted defects these tests catch are listed in docs/testing.md.
"""

from __future__ import annotations

import copy
import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from unittest.mock import patch

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.plugins import MixedPrecision
from lightning.pytorch.strategies import DDPStrategy
from torch import Tensor, nn
from torch.utils.data import DataLoader

from benchmarks.bench_ddp import AllReduceCounter
from sr_gan.callbacks import BatchBudget
from sr_gan.data import read_image
from sr_gan.errors import UserError
from sr_gan.lit import SRGANModule
from sr_gan.lit.ddp import PlayerDDPStrategy
from sr_gan.lit.samples import SampleStrips, save_strip
from sr_gan.losses import HingeGANLoss, LSGANLoss, RelativisticGANLoss, VanillaGANLoss
from sr_gan.metrics import psnr, ssim
from sr_gan.ops import imresize
from tests.helpers import CONF_DIR, LoggedRows, file_size_limit

SCALE = 2
LR_SIZE = 12  # HR 24 px: still 14 px after the metrics' border crop, above SSIM's 11 px window


# ---------------------------------------------------------------------------- the players
def tiny_generator(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 3 * SCALE**2, 3, padding=1), nn.PixelShuffle(SCALE))


def tiny_discriminator(seed: int = 1) -> nn.Module:
    """Raw logits (B, 1); no BatchNorm, so train/eval mode cannot change its outputs."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(8, 1, 3, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


class GradientLoss(nn.Module):
    """Stand-in for the perceptual term: L1 between horizontal image gradients (not the pixel L1).
    Like the VGG loss it treats HR as a constant, so SR and HR swapped would give G no gradient."""

    def forward(self, sr: Tensor, hr: Tensor) -> Tensor:
        return (sr.diff(dim=-1) - hr.detach().diff(dim=-1)).abs().mean()


# ---------------------------------------------------------------------------- hand-written losses
# (l_d_real, l_d_fake, l_g) of each adversarial loss on raw logits r = C(x_r), f = C(x_f).
def _vanilla(r: Tensor, f: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # SRGAN Eq. 2, 6 (non-saturating)
    return F.softplus(-r).mean(), F.softplus(f).mean(), F.softplus(-f).mean()


def _ragan(r: Tensor, f: Tensor) -> tuple[Tensor, Tensor, Tensor]:  # ESRGAN Eq. 1-2, halved as in its code
    r_g = r.detach()  # the G term never trains D
    l_g = 0.5 * (F.softplus(r_g - f.mean()).mean() + F.softplus(-(f - r_g.mean())).mean())
    return 0.5 * F.softplus(-(r - f.mean())).mean(), 0.5 * F.softplus(f - r.mean()).mean(), l_g


def _lsgan(r: Tensor, f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return 0.5 * ((r - 1) ** 2).mean(), 0.5 * (f**2).mean(), 0.5 * ((f - 1) ** 2).mean()


def _hinge(r: Tensor, f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return (1 - r).clamp(min=0).mean(), (1 + f).clamp(min=0).mean(), -f.mean()


ADVERSARIAL = {
    "vanilla": (VanillaGANLoss, _vanilla),
    "ragan": (RelativisticGANLoss, _ragan),
    "lsgan": (LSGANLoss, _lsgan),
    "hinge": (HingeGANLoss, _hinge),
}


# ---------------------------------------------------------------------------- optimizers that record
class RecordingSGD(torch.optim.SGD):
    """Plain SGD (``p <- p - lr * grad``) that keeps a copy of the gradients of every step."""

    def __init__(self, params, lr: float) -> None:  # noqa: ANN001
        super().__init__(params, lr=lr)
        self.steps: list[list[Tensor]] = []

    def step(self, closure=None):  # noqa: ANN001, ANN201
        loss = None
        if closure is not None:  # first, as torch's optimizers do: Lightning's hooks (clipping) run in it
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"]]
        self.steps.append([torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params])
        super().step()
        return loss


class Recorder:
    """An optimizer factory (what the module's ``optimizer_g`` / ``optimizer_d`` take) that keeps its optimizer."""

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.optimizer: RecordingSGD | None = None

    def __call__(self, params) -> RecordingSGD:  # noqa: ANN001
        self.optimizer = RecordingSGD(params, lr=self.lr)
        return self.optimizer


# ---------------------------------------------------------------------------- data and running
def fixed_batch(size: int = 4, seed: int = 2) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    hr = torch.rand(size, 3, LR_SIZE * SCALE, LR_SIZE * SCALE, generator=g)
    return {"lr": F.avg_pool2d(hr, SCALE), "hr": hr}  # (B, 3, h, w), (B, 3, H, W)


def as_items(batch: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """A batch as a list of samples, for a DataLoader to collate back."""
    return [{k: v[i] for k, v in batch.items()} for i in range(len(batch["hr"]))]


def make_module(**overrides) -> tuple[SRGANModule, Recorder, Recorder]:  # noqa: ANN003
    """A GAN module on the tiny players with recording SGD; ``overrides`` replace constructor args."""
    opt_g, opt_d = Recorder(lr=1e-2), Recorder(lr=1e-2)
    kwargs = dict(
        generator=tiny_generator(),
        discriminator=tiny_discriminator(),
        pixel_loss=nn.L1Loss(),
        pixel_weight=0.3,
        perceptual_loss=GradientLoss(),
        perceptual_weight=0.05,
        adversarial_loss=RelativisticGANLoss(),
        adversarial_weight=2.0,
        optimizer_g=opt_g,
        optimizer_d=opt_d,
        scale=SCALE,
        num_samples=0,
    )
    return SRGANModule(**{**kwargs, **overrides}), opt_g, opt_d


def make_trainer(root: Path, **overrides) -> L.Trainer:  # noqa: ANN003
    options = dict(
        accelerator="cpu", max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, default_root_dir=root, log_every_n_steps=1,
    )  # fmt: skip
    return L.Trainer(**{**options, **overrides})


def fit(
    module: SRGANModule,
    batch: dict[str, Tensor],
    root: Path,
    *,
    batches: int = 1,
    callbacks: list | None = None,
    **trainer_options,  # noqa: ANN003
) -> L.Trainer:
    """Train ``module`` on ``batches`` repetitions of ``batch``; returns the trainer."""
    items = as_items(batch)
    return fit_items(module, items * batches, root, batch_size=len(items), callbacks=callbacks, **trainer_options)


def fit_items(
    module: SRGANModule,
    items: list[dict[str, Tensor]],
    root: Path,
    *,
    batch_size: int,
    callbacks: list | None = None,
    **trainer_options,  # noqa: ANN003
) -> L.Trainer:
    """Train ``module`` on `items` in loader batches of `batch_size`; returns the trainer."""
    limit = len(items) // batch_size
    trainer = make_trainer(root, limit_train_batches=limit, callbacks=callbacks, **trainer_options)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(eval mode|does not have many workers).*")
        trainer.fit(module, train_dataloaders=DataLoader(items, batch_size=batch_size))
    return trainer


def snapshot(module: nn.Module) -> nn.Module:
    return copy.deepcopy(module)


class PlayersAtBatchStart(L.Callback):
    """Copies of G and D as each training batch starts."""

    def __init__(self) -> None:
        self.players: list[tuple[nn.Module, nn.Module]] = []

    def on_train_batch_start(self, trainer: L.Trainer, module: SRGANModule, *args) -> None:  # noqa: ANN002
        self.players.append((snapshot(module.generator), snapshot(module.discriminator)))


def flat(tensors: list[Tensor]) -> Tensor:
    return torch.cat([t.flatten() for t in tensors])


def params(module: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def generator_objective(
    g: nn.Module, d: nn.Module, batch: dict[str, Tensor], hand: Callable, weights: dict[str, float]
) -> dict[str, Tensor]:
    """The weighted G terms, recomputed from copies of the players: w * (unweighted loss)."""
    sr = g(batch["lr"])
    fake, real = d(sr), d(batch["hr"]).detach()
    return {
        "pix": weights["pix"] * (sr - batch["hr"]).abs().mean(),
        "percep": weights["percep"] * GradientLoss()(sr, batch["hr"]),
        "gan": weights["gan"] * hand(real, fake)[2],
    }


def discriminator_objective(d: nn.Module, hr: Tensor, fake: Tensor, hand: Callable) -> Tensor:
    l_real, l_fake, _ = hand(d(hr), d(fake))
    return l_real + l_fake


WEIGHTS = {"pix": 0.3, "percep": 0.05, "gan": 2.0}  # distinct, so a swap of any two shows
# float32: atol covers gradients that are 0 in exact arithmetic (RaGAN's L_D ignores D's last bias)
GRAD_TOL = {"rtol": 1e-4, "atol": 1e-6}


# ---------------------------------------------------------------------------- gradients G and D get
def test_an_adversarial_loss_that_is_no_adversarial_loss_is_refused_when_built() -> None:
    """A GAN loss of the user's own written as a plain module (`forward(real, fake)`) failed at the first
    GAN step, the run started, with an AttributeError traceback (no `needs_real_logits_for_generator`)."""
    message = r"^loss\.adversarial: BCEWithLogitsLoss is no sr_gan\.losses\.AdversarialLoss: subclass it"
    with pytest.raises(UserError, match=message):
        make_module(adversarial_loss=nn.BCEWithLogitsLoss())


def test_a_gan_loss_without_discriminator_names_every_discriminator_option() -> None:
    """The fix of ``loss=ragan discriminator=none`` lists the options conf/discriminator/ holds."""
    options = sorted(p.stem for p in (CONF_DIR / "discriminator").glob("*.yaml") if p.stem != "none")
    with pytest.raises(UserError, match="needs a discriminator") as info:
        make_module(discriminator=None)
    assert f"discriminator={'|'.join(options)} " in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"pixel_loss": None, "perceptual_loss": None, "adversarial_loss": None, "discriminator": None},
            r"^the loss has no term: pick one, e\.g\. loss=l1, loss=vgg54, loss=srgan or loss=ragan$",
        ),
        ({"adversarial_loss": None}, r"^a discriminator is configured but the loss has no adversarial term: set"),
        ({"optimizer_d": None}, r"^a discriminator needs an optimizer: set optim\.discriminator$"),
        ({"ema_decay": 1.0}, r"^model\.ema_decay=1\.0 must be in \(0, 1\), or null to switch EMA off$"),
        ({"accumulate_batches": 0}, r"^optim\.accumulate_batches=0 must be >= 1$"),
    ],
    ids=["no term", "D without GAN term", "D without optimizer", "ema 1", "accumulate 0"],
)
def test_a_module_that_cannot_train_is_refused_when_built(overrides: dict, message: str) -> None:
    """What the config schema refuses on the command line, the module refuses from Python too."""
    with pytest.raises(UserError, match=message):
        make_module(**overrides)


def test_calling_the_module_upscales_with_the_generator_it_validates() -> None:
    """`module(lr)`: the EMA generator when the run keeps one (what validation and export use), else G."""
    lr = fixed_batch()["lr"]
    plain, _, _ = make_module()
    with_ema, _, _ = make_module(ema_decay=0.9)
    with torch.no_grad():
        for parameter in with_ema.generator_ema.parameters():
            parameter.add_(0.5)
        assert torch.equal(plain(lr), plain.generator(lr))
        assert torch.equal(with_ema(lr), with_ema.generator_ema(lr))
        assert not torch.equal(with_ema(lr), with_ema.generator(lr))


def test_a_generator_of_another_scale_is_one_line_naming_the_shapes(tmp_path: Path) -> None:
    """A generator of the user's own built for x1 while the data is x2: the losses' broadcasting failed
    deep in the G step with a RuntimeError traceback; nothing is stepped."""
    module, opt_g, opt_d = make_module(generator=nn.Conv2d(3, 3, 3, padding=1))
    with pytest.raises(UserError) as info:
        fit(module, fixed_batch(), tmp_path)
    lr_shape = tuple(fixed_batch()["lr"].shape)
    assert str(info.value) == (
        f"model.generator (Conv2d) maps the {lr_shape} LR batch to {lr_shape}, not to the HR batch's "
        f"{tuple(fixed_batch()['hr'].shape)} (data.scale={SCALE}): give it scale: ${{data.scale}} in its config, "
        "and an RGB output"
    )
    assert not opt_g.optimizer.steps and not opt_d.optimizer.steps


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_gradient_reaches_g_with_its_weight(name: str, tmp_path: Path) -> None:
    """GAN term only: G's gradient is exactly grad(w_adv * L_adv); a detached SR would give zero."""
    loss_cls, hand = ADVERSARIAL[name]
    module, opt_g, _ = make_module(
        pixel_loss=None, perceptual_loss=None, adversarial_loss=loss_cls(), adversarial_weight=0.7
    )
    g0, d0 = snapshot(module.generator), snapshot(module.discriminator)
    batch = fixed_batch()
    fit(module, batch, tmp_path)

    fake, real = d0(g0(batch["lr"])), d0(batch["hr"]).detach()
    expected = torch.autograd.grad(0.7 * hand(real, fake)[2], list(g0.parameters()))
    assert flat(list(expected)).abs().max() > 1e-4  # the check below is not 0 == 0
    (got,) = opt_g.optimizer.steps
    for g_got, g_want in zip(got, expected, strict=True):
        torch.testing.assert_close(g_got, g_want, **GRAD_TOL)


def test_gs_ragan_term_reads_d_on_the_unsharpened_hr(tmp_path: Path) -> None:
    """With a sharpened target (Real-ESRGAN), the real images of G's RaGAN term are ``hr_real``, as in
    D's step, not the target ``hr``."""
    module, opt_g, _ = make_module(pixel_loss=None, perceptual_loss=None, adversarial_weight=0.7)
    g0, d0 = snapshot(module.generator), snapshot(module.discriminator)
    batch = fixed_batch() | {"hr_real": fixed_batch(seed=9)["hr"]}
    fit(module, batch, tmp_path)
    fake, real = d0(g0(batch["lr"])), d0(batch["hr_real"]).detach()
    expected = torch.autograd.grad(0.7 * _ragan(real, fake)[2], list(g0.parameters()))
    for g_got, g_want in zip(opt_g.optimizer.steps[0], expected, strict=True):
        torch.testing.assert_close(g_got, g_want, **GRAD_TOL)


@pytest.mark.parametrize("name", ["vanilla", "ragan"])
def test_d_gradient_is_unweighted_l_d_on_the_detached_fake(name: str, tmp_path: Path) -> None:
    """D steps with grad(l_d_real + l_d_fake) on G(LR) from before G's step; w_adv (2.0) does not scale it."""
    loss_cls, hand = ADVERSARIAL[name]
    module, _, opt_d = make_module(adversarial_loss=loss_cls())
    g0, d0 = snapshot(module.generator), snapshot(module.discriminator)
    batch = fixed_batch()
    fit(module, batch, tmp_path)
    with torch.no_grad():
        fake = g0(batch["lr"])
    expected = torch.autograd.grad(discriminator_objective(d0, batch["hr"], fake, hand), list(d0.parameters()))
    assert flat(list(expected)).abs().max() > 1e-4
    for g_got, g_want in zip(opt_d.optimizer.steps[0], expected, strict=True):
        torch.testing.assert_close(g_got, g_want, **GRAD_TOL)


# ---------------------------------------------------------------------------- logged terms
def test_logged_terms_are_weight_times_independent_loss(tmp_path: Path) -> None:
    module, _, _ = make_module()
    g0, d0 = snapshot(module.generator), snapshot(module.discriminator)
    batch = fixed_batch()
    logged = fit(module, batch, tmp_path).callback_metrics
    with torch.no_grad():
        terms = generator_objective(g0, d0, batch, _ragan, WEIGHTS)
        sr = g0(batch["lr"])
        real, fake = d0(batch["hr"]), d0(sr)
        l_d_real, l_d_fake, _ = _ragan(real, fake)
    for key, value in terms.items():
        torch.testing.assert_close(logged[f"train/l_g_{key}"], value, rtol=1e-5, atol=0)
    torch.testing.assert_close(logged["train/l_d_real"], l_d_real, rtol=1e-5, atol=0)
    torch.testing.assert_close(logged["train/l_d_fake"], l_d_fake, rtol=1e-5, atol=0)
    torch.testing.assert_close(logged["train/d_real"], real.mean(), rtol=1e-5, atol=0)
    torch.testing.assert_close(logged["train/d_fake"], fake.mean(), rtol=1e-5, atol=0)


def test_logged_learning_rates_are_each_players(tmp_path: Path) -> None:
    """``train/lr_g`` is G's rate and ``train/lr_d`` D's (different here, so a swap shows)."""
    module, _, _ = make_module(optimizer_d=Recorder(lr=3e-3))
    logged = fit(module, fixed_batch(), tmp_path).callback_metrics
    assert (float(logged["train/lr_g"]), float(logged["train/lr_d"])) == pytest.approx((1e-2, 3e-3))


def test_losses_reach_the_logger_on_its_interval_with_that_batchs_values(tmp_path: Path) -> None:
    """``log_every_n_steps=2``, a budget of 5 batches: the loss terms are written at the logging
    steps 1 and 3 and at the budget's last batch 4 (Lightning writes there too: it wrote batch 3's
    values again), each with its own batch's value (G's pixel term recomputed from G as that batch
    started), not left out nor one batch late."""
    module, _, _ = make_module()
    start, rows = PlayersAtBatchStart(), LoggedRows()
    batches = [fixed_batch(seed=s) for s in (2, 3, 4, 5, 6)]
    items = [item for batch in batches for item in as_items(batch)] * 2  # more than the budget
    callbacks = [BatchBudget(5), start]
    fit_items(module, items, tmp_path, batch_size=4, callbacks=callbacks, logger=rows, log_every_n_steps=2)
    written = {step: m["train/l_g_pix"] for step, m in rows.rows if "train/l_g_pix" in m}
    assert sorted(written) == [1, 3, 4]
    for step, value in written.items():
        with torch.no_grad():
            g = start.players[step][0]
            want = WEIGHTS["pix"] * (g(batches[step]["lr"]) - batches[step]["hr"]).abs().mean()
        assert value == pytest.approx(want.item(), rel=1e-5)


def test_config_wires_each_weight_to_its_term(make_cfg, tmp_path: Path) -> None:
    """Through Hydra (loss=ragan without the VGG): the recipe's eta and lambda reach the right terms."""
    from sr_gan.train import build_module

    cfg = make_cfg("loss=ragan", "loss.perceptual=null")
    module = build_module(cfg)
    weights = {"pix": cfg.loss.pixel_weight, "gan": cfg.loss.adversarial_weight}
    assert weights == {"pix": 1e-2, "gan": 5e-3}  # ESRGAN eta, lambda (they differ: a swap shows)
    g0, d0 = snapshot(module.generator), snapshot(module.discriminator)
    hr = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    batch = {"lr": F.avg_pool2d(hr, 4), "hr": hr}
    logged = fit(module, batch, tmp_path).callback_metrics
    assert "train/l_g_percep" not in logged
    with torch.no_grad():
        sr = g0(batch["lr"])
        torch.testing.assert_close(logged["train/l_g_pix"], weights["pix"] * (sr - hr).abs().mean(), rtol=1e-5, atol=0)
        want_gan = weights["gan"] * _ragan(d0(hr), d0(sr))[2]  # D in train mode, as in the step
        torch.testing.assert_close(logged["train/l_g_gan"], want_gan, rtol=1e-5, atol=0)


# ---------------------------------------------------------------------------- sign and size of the updates
def test_each_batch_steps_g_then_d_by_sgd_on_its_own_loss(tmp_path: Path) -> None:
    """Two batches. In each, G steps with grad(sum_i w_i L_i) against D as the batch started, then D
    with grad(L_D) on that batch's G(LR) from before G's step; the step is exactly -lr * gradient.

    So the weights carry their terms, the G step does not move D nor the D step G, G goes first
    (as in the reference code), and no gradient is left over from the previous batch.
    """
    module, opt_g, opt_d = make_module()
    start = PlayersAtBatchStart()
    batch = fixed_batch()
    fit(module, batch, tmp_path, batches=2, callbacks=[start])
    assert len(opt_g.optimizer.steps) == len(opt_d.optimizer.steps) == len(start.players) == 2
    ends = [*start.players[1:], (module.generator, module.discriminator)]
    for k, ((g_k, d_k), (g_end, d_end)) in enumerate(zip(start.players, ends, strict=True)):
        objective = sum(generator_objective(g_k, d_k, batch, _ragan, WEIGHTS).values())
        grad_g = torch.autograd.grad(objective, list(g_k.parameters()))
        fake = g_k(batch["lr"]).detach()
        grad_d = torch.autograd.grad(discriminator_objective(d_k, batch["hr"], fake, _ragan), list(d_k.parameters()))
        for recorded, grads in ((opt_g.optimizer.steps[k], grad_g), (opt_d.optimizer.steps[k], grad_d)):
            for got, want in zip(recorded, grads, strict=True):
                torch.testing.assert_close(got, want, **GRAD_TOL)
        for end, begin, grads in ((g_end, g_k, grad_g), (d_end, d_k, grad_d)):
            for p, p0, g in zip(end.parameters(), begin.parameters(), grads, strict=True):
                torch.testing.assert_close(p.detach(), p0.detach() - 1e-2 * g, rtol=0, atol=1e-7)


def test_each_player_gets_gradients_once_per_batch(tmp_path: Path) -> None:
    """Hooks count every gradient computed for a parameter: G's only in the G step, D's only in the
    D step (a G step whose backward reached D, or a D step reaching G, would count twice)."""
    module, _, _ = make_module()
    counts = {"g": 0, "d": 0}

    def count(name: str) -> Callable[[Tensor], None]:
        return lambda grad: counts.__setitem__(name, counts[name] + 1)

    for name, player in (("g", module.generator), ("d", module.discriminator)):
        for p in player.parameters():
            p.register_hook(count(name))
    fit(module, fixed_batch(), tmp_path, batches=2)
    assert counts == {
        "g": 2 * len(list(module.generator.parameters())),
        "d": 2 * len(list(module.discriminator.parameters())),
    }


def test_two_micro_batches_step_g_and_d_as_their_joint_batch(tmp_path: Path) -> None:
    """Accumulating 2 loader batches of 2 steps G and D once each, with the gradients of one batch of 4
    (vanilla GAN: per-sample means; D's fakes come from G as the iteration started in both runs)."""
    a, b = fixed_batch(2, seed=2), fixed_batch(2, seed=3)
    joint, g_joint, d_joint = make_module(adversarial_loss=VanillaGANLoss())
    fit(joint, {k: torch.cat([a[k], b[k]]) for k in a}, tmp_path)
    accumulated, g_acc, d_acc = make_module(adversarial_loss=VanillaGANLoss(), accumulate_batches=2)
    fit_items(accumulated, as_items(a) + as_items(b), tmp_path, batch_size=2)
    for whole, micro in ((g_joint, g_acc), (d_joint, d_acc)):
        assert len(micro.optimizer.steps) == len(whole.optimizer.steps) == 1
        for got, want in zip(micro.optimizer.steps[0], whole.optimizer.steps[0], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)  # D's last bias: ~1e-6, float noise


def test_parameters_frozen_before_stay_frozen(tmp_path: Path) -> None:
    """Freezing D for G's step restores only what it froze: a D layer the user froze stays frozen,
    every other D parameter trains again."""
    module, _, _ = make_module()
    first, *rest = module.discriminator.parameters()
    first.requires_grad_(False)
    before = first.detach().clone()
    fit(module, fixed_batch(), tmp_path, batches=2)
    assert not first.requires_grad and torch.equal(first, before)
    assert all(p.requires_grad for p in rest) and all(p.requires_grad for p in module.generator.parameters())


def test_one_step_lowers_each_players_loss_by_lr_times_grad_squared(tmp_path: Path) -> None:
    """Sign and size: D's loss on its batch falls and D(real) - D(fake) grows; G's loss (against D0) falls.

    To first order a step of lr lowers a loss by lr * |grad|^2: a step up the gradient, a scaled
    gradient or a step on another loss would miss that.
    """
    module, _, _ = make_module()
    g0, d0 = snapshot(module.generator), snapshot(module.discriminator)
    batch = fixed_batch()
    fit(module, batch, tmp_path)
    lr = 1e-2

    def l_g(g: nn.Module) -> Tensor:
        return sum(generator_objective(g, d0, batch, _ragan, WEIGHTS).values())

    fake = g0(batch["lr"]).detach()

    def l_d(d: nn.Module) -> Tensor:
        return discriminator_objective(d, batch["hr"], fake, _ragan)

    def margin(d: nn.Module) -> Tensor:
        return d(batch["hr"]).mean() - d(fake).mean()

    for loss, before, after in ((l_g, g0, module.generator), (l_d, d0, module.discriminator)):
        value = loss(before)
        grad_sq = flat(list(torch.autograd.grad(value, list(before.parameters())))).square().sum()
        with torch.no_grad():
            drop = value - loss(after)
        assert drop > 0
        assert drop.item() == pytest.approx(lr * grad_sq.item(), rel=0.1)
    with torch.no_grad():
        assert margin(module.discriminator) > margin(d0)


def test_discriminator_warm_up_leaves_g_and_its_ema_untouched(tmp_path: Path) -> None:
    module, opt_g, opt_d = make_module(d_init_steps=2, ema_decay=0.5)
    g0, ema0, d0 = params(module.generator), params(module.generator_ema), params(module.discriminator)
    fit(module, fixed_batch(), tmp_path, batches=2)
    assert opt_g.optimizer.steps == [] and len(opt_d.optimizer.steps) == 2
    assert all(torch.equal(a, b) for a, b in zip(g0, module.generator.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(ema0, module.generator_ema.parameters(), strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(d0, module.discriminator.parameters(), strict=True))


def test_schedules_count_the_batches_that_skip_g(tmp_path: Path) -> None:
    """The learning-rate schedules of both players count every iteration, D's warm-up included: with a
    milestone at 2, both rates are halved after 3 batches of which G stepped in one."""

    def halve_at_2(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2], gamma=0.5)

    module, opt_g, opt_d = make_module(d_init_steps=2, scheduler_g=halve_at_2, scheduler_d=halve_at_2)
    fit(module, fixed_batch(2), tmp_path, batches=3)
    assert (len(opt_g.optimizer.steps), len(opt_d.optimizer.steps)) == (1, 3)
    assert [o.optimizer.param_groups[0]["lr"] for o in (opt_g, opt_d)] == [5e-3, 5e-3]


def test_schedules_count_iterations_not_micro_batches(tmp_path: Path) -> None:
    """Accumulating 2 batches an iteration, a milestone at 2: both rates are halved once 2 iterations
    (4 batches) are done, not after 2 micro-batches; every step of an iteration uses the same rate."""

    def halve_at_2(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2], gamma=0.5)

    rates = []

    class Rates(L.Callback):
        def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:  # noqa: ANN002
            rates.append([o.param_groups[0]["lr"] for o in trainer.optimizers])

    module, opt_g, opt_d = make_module(accumulate_batches=2, scheduler_g=halve_at_2, scheduler_d=halve_at_2)
    fit(module, fixed_batch(2), tmp_path, batches=6, callbacks=[Rates()])
    assert (len(opt_g.optimizer.steps), len(opt_d.optimizer.steps)) == (3, 3)
    assert rates == [[1e-2, 1e-2]] * 4 + [[5e-3, 5e-3]] * 2


# ---------------------------------------------------------------------------- EMA and validation
@pytest.mark.parametrize(
    ("from_weights", "decay", "channels_last"),
    # random start: the decay ramps up as (1 + t) / (10 + t), t = 0 here; channels_last moves the
    # weights to new memory when the fit starts: the EMA must follow G's tensors as they are then
    [(True, 0.75, False), (False, 0.1, False), (True, 0.75, True)],
    ids=["init_from", "random-init", "channels-last"],
)
def test_ema_follows_a_g_step_with_its_decay(
    from_weights: bool, decay: float, channels_last: bool, tmp_path: Path
) -> None:
    module, _, _ = make_module(ema_decay=0.75, channels_last=channels_last)
    if from_weights:  # a PSNR-stage G: the EMA starts from trained weights and keeps the constant decay
        module.init_generator_from(tiny_generator(seed=7).state_dict())
    start = params(module.generator)
    assert all(torch.equal(a, b) for a, b in zip(start, module.generator_ema.parameters(), strict=True))
    fit(module, fixed_batch(), tmp_path)
    for e, s, p in zip(module.generator_ema.parameters(), start, module.generator.parameters(), strict=True):
        assert not torch.equal(s, p)
        torch.testing.assert_close(e, decay * s + (1 - decay) * p.detach())


def test_ema_updates_once_an_iteration_with_the_iterations_decay(tmp_path: Path) -> None:
    """Accumulating 2 batches an iteration, 4 batches, EMA from random weights: one update per iteration,
    with the warm-up decays of iterations 0 and 1 (1/10, 2/11), not one per batch nor batch-counted."""
    module, _, _ = make_module(ema_decay=0.999, accumulate_batches=2)
    start, at = params(module.generator), PlayersAtBatchStart()
    fit(module, fixed_batch(2), tmp_path, batches=4, callbacks=[at])
    after_first = at.players[2][0].parameters()  # G as the second iteration starts
    for s, g1, g2, e in zip(start, after_first, module.generator.parameters(), module.generator_ema.parameters()):
        torch.testing.assert_close(e, 2 / 11 * (0.1 * s + 0.9 * g1.detach()) + 9 / 11 * g2.detach())


def _mean_metric(metric: Callable, upscale: Callable[[Tensor], Tensor], images: dict[str, Tensor]) -> float:
    """Mean over images of the per-image metric (border ``SCALE`` cropped), one image per batch as in validation."""
    with torch.no_grad():
        values = [metric(upscale(lr[None]), hr[None], crop_border=SCALE) for lr, hr in zip(images["lr"], images["hr"])]
    return torch.cat(values).mean().item()


def nearest_generator() -> nn.Module:
    """The tiny generator set to nearest-neighbour upscaling: a good SR of smooth images."""
    g = tiny_generator()
    with torch.no_grad():
        g[0].weight.zero_()
        g[0].bias.zero_()
        for c in range(3):  # PixelShuffle reads channel c * s^2 + k as sub-pixel k of colour c
            g[0].weight[c * SCALE**2 : (c + 1) * SCALE**2, c, 1, 1] = 1.0
    return g


def smooth_images(count: int, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 4, 4, generator=g)
    hr = F.interpolate(coarse, size=(LR_SIZE * SCALE,) * 2, mode="bilinear", align_corners=False)
    return {"lr": F.avg_pool2d(hr, SCALE), "hr": hr}


@pytest.mark.parametrize("ema", [True, False], ids=["ema", "no-ema"])
def test_validation_and_test_score_the_inference_generator(ema: bool, tmp_path: Path) -> None:
    """Live G and EMA made to differ: val/* and test/* are the EMA's scores (the live G's without EMA)."""
    module, _, _ = make_module(generator=nearest_generator(), ema_decay=0.5 if ema else None)
    with torch.no_grad():  # the live generator moves away from its EMA copy
        noise = torch.Generator().manual_seed(4)
        for p in module.generator.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=noise))
    images = smooth_images(3, seed=5)
    scored = module.generator_ema if ema else module.generator
    if ema:  # the two generators score far apart, so the checks below tell them apart
        assert _mean_metric(psnr, scored, images) - _mean_metric(psnr, module.generator, images) > 3

    trainer = make_trainer(tmp_path, limit_val_batches=1.0)
    items = as_items(images)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        (val,) = trainer.validate(module, dataloaders=DataLoader(items, batch_size=1), verbose=False)
        (test,) = trainer.test(module, dataloaders=DataLoader(items, batch_size=1), verbose=False)
    bicubic = _mean_metric(psnr, lambda lr: imresize(lr, SCALE), images)
    bicubic_ssim = _mean_metric(ssim, lambda lr: imresize(lr, SCALE), images)
    for stage, logged in (("val", val), ("test", test)):
        assert logged[f"{stage}/psnr"] == pytest.approx(_mean_metric(psnr, scored, images), rel=1e-5)
        assert logged[f"{stage}/ssim"] == pytest.approx(_mean_metric(ssim, scored, images), rel=1e-5)
        assert logged[f"{stage}/psnr_bicubic"] == pytest.approx(bicubic, rel=1e-5)
        assert logged[f"{stage}/ssim_bicubic"] == pytest.approx(bicubic_ssim, rel=1e-5)


def test_a_stand_in_image_weighted_zero_counts_in_no_metric(tmp_path: Path) -> None:
    """A rank without a validation image of its own validates a stand-in with ``weight`` 0
    (`sr_gan.data.datamodule.StandIn`): the means are those of the other images. The stand-in here is
    scored exactly (SR = HR: an infinite PSNR, which times 0 would be NaN)."""
    module, _, _ = make_module(generator=nearest_generator())
    images = smooth_images(2, seed=5)
    lr = smooth_images(1, seed=6)["lr"]
    with torch.no_grad():
        exact = {"lr": lr[0], "hr": module.generator(lr)[0], "weight": torch.tensor(0.0)}
    trainer = make_trainer(tmp_path, limit_val_batches=1.0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        (val,) = trainer.validate(
            module, dataloaders=DataLoader([*as_items(images), exact], batch_size=1), verbose=False
        )
    assert val["val/psnr"] == pytest.approx(_mean_metric(psnr, module.generator, images), rel=1e-5)
    assert val["val/ssim"] == pytest.approx(_mean_metric(ssim, module.generator, images), rel=1e-5)
    assert val["val/psnr_bicubic"] == pytest.approx(_mean_metric(psnr, lambda x: imresize(x, SCALE), images), rel=1e-5)


def test_sample_strips_are_of_the_sets_first_images_in_its_order() -> None:
    """The strips kept are those of the images whose index in the set is below the count, in the
    set's order whatever order a rank met them in, and not a rank's stand-in (another rank's image);
    images without an index count by their position in the epoch. Under DDP rank 0 gathers them."""
    strips = SampleStrips(2)
    dark, grey, light = (torch.full((1, 3, 4, 4), v) for v in (0.0, 0.5, 1.0))  # bicubic, SR, HR
    for index, name in [(3, "d"), (1, "b"), (0, "a")]:
        strips.keep({"hr": light, "index": torch.tensor([index]), "name": [name]}, dark, grey)
    stand_in = {"hr": light, "index": torch.tensor([0]), "name": ["a"], "weight": torch.tensor([0.0])}
    strips.keep(stand_in, dark, grey)
    taken = strips.take(world_size=1)
    assert [name for name, _ in taken] == ["a", "b"]
    assert taken[0][1].dtype == torch.uint8 and taken[0][1][0, 0].tolist() == [0] * 4 + [128] * 4 + [255] * 4
    for _ in range(3):  # the next epoch
        strips.keep({"hr": light}, dark, grey)
    assert [name for name, _ in strips.take(world_size=1)] == ["0", "1"]


def test_a_sample_strip_is_whole_or_a_one_line_error(tmp_path: Path) -> None:
    """A strip is written whole (it reads back bit for bit); a write that fails (a full disk in a long
    run) stops the run in one line naming the file and leaves no file (torchvision's writer ignored
    the failure: a truncated PNG)."""
    strip = torch.randint(0, 256, (3, 64, 192), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(read_image(save_strip(tmp_path / "whole.png", strip)), strip)
    path = tmp_path / "val_0000050" / "photo.png"
    with (
        file_size_limit(4096),
        pytest.raises(UserError, match=rf"cannot write validation sample {path}: .*ckpt_path=last"),
    ):
        save_strip(path, strip)
    assert list(path.parent.iterdir()) == []


def test_a_gan_module_built_in_python_resumes_its_own_checkpoint(tmp_path: Path) -> None:
    """The stage check on resume reads the checkpoint's weights, not the config sr_gan.train records
    (a module built in Python has none): a GAN checkpoint resumes as a GAN, not as a PSNR stage."""
    module, _, _ = make_module()
    trainer = fit(module, fixed_batch(), tmp_path)
    trainer.save_checkpoint(tmp_path / "gan.ckpt")
    resumed, _, _ = make_module()
    with torch.no_grad():
        for parameter in resumed.discriminator.parameters():
            parameter.add_(1.0)  # what the checkpoint must overwrite
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(eval mode|does not have many workers).*")
        make_trainer(tmp_path, limit_train_batches=2).fit(
            resumed,
            train_dataloaders=DataLoader(as_items(fixed_batch()) * 2, batch_size=SCALE),
            ckpt_path=tmp_path / "gan.ckpt",
        )
    for own, saved in zip(resumed.discriminator.parameters(), module.discriminator.parameters(), strict=True):
        assert torch.equal(own, saved)  # restored (the saved fit was complete: nothing more to train)


def _fit_one_rank(module: SRGANModule, root: Path, strategy: DDPStrategy | None) -> AllReduceCounter:
    """Four batches (two distinct, twice) on one CPU rank in process under `strategy` (``None``: no DDP)."""
    count, options = AllReduceCounter(), {}
    if strategy is not None:  # the same batches in the same order as without DDP
        options = {"strategy": strategy, "devices": 1, "callbacks": [count], "use_distributed_sampler": False}
    trainer = make_trainer(root, limit_train_batches=4, **options)
    items = as_items(fixed_batch(size=2)) + as_items(fixed_batch(size=2, seed=3))
    try:  # Lightning's DDP set-up exports MASTER_PORT, LOCAL_RANK, ...: later DDP runs would inherit them
        with warnings.catch_warnings(), patch.dict(os.environ):
            warnings.filterwarnings("ignore", message=r".*(eval mode|does not have many workers).*")
            trainer.fit(module, train_dataloaders=DataLoader(items * 2, batch_size=2))
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return count


def test_ddp_reduces_each_players_gradients_once_a_batch(tmp_path: Path, make_cfg) -> None:  # noqa: ANN001
    """trainer=ddp's strategy, built from conf/trainer/ddp.yaml (a DDP wrapper per player): G's
    gradients are all-reduced in G's backward and D's in D's, once a batch, and G and D step with the
    gradients they have without DDP. One wrapper around the whole module (Lightning's DDPStrategy)
    needs find_unused_parameters and then all-reduces both players' gradients in both backward
    passes: twice the traffic."""
    sizes = {"g": sum(p.numel() for p in tiny_generator().parameters())}
    sizes["d"] = sum(p.numel() for p in tiny_discriminator().parameters())
    module, opt_g, opt_d = make_module()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        per_player = _fit_one_rank(module, tmp_path, instantiate(make_cfg("trainer=ddp").trainer.strategy))
    assert not [w for w in caught if "broadcast_buffers" in str(w.message)]  # no deprecated DDP option
    assert module.replicas == {}  # dropped at the end of the fit
    for reduced in per_player.batches:
        assert sorted(reduced) == [("d", sizes["d"]), ("g", sizes["g"])]
    psnr = make_module(discriminator=None, adversarial_loss=None, optimizer_d=None)[0]  # G alone: one wrapper
    g_only = _fit_one_rank(psnr, tmp_path, PlayerDDPStrategy(find_unused_parameters=False)).batches
    assert g_only == [[("g", sizes["g"])]] * 4
    one = _fit_one_rank(make_module()[0], tmp_path, DDPStrategy(find_unused_parameters=True)).batches
    assert [sum(n for _, n in reduced) for reduced in one] == [2 * (sizes["g"] + sizes["d"])] * 4
    plain, plain_g, plain_d = make_module()
    _fit_one_rank(plain, tmp_path, None)
    for ours, theirs in ((opt_g, plain_g), (opt_d, plain_d)):
        for got, want in zip(ours.optimizer.steps, theirs.optimizer.steps, strict=True):
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, rtol=0, atol=0)


class _Plain(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 2)


def test_the_per_player_strategy_refuses_what_it_cannot_wrap_in_one_line() -> None:
    """PlayerDDPStrategy wraps an SRGANModule's players: another module, or a communication hook
    (one DDP per player would need one per wrapper), is a one-line UserError before any collective."""
    strategy = PlayerDDPStrategy(find_unused_parameters=False)
    strategy.connect(_Plain())
    with pytest.raises(UserError, match="_Plain is not one: use lightning's DDPStrategy"):
        strategy.configure_ddp()
    strategy = PlayerDDPStrategy(find_unused_parameters=False, ddp_comm_hook=lambda state, bucket: bucket)
    strategy.connect(make_module()[0])
    with pytest.raises(UserError, match="ddp_comm_hook is not supported by PlayerDDPStrategy"):
        strategy.configure_ddp()


def test_ddp_batches_that_skip_g_reduce_d_alone(tmp_path: Path) -> None:
    """Under the per-player strategy a D warm-up batch and the batches k-skip leaves G out of reduce
    D's gradients alone, and G's are reduced in the iterations that train G: alone and with
    accumulation (k-skip then counts iterations, and the first micro-batch reduces nothing)."""
    strategy = PlayerDDPStrategy(find_unused_parameters=False)
    module = make_module(d_init_steps=1, d_steps_per_g_step=2)[0]
    assert [[p for p, _ in reduced] for reduced in _fit_one_rank(module, tmp_path, strategy).batches] == [
        ["d"],
        ["g", "d"],
        ["d"],
        ["g", "d"],
    ]
    module = make_module(d_steps_per_g_step=2, accumulate_batches=2)[0]
    reduced = _fit_one_rank(module, tmp_path, PlayerDDPStrategy(find_unused_parameters=False)).batches
    assert [[p for p, _ in batch] for batch in reduced] == [[], ["d"], [], ["g", "d"]]


def test_ddp_reduces_an_accumulated_iteration_once(tmp_path: Path) -> None:
    """``accumulate_batches=2`` under DDP (one CPU rank, in process): the gradients are all-reduced
    once per iteration, in the last micro-batch's backward passes (the first runs under DDP's
    ``no_sync``), and G and D step with the sum over both micro-batches, as without DDP."""

    def run(accumulate: int, ddp: bool) -> tuple[Recorder, Recorder, list[tuple[str, int]]]:
        module, opt_g, opt_d = make_module(accumulate_batches=accumulate)
        strategy = PlayerDDPStrategy(find_unused_parameters=False) if ddp else None
        count = _fit_one_rank(module, tmp_path, strategy)
        return opt_g, opt_d, [call for reduced in count.batches for call in reduced]

    *_, every_batch = run(accumulate=1, ddp=True)
    opt_g, opt_d, per_iteration = run(accumulate=2, ddp=True)
    plain_g, plain_d, _ = run(accumulate=2, ddp=False)
    assert len(every_batch) > 0 and len(per_iteration) * 2 == len(every_batch)  # 4 batches: 2 iterations
    for ours, plain in ((opt_g, plain_g), (opt_d, plain_d)):
        assert len(ours.optimizer.steps) == len(plain.optimizer.steps) == 2
        for got, want in zip(ours.optimizer.steps, plain.optimizer.steps, strict=True):
            for g, w in zip(got, want, strict=True):
                torch.testing.assert_close(g, w, rtol=0, atol=0)


# ---------------------------------------------------------------------------- a loss scale (16-mixed)


def loss_scaled(init_scale: float) -> MixedPrecision:
    """``trainer.precision=16-mixed`` with its GradScaler, on the CPU (Lightning itself would
    switch a CPU run to bf16-mixed, which has no loss scale)."""
    return MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=init_scale))


class GradNorms(L.Callback):
    """The logged ``train/grad_norm_g|d`` of every batch (``log_every_n_steps=1``)."""

    def __init__(self) -> None:
        self.batches: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:  # noqa: ANN002
        metrics = trainer.callback_metrics
        self.batches.append({key: float(metrics[f"train/{key}"]) for key in ("grad_norm_g", "grad_norm_d")})


def test_under_a_loss_scale_norms_and_clipping_see_the_unscaled_gradients(tmp_path: Path) -> None:
    """16-mixed multiplies the loss by the GradScaler's scale; Lightning divides the gradients by it
    inside the optimizer's step. The logged norms, the clipping and the step must all see the
    divided gradients: the same for two scales (powers of two: exact in fp16 without overflow),
    and near the fp32 run's. Measured before the fix: norms 1024 times the fp32 ones, and the
    clipping by those cut each step to 1/1024 of the clipped one."""
    runs = {}
    for scale in (None, 2.0**10, 2.0**14):
        module, opt_g, opt_d = make_module(clip_grad_norm_g=0.05, clip_grad_norm_d=0.1)
        norms = GradNorms()
        plugins = [] if scale is None else [loss_scaled(scale)]
        fit(module, fixed_batch(), tmp_path, batches=2, callbacks=[norms], plugins=plugins)
        runs[scale] = norms.batches, opt_g.optimizer.steps, opt_d.optimizer.steps, params(module.generator)
    fp32, low, high = runs.values()
    assert low[0] == high[0]  # the logged norms
    for a, b in zip(low[3], high[3], strict=True):  # G after two steps
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for got, want in zip(low[0], fp32[0], strict=True):
        assert got == pytest.approx(want, rel=2e-2)  # fp16 autocast against fp32
    for steps, limit in ((low[1], 0.05), (low[2], 0.1)):  # what G and D stepped with: clipped, unscaled
        assert all(flat(step).norm() == pytest.approx(limit, rel=1e-3) for step in steps)


def test_under_a_loss_scale_a_fused_optimizer_is_clipped_on_unscaled_gradients(tmp_path: Path) -> None:
    """Lightning leaves a fused optimizer's gradients scaled (its kernels unscale them inside the
    step), so the norm and the clipping before it saw them x 2^10. With them unscaled first, fused
    Adam logs the norms of for-each Adam and takes the same clipped steps."""
    runs = []
    for fused in (False, True):
        adam = functools.partial(torch.optim.Adam, lr=1e-3, fused=fused)
        module, _, _ = make_module(optimizer_g=adam, optimizer_d=adam, clip_grad_norm_g=0.05, clip_grad_norm_d=0.1)
        norms = GradNorms()
        fit(module, fixed_batch(), tmp_path, batches=2, callbacks=[norms], plugins=[loss_scaled(2.0**10)])
        runs.append((norms.batches, params(module.generator), params(module.discriminator)))
    (foreach_norms, *foreach), (fused_norms, *fused) = runs
    for got, want in zip(fused_norms, foreach_norms, strict=True):
        assert got == pytest.approx(want, rel=1e-5)
    for got, want in zip(fused, foreach, strict=True):
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
