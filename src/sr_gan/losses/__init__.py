"""Loss terms: VGG19 perceptual and adversarial (pixel losses are plain ``nn.L1Loss`` / ``nn.MSELoss``)."""

from sr_gan.losses.adversarial import (
    AdversarialLoss,
    HingeGANLoss,
    LSGANLoss,
    RelativisticGANLoss,
    VanillaGANLoss,
)
from sr_gan.losses.perceptual import VGG19_LAYER_INDEX, PerceptualLoss

__all__ = [
    "VGG19_LAYER_INDEX",
    "AdversarialLoss",
    "HingeGANLoss",
    "LSGANLoss",
    "PerceptualLoss",
    "RelativisticGANLoss",
    "VanillaGANLoss",
]
