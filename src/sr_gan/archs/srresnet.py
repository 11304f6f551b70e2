"""SRResNet, the SRGAN generator (Ledig et al. 2017, Sec. 2.1 and Fig. 4).

conv9x9 → act → B residual blocks → conv3x3-norm + long skip → sub-pixel upsampling → conv9x9.
`norm_layer=None` gives the BN-free variant of the ESRGAN ablation (Wang et al. 2018, Sec. 3.1).
"""

import math
from collections.abc import Callable

import torch
from torch import nn

from sr_gan.archs.blocks import default_init_weights, make_layer
from sr_gan.errors import UserError

NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]


def _norm(norm_layer: NormLayer | None, num_features: int) -> nn.Module:
    return nn.Identity() if norm_layer is None else norm_layer(num_features)


def _upsample_factors(scale: int) -> list[int]:
    """Sub-pixel stages: x3 is one r=3 stage, x2^k is k stages of r=2."""
    if scale == 3:
        return [3]
    if scale >= 2 and scale & (scale - 1) == 0:
        return [2] * int(math.log2(scale))
    raise UserError(f"SRResNet: scale={scale} is not supported (data.scale): use 2, 3, 4 or 8")


class ResidualBlock(nn.Module):
    """conv3x3 → norm → act → conv3x3 → norm, plus the identity skip (Fig. 4).

    Every conv keeps its bias (PyTorch default): with BatchNorm the bias is redundant but this is
    what gives the reference count of 1,549,462 parameters at x4; without norm it is needed.
    """

    def __init__(self, *, num_features: int, norm_layer: NormLayer | None, act_layer: ActLayer) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.norm1 = _norm(norm_layer, num_features)
        self.act = act_layer()
        self.conv2 = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.norm2 = _norm(norm_layer, num_features)
        # Kaiming normal x 0.1 for the residual branch (as BasicSR's MSRResNet): near-identity
        # blocks at the start. With BatchNorm the scale is normalised away; without it (the
        # ablation) it is what keeps 16 un-normalised blocks stable.
        default_init_weights([self.conv1, self.conv2], scale=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        residual = self.norm2(self.conv2(self.act(self.norm1(self.conv1(x)))))
        return x + residual


class SubPixelUpsample(nn.Sequential):
    """conv3x3 (C → C·r²) → PixelShuffle(r) → act (Shi et al. 2016; SRGAN Fig. 4)."""

    def __init__(self, *, num_features: int, factor: int, act_layer: ActLayer) -> None:
        super().__init__(
            nn.Conv2d(num_features, num_features * factor**2, 3, padding=1),  # (B, C·r², H, W)
            nn.PixelShuffle(factor),  # (B, C, H·r, W·r)
            act_layer(),
        )


class SRResNet(nn.Module):
    """SRGAN generator G (Ledig et al. 2017, Fig. 4); about 1.55 M parameters at x4.

    Args:
        norm_layer: callable taking the channel count (class or functools.partial), or None for
            no normalisation (nn.Identity).
        act_layer: zero-argument callable returning the activation (nn.PReLU = one slope).
        scale: 2, 3, 4 or 8.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        num_features: int = 64,
        num_blocks: int = 16,
        scale: int = 4,
        norm_layer: NormLayer | None = nn.BatchNorm2d,
        act_layer: ActLayer = nn.PReLU,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.conv_first = nn.Conv2d(in_channels, num_features, 9, padding=4)
        self.act_first = act_layer()
        self.body = make_layer(
            lambda: ResidualBlock(num_features=num_features, norm_layer=norm_layer, act_layer=act_layer),
            num_blocks,
        )
        self.conv_body = nn.Conv2d(num_features, num_features, 3, padding=1)
        self.norm_body = _norm(norm_layer, num_features)
        self.upsample = nn.Sequential(
            *(
                SubPixelUpsample(num_features=num_features, factor=factor, act_layer=act_layer)
                for factor in _upsample_factors(scale)
            )
        )
        self.conv_last = nn.Conv2d(num_features, out_channels, 9, padding=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, h, w)
        feat = self.act_first(self.conv_first(x))  # (B, F, h, w)
        feat = feat + self.norm_body(self.conv_body(self.body(feat)))  # long skip
        return self.conv_last(self.upsample(feat))  # (B, C_out, h·s, w·s)
