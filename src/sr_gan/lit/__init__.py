"""LightningModules: orchestration of generators, discriminators and losses."""

from sr_gan.lit.ema import ema_decay_at, make_ema, update_ema
from sr_gan.lit.module import SRGANModule

__all__ = ["SRGANModule", "ema_decay_at", "make_ema", "update_ema"]
