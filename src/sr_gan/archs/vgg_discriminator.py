"""VGG-style discriminator of the ESRGAN reference code (BasicSR `VGGStyleDiscriminator`).

Same idea as the SRGAN discriminator (Ledig et al. 2017, Fig. 4), sized for 128 px crops (Wang et
al. 2018, Sec. 4.1), with the reference state-dict keys conv0_0, conv0_1, bn0_1, ..., conv4_1,
bn4_1, linear1, linear2 so its weight files load unchanged.
"""

import torch
from torch import nn

from sr_gan.archs.blocks import check_input_size, check_input_size_multiple

_NUM_STAGES = 5  # each stage halves the size: input_size / 32 at the end


class VGGStyleDiscriminator(nn.Module):
    """Five stages of conv3x3 (+BN) and conv4x4 stride 2 + BN, channels F,2F,4F,8F,8F → 100 → 1.

    LeakyReLU(0.2) throughout; raw logits (B, 1). 14,499,401 parameters at 128 px.
    Stage 0's conv3x3 has a bias and no BN; every other conv has BN and no bias.
    """

    def __init__(self, *, in_channels: int = 3, num_features: int = 64, input_size: int = 128) -> None:
        super().__init__()
        check_input_size_multiple("VGGStyleDiscriminator", input_size, 2**_NUM_STAGES)
        self.input_size = input_size
        channels = [num_features * m for m in (1, 2, 4, 8, 8)]
        self.conv0_0 = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.conv0_1 = nn.Conv2d(channels[0], channels[0], 4, stride=2, padding=1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(channels[0])
        # Stages 1-4 are alike; setattr keeps the reference keys convK_0, bnK_0, convK_1, bnK_1.
        for k in range(1, _NUM_STAGES):
            c_in, c_out = channels[k - 1], channels[k]
            setattr(self, f"conv{k}_0", nn.Conv2d(c_in, c_out, 3, padding=1, bias=False))
            setattr(self, f"bn{k}_0", nn.BatchNorm2d(c_out))
            setattr(self, f"conv{k}_1", nn.Conv2d(c_out, c_out, 4, stride=2, padding=1, bias=False))
            setattr(self, f"bn{k}_1", nn.BatchNorm2d(c_out))
        self.linear1 = nn.Linear(channels[-1] * (input_size // 2**_NUM_STAGES) ** 2, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, S, S)
        check_input_size("VGGStyleDiscriminator", self.input_size, x)
        feat = self.lrelu(self.conv0_0(x))  # (B, F, S, S)
        feat = self.lrelu(self.bn0_1(self.conv0_1(feat)))  # (B, F, S/2, S/2)
        for k in range(1, _NUM_STAGES):
            feat = self.lrelu(getattr(self, f"bn{k}_0")(getattr(self, f"conv{k}_0")(feat)))
            feat = self.lrelu(getattr(self, f"bn{k}_1")(getattr(self, f"conv{k}_1")(feat)))
        feat = feat.flatten(1)  # (B, 8F · (S/32)²)
        return self.linear2(self.lrelu(self.linear1(feat)))  # (B, 1)
