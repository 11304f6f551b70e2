"""Tensor ops that run on any device."""

from sr_gan.ops.imresize import imresize

__all__ = ["imresize"]
