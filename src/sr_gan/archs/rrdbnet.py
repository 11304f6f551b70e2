"""RRDBNet, the ESRGAN generator (Wang et al. 2018, Sec. 3.1 and Fig. 4).

Structure and state-dict keys follow the reference implementation (BasicSR `RRDBNet`), so its
weight files load unchanged: conv_first, body.{i}.rdb{1,2,3}.conv{1..5}, conv_body, conv_up1,
conv_up2, conv_hr, conv_last. No BatchNorm, residual scaling beta = 0.2, no output clamp.
"""

import torch
import torch.nn.functional as F
from torch import nn

from sr_gan.archs.blocks import default_init_weights, make_layer
from sr_gan.errors import UserError

RESIDUAL_SCALE = 0.2  # beta, Sec. 3.1 (residual scaling)
# scale → pixel_unshuffle factor of the input: x1 and x2 reuse the x4 network on a smaller grid.
_UNSHUFFLE = {1: 4, 2: 2, 4: 1, 8: 1}


class ResidualDenseBlock(nn.Module):
    """Five densely connected conv3x3 (growth `growth_channels`), output x5 · beta + x."""

    def __init__(self, *, num_features: int = 64, growth_channels: int = 32) -> None:
        super().__init__()
        grow = growth_channels
        self.conv1 = nn.Conv2d(num_features, grow, 3, padding=1)
        self.conv2 = nn.Conv2d(num_features + grow, grow, 3, padding=1)
        self.conv3 = nn.Conv2d(num_features + 2 * grow, grow, 3, padding=1)
        self.conv4 = nn.Conv2d(num_features + 3 * grow, grow, 3, padding=1)
        self.conv5 = nn.Conv2d(num_features + 4 * grow, num_features, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)  # in place: conv backward does not need its output
        # Sec. 3.1 "smaller initialization": as BasicSR's RRDBNet, only the RDB convs (its 2018 code
        # scaled every conv of G by 0.1, conv_first to conv_last).
        default_init_weights([self.conv1, self.conv2, self.conv3, self.conv4, self.conv5], scale=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F, H, W)
        x1 = self.lrelu(self.conv1(x))  # (B, G, H, W)
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))  # (B, G, H, W)
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))  # (B, F, H, W)
        return x5 * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Residual-in-Residual Dense Block: three RDBs, then out · beta + x (Fig. 4)."""

    def __init__(self, *, num_features: int = 64, growth_channels: int = 32) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_features=num_features, growth_channels=growth_channels)
        self.rdb2 = ResidualDenseBlock(num_features=num_features, growth_channels=growth_channels)
        self.rdb3 = ResidualDenseBlock(num_features=num_features, growth_channels=growth_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F, H, W)
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """ESRGAN generator; 16,697,987 parameters at x4 with the defaults.

    Upsampling is nearest x2 + conv3x3 + LeakyReLU(0.2), twice. Scales 1 and 2 (reference code)
    pixel-unshuffle the input by 4 or 2 first, so conv_first takes in_channels·16 or ·4 channels.
    Scale 8 (not in the reference code) adds a third nearest + conv stage, `conv_up3`.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        num_features: int = 64,
        num_blocks: int = 23,
        growth_channels: int = 32,
        scale: int = 4,
    ) -> None:
        super().__init__()
        if scale not in _UNSHUFFLE:
            raise UserError(f"RRDBNet: scale={scale} is not supported (data.scale): use 1, 2, 4 or 8")
        self.scale = scale
        self.unshuffle = _UNSHUFFLE[scale]
        self.conv_first = nn.Conv2d(in_channels * self.unshuffle**2, num_features, 3, padding=1)
        self.body = make_layer(lambda: RRDB(num_features=num_features, growth_channels=growth_channels), num_blocks)
        self.conv_body = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.conv_up1 = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.conv_up2 = nn.Conv2d(num_features, num_features, 3, padding=1)
        if scale == 8:
            self.conv_up3 = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.conv_hr = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.conv_last = nn.Conv2d(num_features, out_channels, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def _upsample(self, feat: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
        return self.lrelu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")))  # (B, F, 2H, 2W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, h, w)
        if self.unshuffle > 1:  # scales 1 and 2; skipped at 4 and 8, where it would copy the input
            x = F.pixel_unshuffle(x, self.unshuffle)  # (B, C_in·u², h/u, w/u)
        feat = self.conv_first(x)  # (B, F, H, W)
        feat = feat + self.conv_body(self.body(feat))  # global skip
        feat = self._upsample(feat, self.conv_up1)  # (B, F, 2H, 2W)
        feat = self._upsample(feat, self.conv_up2)  # (B, F, 4H, 4W)
        if self.scale == 8:
            feat = self._upsample(feat, self.conv_up3)  # (B, F, 8H, 8W)
        return self.conv_last(self.lrelu(self.conv_hr(feat)))  # (B, C_out, h·s, w·s)
