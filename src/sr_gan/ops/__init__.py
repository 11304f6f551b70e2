"""Tensor ops that run on any device."""

from sr_gan.ops.degrade import bicubic_degrade
from sr_gan.ops.imresize import imresize

__all__ = ["bicubic_degrade", "imresize"]
