"""Tensor ops that run on any device."""

from sr_gan.ops.degrade import BicubicDegradation, bicubic_degrade
from sr_gan.ops.imresize import imresize
from sr_gan.ops.realesrgan import DegradationStage, RealESRGANDegradation

__all__ = ["BicubicDegradation", "DegradationStage", "RealESRGANDegradation", "bicubic_degrade", "imresize"]
