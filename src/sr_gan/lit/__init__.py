"""LightningModules: orchestration of generators, discriminators and losses."""

from sr_gan.lit.ema import make_ema, update_ema
from sr_gan.lit.module import SRGANModule

__all__ = ["SRGANModule", "make_ema", "update_ema"]
