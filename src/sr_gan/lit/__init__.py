"""LightningModules: orchestration of generators, discriminators and losses."""

from sr_gan.lit.ema import EMAUpdater, ema_decay_at, make_ema
from sr_gan.lit.module import SRGANModule

__all__ = ["EMAUpdater", "SRGANModule", "ema_decay_at", "make_ema"]
