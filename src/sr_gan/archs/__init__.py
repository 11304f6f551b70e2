"""Plain nn.Module networks: the SRGAN / ESRGAN generators and discriminators."""

from sr_gan.archs.blocks import count_parameters
from sr_gan.archs.rrdbnet import RRDB, ResidualDenseBlock, RRDBNet
from sr_gan.archs.srgan_discriminator import SRGANDiscriminator
from sr_gan.archs.srresnet import SRResNet
from sr_gan.archs.unet_discriminator import UNetDiscriminatorSN
from sr_gan.archs.vgg_discriminator import VGGStyleDiscriminator

__all__ = [
    "RRDB",
    "RRDBNet",
    "ResidualDenseBlock",
    "SRGANDiscriminator",
    "SRResNet",
    "UNetDiscriminatorSN",
    "VGGStyleDiscriminator",
    "count_parameters",
]
