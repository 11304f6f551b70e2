"""VGG-style discriminator of the ESRGAN reference code (BasicSR `VGGStyleDiscriminator`).

Same idea as the SRGAN discriminator (Ledig et al. 2017, Fig. 4), sized for 128 px crops (Wang et
al. 2018, Sec. 4.1), with the reference state-dict keys conv0_0, conv0_1, bn0_1, ..., conv4_1,
bn4_1, linear1, linear2 so its weight files load unchanged.

The reference builds five stages at 128 px and six at 256 px (conv5_0, bn5_0, conv5_1, bn5_1), so
that the linear layer always sees 4x4 features. We follow that rule for every size: five stages,
plus one more per halving while the features are still larger than 4x4 and even. 128 px and below
keep five stages (S/32 features, as before); 256 px is the reference layout; 512 px adds conv6_*.
"""

import torch
from torch import nn

from sr_gan.archs.blocks import check_input_size, check_input_size_multiple

_MIN_STAGES = 5  # the reference's stages at 128 px: the input is divided by 32
_FEATURE_SIZE = 4  # extra stages are added until the features are this small (reference: 4x4 at 128 and 256 px)


def num_stages(input_size: int) -> int:
    """Stages of stride 2 for an `input_size` px input: 5, then one more while features > 4 and even."""
    stages = _MIN_STAGES
    while (side := input_size // 2**stages) > _FEATURE_SIZE and side % 2 == 0:
        stages += 1
    return stages


class VGGStyleDiscriminator(nn.Module):
    """Stages of conv3x3 (+BN) and conv4x4 stride 2 + BN, channels F,2F,4F,8F,8F,(8F...) → 100 → 1.

    LeakyReLU(0.2) throughout; raw logits (B, 1). 14,499,401 parameters at 128 px and 21,055,049 at
    256 px (the reference's extra stage 5). Stage 0's conv3x3 has a bias and no BN; every other conv
    has BN and no bias.
    """

    size_multiple = 2**_MIN_STAGES  # read by the start-up checks (sr_gan.config): data.patch_size must be a multiple

    def __init__(self, *, in_channels: int = 3, num_features: int = 64, input_size: int = 128) -> None:
        super().__init__()
        check_input_size_multiple("VGGStyleDiscriminator", input_size, self.size_multiple)
        self.input_size = input_size
        self.num_stages = num_stages(input_size)
        channels = [num_features * m for m in (1, 2, 4, 8)] + [num_features * 8] * (self.num_stages - 4)
        self.conv0_0 = nn.Conv2d(in_channels, channels[0], 3, padding=1)
        self.conv0_1 = nn.Conv2d(channels[0], channels[0], 4, stride=2, padding=1, bias=False)
        self.bn0_1 = nn.BatchNorm2d(channels[0])
        # Later stages are alike; setattr keeps the reference keys convK_0, bnK_0, convK_1, bnK_1.
        for k in range(1, self.num_stages):
            c_in, c_out = channels[k - 1], channels[k]
            setattr(self, f"conv{k}_0", nn.Conv2d(c_in, c_out, 3, padding=1, bias=False))
            setattr(self, f"bn{k}_0", nn.BatchNorm2d(c_out))
            setattr(self, f"conv{k}_1", nn.Conv2d(c_out, c_out, 4, stride=2, padding=1, bias=False))
            setattr(self, f"bn{k}_1", nn.BatchNorm2d(c_out))
        self.linear1 = nn.Linear(channels[-1] * (input_size // 2**self.num_stages) ** 2, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, S, S)
        check_input_size("VGGStyleDiscriminator", self.input_size, x)
        feat = self.lrelu(self.conv0_0(x))  # (B, F, S, S)
        feat = self.lrelu(self.bn0_1(self.conv0_1(feat)))  # (B, F, S/2, S/2)
        for k in range(1, self.num_stages):
            feat = self.lrelu(getattr(self, f"bn{k}_0")(getattr(self, f"conv{k}_0")(feat)))
            feat = self.lrelu(getattr(self, f"bn{k}_1")(getattr(self, f"conv{k}_1")(feat)))
        feat = feat.flatten(1)  # (B, 8F · (S/2^stages)²): 8F · 4 · 4 at 128 and 256 px
        return self.linear2(self.lrelu(self.linear1(feat)))  # (B, 1)
