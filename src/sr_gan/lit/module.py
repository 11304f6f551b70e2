"""One LightningModule for PSNR-oriented and GAN super-resolution training.

SRResNet/RRDB-PSNR (no discriminator), SRGAN and ESRGAN differ only in what is plugged in: the
generator, an optional discriminator and the weighted loss terms. The step never branches on
model names, so every ablation between SRGAN and ESRGAN is a config override (the BasicSR trap of
``SRGANModel -> ESRGANModel`` re-implementing the step is avoided on purpose).

Per batch (manual optimization, as in the reference code):
  1. G step (unless the discriminator is warming up or ``d_steps_per_g_step`` skips it):
     ``L_G = w_pix * L_pix + w_percep * L_percep + w_adv * L_adv(D(HR), D(G(LR)))`` with D frozen.
  2. D step on ``G(LR).detach()``: ``L_D = l_d_real + l_d_fake``.
  3. Schedulers stepped once per *iteration* (k batches with ``accumulate_batches`` = k); EMA of G
     updated after each G step.

Budgets count iterations, not optimizer steps: with two optimizers Lightning's ``global_step``
advances twice per batch. See :mod:`sr_gan.callbacks`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.core.optimizer import LightningOptimizer
from lightning.pytorch.strategies import ParallelStrategy
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torchmetrics import MeanMetric

from sr_gan.callbacks import logs_now
from sr_gan.errors import InputWarning, UserError
from sr_gan.lit.ema import EMAUpdater, ema_decay_at, make_ema
from sr_gan.lit.guard import NonFiniteGuard, can_skip_on_device, clear_flag, flag_if_not_finite
from sr_gan.lit.samples import SampleStrips, save_strip
from sr_gan.losses import AdversarialLoss
from sr_gan.metrics import psnr, ssim
from sr_gan.ops import imresize
from sr_gan.tiling import tiled_forward

OptimizerFactory = Callable[[Iterable[nn.Parameter]], Optimizer]
SchedulerFactory = Callable[[Optimizer], LRScheduler]

_STAGES = ("val", "test")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that replay CUDA graphs
_METRICS = ("psnr", "ssim", "psnr_bicubic", "ssim_bicubic")


class SRGANModule(L.LightningModule):
    """Trains a super-resolution generator, adversarially when a discriminator is given.

    Args:
        generator: maps LR ``(B, 3, h, w)`` in [0, 1] to SR ``(B, 3, h*s, w*s)``.
        discriminator: returns raw logits; ``None`` trains PSNR-oriented (or perceptual-only).
        pixel_loss / perceptual_loss / adversarial_loss: unweighted loss terms (``None`` = off).
        pixel_weight / perceptual_weight / adversarial_weight: the objective's weights;
            the adversarial weight scales the generator's term only, never ``L_D``.
        optimizer_g / optimizer_d: factories taking parameters (Hydra ``_partial_``).
        scheduler_g / scheduler_d: factories taking an optimizer; stepped once per iteration.
        scale: upscaling factor (metrics crop ``scale`` pixels from every border).
        ema_decay: decay of the generator EMA; ``None`` disables it. When on, validation, test
            and exported weights use the EMA generator.
        d_steps_per_g_step: G is updated on every k-th iteration, the k-th first (D on every one),
            as BasicSR's ``net_d_iters``.
        d_init_steps: iterations at the start during which only D is trained (``net_d_init_iters``).
        clip_grad_norm_g / clip_grad_norm_d: clip the L2 norm of all of G's (D's) gradients to
            this value before its step (``None``: no clipping).
        accumulate_batches: k; each optimizer step (an *iteration*) averages the gradients of k
            loader batches, as one batch k times larger would (exactly so for per-sample losses
            and BN-free networks; RaGAN's batch means are then per loader batch). Warm-up,
            k-skip, schedules, EMA and the batch budget count iterations.
        nonfinite_patience: batches in a row with a NaN/Inf loss or gradient after which training
            stops (their steps are skipped where the optimizer can; see `sr_gan.lit.guard`).
        channels_last: G, D and the perceptual loss's VGG in NHWC memory format (faster
            convolutions on tensor-core GPUs; a VGG left in NCHW had its weights converted at
            each call).
        compile: ``torch.compile`` G, D and the perceptual loss in place (state-dict keys
            unchanged) with this backend (``True``: inductor); a network that fails to compile
            runs eagerly, with a warning.
        compile_mode: inductor's ``torch.compile`` mode (``None``: its default); ``reduce-overhead``
            replays their kernels as CUDA graphs (the eager step is host-bound on fast GPUs).
        num_samples: the first validation images, saved as ``bicubic | SR | HR`` PNG strips at every
            validation (gathered from every rank: the same images on any number of GPUs).
    """

    def __init__(
        self,
        *,
        generator: nn.Module,
        discriminator: nn.Module | None = None,
        pixel_loss: nn.Module | None = None,
        pixel_weight: float = 1.0,
        perceptual_loss: nn.Module | None = None,
        perceptual_weight: float = 1.0,
        adversarial_loss: AdversarialLoss | None = None,
        adversarial_weight: float = 5e-3,
        optimizer_g: OptimizerFactory,
        optimizer_d: OptimizerFactory | None = None,
        scheduler_g: SchedulerFactory | None = None,
        scheduler_d: SchedulerFactory | None = None,
        scale: int,
        ema_decay: float | None = None,
        d_steps_per_g_step: int = 1,
        d_init_steps: int = 0,
        clip_grad_norm_g: float | None = None,
        clip_grad_norm_d: float | None = None,
        accumulate_batches: int = 1,
        nonfinite_patience: int = 10,
        channels_last: bool = False,
        compile: bool | str = False,
        compile_mode: str | None = None,
        num_samples: int = 4,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self.pixel_loss = pixel_loss
        self.perceptual_loss = perceptual_loss
        self.adversarial_loss = adversarial_loss
        self.loss_weights = {"pix": pixel_weight, "percep": perceptual_weight, "gan": adversarial_weight}
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.scheduler_g, self.scheduler_d = scheduler_g, scheduler_d
        self.scale = scale
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise UserError(f"model.ema_decay={ema_decay} must be in (0, 1), or null to switch EMA off")
        self.ema_decay = ema_decay
        self.generator_ema = make_ema(generator) if ema_decay else None
        self.ema_from_weights = False  # init_generator_from: the EMA starts from trained weights
        self.d_steps_per_g_step = d_steps_per_g_step
        self.d_init_steps = d_init_steps
        self.clip_grad_norm = {"g": clip_grad_norm_g, "d": clip_grad_norm_d}
        if accumulate_batches < 1:
            raise UserError(f"optim.accumulate_batches={accumulate_batches} must be >= 1")
        self.accumulate_batches = accumulate_batches
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.compile_backend = "inductor" if compile is True else compile or None
        if compile_mode is not None and self.compile_backend != "inductor":
            raise UserError(
                f"model.compile_mode={compile_mode} is a mode of inductor, but model.compile={compile}: "
                "set model.compile=true, or model.compile_mode=null"
            )
        if compile_mode in CUDA_GRAPH_MODES and accumulate_batches > 1:
            # CUDA-graph trees hand out the backward's gradients in graph memory, which the next
            # replay overwrites: accumulation fails or silently sums wrong (pytorch/pytorch#169545).
            raise UserError(
                f"model.compile_mode={compile_mode} cannot accumulate gradients "
                f"(optim.accumulate_batches={accumulate_batches}): CUDA graphs overwrite the previous batch's; "
                "set optim.accumulate_batches=1 or model.compile_mode=null"
            )
        self.compile_mode = compile_mode
        self._compiled = False  # configure_model compiles once (it runs again on every fit)
        self.guard = NonFiniteGuard(nonfinite_patience)
        self._skip_on_device: dict[int, bool] = {}  # id(optimizer) -> fused kernels skip bad steps
        self._scaler: torch.amp.GradScaler | None = None  # 16-mixed's loss scale (Lightning's)
        self._stepping: str | None = None  # the player whose optimizer `_step` is stepping ...
        self._grad_norms: dict[str, Tensor] = {}  # ... and its gradient norm, from on_before_optimizer_step
        # Listed once a fit starts (the networks have moved): each walk of RRDBNet's 702 parameters
        # cost 0.65 ms of host time on a CPU core, and a batch took four.
        self._player_parameters: dict[str, list[nn.Parameter]] = {}  # "g", "d": each player's
        self._ema_update: EMAUpdater | None = None
        self._lr_values: dict[str, float] = {}  # learning rates as last logged ...
        self._lr_logged: dict[str, Tensor] = {}  # ... and as device tensors (train/lr_g, train/lr_d)
        self._local_gradients = ExitStack()  # DDP's no_sync() over an accumulated micro-batch
        self.replicas: dict[str, nn.Module] = {}  # "g", "d": each trained network's DDP wrapper (`distribute`)
        # The networks' resolved Hydra configs (set by sr_gan.train), stored in checkpoints so that
        # sr_gan.weights.load_generator can rebuild G without this code's config, and a resumed
        # run is checked against the run that wrote the checkpoint.
        self.generator_config: dict[str, Any] | None = None
        self.discriminator_config: dict[str, Any] | None = None
        self.samples = SampleStrips(num_samples)  # the first validation images' strips, per epoch
        self.metrics = nn.ModuleDict({stage: nn.ModuleDict({m: MeanMetric() for m in _METRICS}) for stage in _STAGES})
        _check_objective(pixel_loss, perceptual_loss, adversarial_loss, discriminator, optimizer_d)

    # ------------------------------------------------------------------ set-up
    def configure_model(self) -> None:
        """The speed switches: memory format and compilation of the networks a training step runs."""
        trained = [n for n in (self.generator, self.discriminator, self.perceptual_loss) if n is not None]
        for network in [n for n in (*trained, self.generator_ema) if n is not None]:
            network.to(memory_format=self.memory_format)
        if self.compile_backend is not None and not self._compiled:
            # A backend failure (no C compiler, an unsupported op) falls back to eager, with dynamo's warning.
            torch._dynamo.config.suppress_errors = True
            for network in trained:  # not the EMA copy: validation shapes vary
                network.compile(backend=self.compile_backend, mode=self.compile_mode)
            self._compiled = True
            how = self.compile_backend + (f", mode {self.compile_mode}" if self.compile_mode else "")
            notice = f"model.compile={how}: G, D and VGG compile on their first batches"
            warnings.warn(notice, InputWarning, stacklevel=2)

    def configure_optimizers(self) -> tuple[list[Optimizer], list[LRScheduler]]:
        optimizers = [self.optimizer_g(self.generator.parameters())]
        factories = [self.scheduler_g]
        if self.discriminator is not None:
            optimizers.append(self.optimizer_d(self.discriminator.parameters()))
            factories.append(self.scheduler_d)
        schedulers = [f(opt) for f, opt in zip(factories, optimizers, strict=True) if f is not None]
        return optimizers, schedulers

    def init_generator_from(self, state: dict[str, Tensor]) -> None:
        """Initialise G (and its EMA) from a PSNR-oriented run: the two-stage recipe of both papers."""
        self.generator.load_state_dict(state, strict=True)
        if self.generator_ema is not None:
            self.generator_ema.load_state_dict(self.generator.state_dict())
            self.ema_from_weights = True

    @property
    def players(self) -> dict[str, nn.Module]:
        """The trained networks by player, ``"g"`` and (in a GAN stage) ``"d"``."""
        return {"g": self.generator} | ({"d": self.discriminator} if self.discriminator is not None else {})

    def distribute(self, wrap: Callable[[nn.Module], nn.Module] | None) -> None:
        """Train G and D each through its own wrapper, ``wrap(network)`` (a DDP: `sr_gan.lit.ddp`), or
        again directly (``None``). The wrappers are not submodules: state-dict keys stay the networks'."""
        self.replicas = {} if wrap is None else {p: wrap(network) for p, network in self.players.items()}

    def _trained(self, player: str) -> nn.Module:
        """What a forward pass that trains `player` ("g" or "d") calls: its DDP wrapper, if any."""
        return self.replicas[player] if player in self.replicas else self.players[player]

    @property
    def inference_generator(self) -> nn.Module:
        """The generator used for validation, test and export: the EMA one when enabled."""
        return self.generator if self.generator_ema is None else self.generator_ema

    def forward(self, lr: Tensor) -> Tensor:
        return self.inference_generator(lr)

    # ------------------------------------------------------------------ training
    @property
    def batches_done(self) -> int:
        """Training batches completed before the current one (restored on resume)."""
        return self.trainer.fit_loop.epoch_loop.batch_progress.total.completed

    def on_fit_start(self) -> None:
        # A GradScaler (16-mixed) sets found_inf on its own and skips non-finite steps itself: the
        # guard tolerates `nonfinite_patience` of them in a row (the scaler's overflows, by design).
        self._scaler = scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        self._skip_on_device = {id(o): can_skip_on_device(o) and scaler is None for o in self.trainer.optimizers}
        self.guard.skipping = scaler is not None or all(self._skip_on_device.values())
        self._player_parameters = {p: list(network.parameters()) for p, network in self.players.items()}
        if self.generator_ema is not None:
            self._ema_update = EMAUpdater(self.generator_ema, self.generator)

    @property
    def iterations_done(self) -> int:
        """Optimizer iterations completed: batches / ``accumulate_batches``."""
        return self.batches_done // self.accumulate_batches

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Under DDP the micro-batches of an iteration but its last keep their gradients local (DDP's
        ``no_sync``, entered before DDP's forward, which runs this batch's training step): gradients
        are averaged over the ranks once per iteration, not once per loader batch."""
        if (self.batches_done + 1) % self.accumulate_batches and isinstance(self.trainer.strategy, ParallelStrategy):
            self._local_gradients.enter_context(self.trainer.strategy.block_backward_sync())

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._local_gradients.close()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        lr, hr = (batch[key].contiguous(memory_format=self.memory_format) for key in ("lr", "hr"))
        # (B, 3, h, w) input, (B, 3, h*s, w*s) target; what D calls real: the un-sharpened HR when the
        # target is sharpened, else the target itself (not a second memory-format copy of it)
        real = batch["hr_real"].contiguous(memory_format=self.memory_format) if "hr_real" in batch else hr
        if self.compile_mode in CUDA_GRAPH_MODES:
            torch.compiler.cudagraph_mark_step_begin()  # last batch's graph outputs may be overwritten
        optimizers = self.optimizers()
        opt_g, opt_d = (optimizers, None) if self.discriminator is None else optimizers
        step, iteration = self.batches_done, self.iterations_done
        first, last = step % self.accumulate_batches == 0, (step + 1) % self.accumulate_batches == 0
        # BasicSR's (and the 2018 code's) phase: iteration i + 1 (they count from 1) updates G when it
        # is a multiple of k past the warm-up (`current_iter % net_d_iters == 0 and current_iter > init`)
        warm = iteration >= self.d_init_steps and (iteration + 1) % self.d_steps_per_g_step == 0
        update_g = opt_d is None or warm
        with torch.set_grad_enabled(update_g):
            sr = self._trained("g")(lr)  # (B, 3, H, W)
        if sr.shape != hr.shape:  # a generator of the user's own with another scale: the losses' shapes would clash
            raise UserError(
                f"model.generator ({type(self.generator).__name__}) maps the {tuple(lr.shape)} LR batch to "
                f"{tuple(sr.shape)}, not to the HR batch's {tuple(hr.shape)} (data.scale={self.scale}): "
                "give it scale: ${data.scale} in its config, and an RGB output"
            )
        logs = self._learning_rates()  # the rates this iteration steps with
        if update_g:
            logs |= self.generator_step(sr, hr, opt_g, first=first, last=last, real=real)
        if opt_d is not None:
            logs |= self.discriminator_step(sr.detach(), real, opt_d, first=first, last=last)
        self.guard.update({k.removeprefix("train/"): v for k, v in logs.items()}, step)
        if last:
            self._step_schedulers()
        if logs_now(self.trainer):  # the batches whose values Lightning writes
            self.log_dict(logs, on_step=True, on_epoch=False, batch_size=lr.shape[0])  # (~0.3 ms a value)
            self.check_finite()

    def generator_step(
        self,
        sr: Tensor,
        hr: Tensor,
        opt_g: Optimizer,
        *,
        first: bool = True,
        last: bool = True,
        real: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """G's backward with D frozen (no gradient reaches D); on the `last` batch of an iteration its
        step, then the EMA update. `first` clears the gradients."""
        with self.discriminator_frozen():
            terms = self.generator_losses(sr, hr, real=real)
            if first:
                opt_g.zero_grad(set_to_none=True)
            self.manual_backward(torch.stack(list(terms.values())).sum() / self.accumulate_batches)
            logs = {f"train/l_g_{k}": v.detach() for k, v in terms.items()}
            if last:
                logs["train/grad_norm_g"] = self._step(opt_g, "g")
        if last and self._ema_update is not None:
            self._ema_update(self.current_ema_decay)
        return logs

    @contextmanager
    def discriminator_frozen(self) -> Iterator[None]:
        """D's parameters require no gradient inside (those frozen before stay so). What Lightning's
        ``toggled_optimizer`` does for this step, without walking G's parameters too (~700 for
        RRDBNet: 0.75 ms a batch on a CPU host, 2 ms on the H200's, against 0.06 ms)."""
        if self.discriminator is None:
            yield
            return
        trainable = [p for p in self._player_parameters["d"] if p.requires_grad]
        for parameter in trainable:
            parameter.requires_grad_(False)
        try:
            yield
        finally:
            for parameter in trainable:
                parameter.requires_grad_(True)

    @property
    def current_ema_decay(self) -> float:
        """`ema_decay` with its warm-up (`ema_decay_at`) at this iteration."""
        return ema_decay_at(self.ema_decay, self.iterations_done, from_weights=self.ema_from_weights)

    def discriminator_step(
        self, fake: Tensor, hr: Tensor, opt_d: Optimizer, *, first: bool = True, last: bool = True
    ) -> dict[str, Tensor]:
        """D's backward on real HR and detached SR, ``L_D = l_d_real + l_d_fake`` (no gradient can
        reach G); its step on the `last` batch of an iteration."""
        discriminator = self._trained("d")
        real_logits = discriminator(hr)
        fake_logits = discriminator(fake)
        l_real, l_fake = self.adversarial_loss.discriminator_loss(real_logits, fake_logits)
        if first:
            opt_d.zero_grad(set_to_none=True)
        self.manual_backward((l_real + l_fake) / self.accumulate_batches)
        logs = {
            "train/l_d_real": l_real.detach(),
            "train/l_d_fake": l_fake.detach(),
            "train/d_real": real_logits.detach().mean(),
            "train/d_fake": fake_logits.detach().mean(),
        }
        if last:
            logs["train/grad_norm_d"] = self._step(opt_d, "d")
        return logs

    def _step(self, optimizer: LightningOptimizer, player: str) -> Tensor:
        """Step `player`'s optimizer; returns the L2 norm of all its gradients (before clipping),
        NaN/Inf iff one of them is (or, harmlessly, above ~1e19: a diverged run).

        The norm, the clipping and the device-side skip happen in `on_before_optimizer_step`, which
        Lightning calls inside the step once a ``GradScaler`` (``trainer.precision=16-mixed``) has
        unscaled the gradients: before that they are the loss scale (2^16 at first) times too large.
        """
        self._stepping = player
        try:
            optimizer.step()
        finally:
            self._stepping = None
            clear_flag(optimizer.optimizer)
        return self._grad_norms.pop(player)

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Inside `_step`, on the gradients as the optimizer will use them: their norm, the clipping
        (if configured), and the flag that skips the step on the device when a gradient is not
        finite and the optimizer can (`sr_gan.lit.guard`). One fused multi-tensor norm on CUDA; on
        a CPU the L2 for-each norm is ~15x cheaper than the max norm (no fused CPU kernel for it):
        a device tensor, no host sync."""
        player = self._stepping
        if self._scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            # Lightning leaves a fused optimizer's gradients scaled, for its kernels to unscale after
            # this hook; the norm and the clipping need them unscaled now (its kernels then do not)
            self._scaler.unscale_(optimizer)
        if (max_norm := self.clip_grad_norm[player]) is not None:
            norm = torch.nn.utils.clip_grad_norm_(self._player_parameters[player], max_norm)
        else:
            grads = [p.grad for p in self._player_parameters[player] if p.grad is not None]
            # torch.nn.utils.get_total_norm gives the same value, but first groups the tensors by device
            # and dtype: 0.07 ms more host time a step for RRDBNet's 702 (one CPU core)
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        if self._skip_on_device.get(id(optimizer), False):
            flag_if_not_finite(optimizer, norm)
        self._grad_norms[player] = norm.detach()

    def _learning_rates(self) -> dict[str, Tensor]:
        """``train/lr_g|d`` as device tensors refilled only when a schedule changes them: logging a
        float would copy it to the device (a blocking transfer) on every batch."""
        for name, optimizer in zip("gd", self.trainer.optimizers):
            value = optimizer.param_groups[0]["lr"]
            if self._lr_values.get(name) != value:
                self._lr_values[name] = value
                self._lr_logged[name] = torch.full((), value, device=self.device)
        return {f"train/lr_{name}": tensor for name, tensor in self._lr_logged.items()}

    def check_finite(self) -> None:
        """Stop a diverged run (one host sync; called on the logging interval and before validation)."""
        lrs = ", ".join(
            f"optim.{n}.lr={o.param_groups[0]['lr']:g}"
            for n, o in zip(("generator", "discriminator"), self.trainer.optimizers)
        )
        hint = f"Lower the learning rate ({lrs}) or the loss weights, and resume from the last checkpoint."
        self.guard.check(hint, over_ranks=self._worst_over_ranks)

    def _worst_over_ranks(self, record: Tensor) -> Tensor:
        """`record`'s maximum over the DDP ranks (the guard's, every rank calls it at the same batch)."""
        if self.trainer.world_size > 1:
            torch.distributed.all_reduce(record, op=torch.distributed.ReduceOp.MAX)
        return record

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "fit":
            self.check_finite()
        self._enter_evaluation()

    def on_validation_end(self) -> None:
        self._leave_evaluation()

    def on_test_start(self) -> None:
        self._enter_evaluation()

    def on_test_end(self) -> None:
        self._leave_evaluation()

    def _enter_evaluation(self) -> None:
        """Evaluation images differ in size: cuDNN's autotuner (trainer.benchmark) would time every
        algorithm for each new shape, and a compiled G would recompile (and, in a CUDA-graph mode,
        record a graph) for each. During validation and test both are off: G runs eagerly."""
        self._cudnn_benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = False
        if self._compiled:
            torch.compiler.set_stance("force_eager")

    def _leave_evaluation(self) -> None:
        torch.backends.cudnn.benchmark = self._cudnn_benchmark
        if self._compiled:
            torch.compiler.set_stance("default")

    def generator_losses(self, sr: Tensor, hr: Tensor, *, real: Tensor | None = None) -> dict[str, Tensor]:
        """The weighted generator terms, keyed ``pix``, ``percep``, ``gan`` (only those switched on):
        pixel and perceptual against the target `hr`, the GAN term against D's `real` (default `hr`)."""
        terms: dict[str, Tensor] = {}
        if self.pixel_loss is not None:
            terms["pix"] = self.loss_weights["pix"] * self.pixel_loss(sr, hr)
        if self.perceptual_loss is not None:
            terms["percep"] = self.loss_weights["percep"] * self.perceptual_loss(sr, hr)
        if self.discriminator is not None:
            fake_logits = self.discriminator(sr)
            real_logits = None
            if self.adversarial_loss.needs_real_logits_for_generator:
                with torch.no_grad():
                    real_logits = self.discriminator(hr if real is None else real)
            terms["gan"] = self.loss_weights["gan"] * self.adversarial_loss.generator_loss(real_logits, fake_logits)
        return terms

    def _step_schedulers(self) -> None:
        """Step every schedule after each iteration's update, so milestones count iterations and
        iteration M + 1 is the first at a milestone M's rate, as in BasicSR (which steps before each
        update but the first); its 2018 code stepped before the first too, one iteration earlier.

        During a D warm-up G's schedule advances while G does not step; PyTorch warns about that
        order, which here is intended.
        """
        schedulers = self.lr_schedulers()
        if schedulers is None:
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
                scheduler.step()

    # ------------------------------------------------------------------ evaluation
    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch: dict[str, Any], stage: str) -> None:
        """SR, bicubic baseline and metrics in float32 whatever the training precision (the papers'
        protocol; under bf16 autocast the bicubic PSNR alone moved by up to 0.007 dB)."""
        with torch.autocast(self.device.type, enabled=False):
            self._score(batch, stage)

    def _score(self, batch: dict[str, Any], stage: str) -> None:
        lr, hr = batch["lr"].float(), batch["hr"].float()
        # edge-padded to the multiple of its sides that G takes (RRDBNet at x1/x2 pixel-unshuffles), cropped back
        sr = tiled_forward(self.inference_generator, lr.contiguous(memory_format=self.memory_format), scale=self.scale)
        bicubic = imresize(lr, self.scale)
        crop = self.scale
        scores = {"psnr": psnr(sr, hr, crop_border=crop), "ssim": ssim(sr, hr, crop_border=crop)}
        scores |= {
            "psnr_bicubic": psnr(bicubic, hr, crop_border=crop),
            "ssim_bicubic": ssim(bicubic, hr, crop_border=crop),
        }
        # (B,); 0 for the stand-in image of a rank that has none of its own (`sr_gan.data.datamodule.StandIn`)
        weight = batch["weight"] if "weight" in batch else torch.ones(sr.shape[0], device=sr.device)
        metrics = self.metrics[stage]
        for name, metric in metrics.items():
            metric.update(scores[name].where(weight > 0, 0.0), weight=weight)  # (an infinite PSNR x 0: NaN)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, batch_size=1)
        self.samples.keep(batch, bicubic, sr)

    def on_validation_epoch_end(self) -> None:
        self._save_samples("val")

    def on_test_epoch_end(self) -> None:
        self._save_samples("test")

    def _save_samples(self, stage: str) -> None:
        """Rank 0 writes (and logs) the epoch's strips of every rank (`SampleStrips`); all ranks take part."""
        strips = self.samples.take(self.trainer.world_size)
        folder = Path(self.trainer.default_root_dir) / "samples" / f"{stage}_{self.batches_done:07d}"
        for name, strip in strips if self.trainer.is_global_zero else []:
            path = save_strip(folder / f"{name}.png", strip)
            for logger in self.loggers:
                if hasattr(logger, "log_image"):
                    logger.log_image(key=f"{stage}/samples/{name}", images=[str(path)], step=self.batches_done)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store what is needed to rebuild G and go on with its EMA's decay; drop the frozen VGG (it is
        rebuilt from its weights)."""
        checkpoint["sr_gan"] = {
            "generator": self.generator_config,
            "discriminator": self.discriminator_config,
            "scale": self.scale,
            "ema_from_weights": self.ema_from_weights,  # a resume without model.init_from keeps the decay
        }
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("perceptual_loss.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of other networks in one line; take the EMA's start (from trained weights
        or not) from the run that wrote it, so that a resume needs no model.init_from; put the frozen
        VGG back so that strict loading still checks every other key."""
        self.check_resumable(checkpoint)
        self.ema_from_weights = checkpoint.get("sr_gan", {}).get("ema_from_weights", self.ema_from_weights)
        own_state = self.state_dict()
        checkpoint["state_dict"].update({k: v for k, v in own_state.items() if k.startswith("perceptual_loss.")})

    def check_resumable(self, checkpoint: dict[str, Any]) -> None:
        """A one-line UserError when `checkpoint` holds other networks than this module (or another
        stage: with or without a discriminator). sr_gan.train also calls it before it writes the run's
        config.yaml and run.json, so that a refused resume leaves the earlier run's record intact."""
        stored = checkpoint.get("sr_gan", {})
        if not isinstance(stored, Mapping):  # (a damaged or crafted file; .get below was an AttributeError)
            raise UserError(
                f"the checkpoint's key 'sr_gan' holds a {type(stored).__name__}, not sr-gan's record of its networks: "
                "it is damaged or was not written by sr-gan; resume from a checkpoint you trust"
            )
        weights = checkpoint.get("state_dict", {})
        if weights and any(k.startswith("discriminator.") for k in weights) != (self.discriminator is not None):
            raise UserError(
                "the checkpoint is of a PSNR stage (no discriminator) and this run trains a GAN: start the GAN "
                "stage from it with model.init_from=<the checkpoint>, as both papers do, not ckpt_path"
                if self.discriminator is not None
                else "the checkpoint is of a GAN stage (with a discriminator) and this run trains none: resume "
                "it with the settings of the run that wrote it (its config.yaml)"
            )
        for name, own in (("generator", self.generator_config), ("discriminator", self.discriminator_config)):
            theirs = stored.get(name)
            if own is not None and theirs is not None and theirs != own:
                differ = _differences(theirs, own, prefix=f"{'model.' if name == 'generator' else ''}{name}")
                raise UserError(
                    f"the checkpoint holds another {name} ({'; '.join(differ[:4])}): resume with the "
                    "settings of the run that wrote it (its config.yaml), or start a new run with model.init_from"
                )


def _differences(theirs: Any, ours: Any, *, prefix: str) -> list[str]:
    """`key=<checkpoint's> here <ours>` for every leaf where two nested configs differ."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        keys = sorted(theirs.keys() | ours.keys())
        return [d for k in keys for d in _differences(theirs.get(k), ours.get(k), prefix=f"{prefix}.{k}")]
    return [] if theirs == ours else [f"{prefix}={theirs} in the checkpoint, {ours} here"]


def _check_objective(
    pixel_loss: nn.Module | None,
    perceptual_loss: nn.Module | None,
    adversarial_loss: AdversarialLoss | None,
    discriminator: nn.Module | None,
    optimizer_d: OptimizerFactory | None,
) -> None:
    """Refuse objectives that cannot train, naming the config keys to change."""
    if pixel_loss is None and perceptual_loss is None and adversarial_loss is None:
        raise UserError("the loss has no term: pick one, e.g. loss=l1, loss=vgg54, loss=srgan or loss=ragan")
    if adversarial_loss is not None and not isinstance(adversarial_loss, AdversarialLoss):
        raise UserError(  # else an AttributeError traceback at the first GAN step, the run started
            f"loss.adversarial: {type(adversarial_loss).__name__} is no sr_gan.losses.AdversarialLoss: subclass it "
            "(discriminator_loss(real_logits, fake_logits), generator_loss(real_logits, fake_logits))"
        )
    if adversarial_loss is not None and discriminator is None:
        raise UserError(
            "an adversarial loss needs a discriminator: set discriminator=srgan|unet|vgg128|vgg256 "
            "(or use a loss without a GAN term, e.g. loss=l1)"
        )
    if discriminator is not None and adversarial_loss is None:
        raise UserError(
            "a discriminator is configured but the loss has no adversarial term: "
            "set discriminator=none or a GAN loss (loss=srgan, loss=ragan)"
        )
    if discriminator is not None and optimizer_d is None:
        raise UserError("a discriminator needs an optimizer: set optim.discriminator")
