"""SRGAN discriminator D (Ledig et al. 2017, Sec. 2.1 and Fig. 4)."""

import torch
from torch import nn

from sr_gan.archs.blocks import check_input_size, check_input_size_multiple

# (output channels as a multiple of num_features, stride): k3n64s1 ... k3n512s2.
_CONV_LAYERS = ((1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 2), (8, 1), (8, 2))


def _conv_block(in_channels: int, out_channels: int, stride: int, *, norm: bool) -> nn.Sequential:
    """conv3x3 → BatchNorm (or nothing) → LeakyReLU(0.2); the conv has a bias only without BN."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=not norm),
        nn.BatchNorm2d(out_channels) if norm else nn.Identity(),
        nn.LeakyReLU(0.2, inplace=True),
    )


class SRGANDiscriminator(nn.Module):
    """Eight conv3x3 layers (BN on all but the first) → Dense(1024) → LeakyReLU → Dense(1).

    Returns raw logits (B, 1): the paper's final sigmoid lives in the loss (BCE with logits).
    Only `input_size` x `input_size` inputs are accepted (the paper uses 96).
    """

    size_multiple = 16  # four stride-2 convolutions; read by the start-up checks (sr_gan.config)

    def __init__(self, *, in_channels: int = 3, num_features: int = 64, input_size: int = 96) -> None:
        super().__init__()
        check_input_size_multiple("SRGANDiscriminator", input_size, self.size_multiple)
        self.input_size = input_size
        layers, channels = [], in_channels
        for index, (multiple, stride) in enumerate(_CONV_LAYERS):
            layers.append(_conv_block(channels, num_features * multiple, stride, norm=index > 0))
            channels = num_features * multiple
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * (input_size // 16) ** 2, 1024),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(1024, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, S, S)
        check_input_size("SRGANDiscriminator", self.input_size, x)
        return self.classifier(self.features(x))  # (B, 8F, S/16, S/16) → (B, 1)
