"""The baseline of the step benchmarks: a stage's batch as a plain PyTorch loop would train it.

The same math as `SRGANModule.training_step` on the same objects (networks, loss terms and their
weights, optimizer and schedule factories, EMA decay), taken from a module built from the same
config and seed: G forward; G step with D frozen; EMA; D step on the detached SR; schedules once
per batch. What a plain loop leaves out is what Lightning and our step add: the trainer loop,
logging, the gradient norms and the non-finite guard.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from torch import Tensor

from benchmarks.stages import Config
from sr_gan.lit import EMAUpdater, SRGANModule, ema_decay_at
from sr_gan.lit.module import CUDA_GRAPH_MODES


class PlainLoop:
    """One training batch per `step`, on `device`, with the switches of `config`."""

    def __init__(self, module: SRGANModule, config: Config, device: torch.device) -> None:
        module.to(device)
        self.g, self.d, self.ema = module.generator, module.discriminator, module.generator_ema
        self.pixel, self.perceptual = module.pixel_loss, module.perceptual_loss
        self.adversarial = module.adversarial_loss
        self.loss_weights, self.ema_decay = module.loss_weights, module.ema_decay
        self.ema_from_weights, self.iteration = module.ema_from_weights, 0
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        trained = [n for n in (self.g, self.d, self.perceptual) if n is not None]  # as SRGANModule.configure_model
        for network in [n for n in (*trained, self.ema) if n is not None]:
            network.to(memory_format=self.memory_format)
        self.ema_update = EMAUpdater(self.ema, self.g) if self.ema is not None else None
        self.graphs = module.compile_mode in CUDA_GRAPH_MODES
        if config.compile:
            torch._dynamo.config.suppress_errors = True  # as SRGANModule.configure_model: eager if it fails
            for network in trained:
                network.compile(backend=module.compile_backend, mode=module.compile_mode)
        self.opt_g = module.optimizer_g(self.g.parameters())
        self.opt_d = module.optimizer_d(self.d.parameters()) if self.d is not None else None
        factories = [(module.scheduler_g, self.opt_g), (module.scheduler_d, self.opt_d)]
        self.schedulers = [f(opt) for f, opt in factories if f is not None and opt is not None]
        dtype = config.autocast_dtype
        self.autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else nullcontext
        self.g.train()
        if self.d is not None:
            self.d.train()

    def generator_loss(self, sr: Tensor, hr: Tensor) -> Tensor:
        """The weighted terms summed as the module sums them (same order, one stacked sum)."""
        terms = []
        if self.pixel is not None:
            terms.append(self.loss_weights["pix"] * self.pixel(sr, hr))
        if self.perceptual is not None:
            terms.append(self.loss_weights["percep"] * self.perceptual(sr, hr))
        if self.d is not None:
            fake = self.d(sr)
            real = None
            if self.adversarial.needs_real_logits_for_generator:
                with torch.no_grad():
                    real = self.d(hr)
            terms.append(self.loss_weights["gan"] * self.adversarial.generator_loss(real, fake))
        return torch.stack(terms).sum()

    def step(self, batch: dict[str, Tensor]) -> None:
        if self.graphs:
            torch.compiler.cudagraph_mark_step_begin()  # as SRGANModule.training_step
        lr = batch["lr"].contiguous(memory_format=self.memory_format)  # (B, 3, h, w)
        hr = batch["hr"].contiguous(memory_format=self.memory_format)  # (B, 3, H, W)
        with self.autocast():
            sr = self.g(lr)
            if self.d is not None:
                self.d.requires_grad_(False)
            loss = self.generator_loss(sr, hr)
            self.opt_g.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_g.step()
            if self.ema_update is not None:
                self.ema_update(ema_decay_at(self.ema_decay, self.iteration, from_weights=self.ema_from_weights))
            if self.d is not None:
                self.d.requires_grad_(True)
                l_real, l_fake = self.adversarial.discriminator_loss(self.d(hr), self.d(sr.detach()))
                self.opt_d.zero_grad(set_to_none=True)
                (l_real + l_fake).backward()
                self.opt_d.step()
        for scheduler in self.schedulers:
            scheduler.step()
        self.iteration += 1
