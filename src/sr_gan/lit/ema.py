"""Exponential moving average of the generator (ESRGAN reference code practice, decay 0.999).

The averaged generator is a plain frozen copy, so checkpoints hold it under ``generator_ema.*``
with the generator's own key names (what ``sr_gan.weights`` and exported files expect).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(generator: nn.Module) -> nn.Module:
    """A frozen copy of ``generator`` to hold the average."""
    return copy.deepcopy(generator).requires_grad_(False).eval()


class EMAUpdater:
    """``theta_ema <- decay * theta_ema + (1 - decay) * theta`` for one (EMA, generator) pair: one
    fused lerp, no host sync.

    The two networks' tensors are listed once, here: walking RRDBNet's 702 parameters three times
    a batch (both networks, their buffers) took 1.9 ms of host time on a CPU core. Build it once
    the networks are on their device and in their memory format: torch moves a parameter's data
    into the same object, but with ``torch.__future__.set_overwrite_module_params_on_conversion``
    the lists would keep the tensors left behind. Buffers (BatchNorm running statistics) are
    *copied* from the live generator, not averaged: an average of running statistics is not the
    statistics of the averaged network, and BasicSR's habit of leaving them at their initial
    values breaks SRResNet's BN. Only G is averaged (Lightning's weight-averaging callback would
    average the discriminator too).
    """

    def __init__(self, ema: nn.Module, generator: nn.Module) -> None:
        self.averaged, self.live = list(ema.parameters()), list(generator.parameters())
        self.averaged_buffers, self.live_buffers = list(ema.buffers()), list(generator.buffers())
        if len(self.averaged) != len(self.live) or len(self.averaged_buffers) != len(self.live_buffers):
            raise ValueError("the EMA copy and the generator differ in structure")

    @torch.no_grad()
    def __call__(self, decay: float) -> None:
        torch._foreach_lerp_(self.averaged, self.live, 1.0 - decay)
        if self.live_buffers:
            torch._foreach_copy_(self.averaged_buffers, self.live_buffers)


def ema_decay_at(decay: float, iteration: int, *, from_weights: bool) -> float:
    """The decay for the update after `iteration` iterations: `decay`, ramped up as
    ``(1 + t) / (10 + t)`` while the EMA started from G's random initial weights (TF's and timm's
    warm-up): with a constant 0.999, 1000 iterations in the average would still be 37 % random
    weights, so early validations and exports showed noise. An EMA started from trained weights
    (``model.init_from``, both papers' GAN stages) uses the constant decay, as the reference code."""
    if from_weights:
        return decay
    return min(decay, (1 + iteration) / (10 + iteration))
