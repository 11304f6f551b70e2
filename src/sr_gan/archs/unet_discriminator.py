"""U-Net discriminator with spectral normalisation (Real-ESRGAN, Wang et al. 2021, Sec. 3.4).

Gives a realness logit per pixel instead of one per image. Layout as the reference code (BasicSR
`UNetDiscriminatorSN`): conv0, conv1-3 down (4x4 stride 2), conv4-6 up (bilinear x2 + conv3x3,
optional skips), conv7-8 refine, conv9 → 1 channel. Spectral norm comes from
`torch.nn.utils.parametrizations`, so weights are stored as `convK.parametrizations.weight.original`
(the reference's older `torch.nn.utils.spectral_norm` stores `convK.weight_orig`, `weight_u`,
`weight_v`): `sr_gan.weights.discriminator.load_discriminator_state` reads the reference's files
(`RealESRGAN_x4plus_netD.pth`) with the keys renamed, and in eval mode the forward equals the
reference's (tests/test_realesrgan_weights.py).
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from sr_gan.errors import UserError


def _sn_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Module:
    return spectral_norm(nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=1, bias=False))


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2, inplace=True)


class UNetDiscriminatorSN(nn.Module):
    """Per-pixel raw logits (B, 1, H, W); H and W must be multiples of 8 (three 2x downsamplings)."""

    size_multiple = 8  # read by the start-up checks (sr_gan.config): data.patch_size must be a multiple

    def __init__(self, *, in_channels: int = 3, num_features: int = 64, skip_connection: bool = True) -> None:
        super().__init__()
        f = num_features
        self.skip_connection = skip_connection
        self.conv0 = nn.Conv2d(in_channels, f, 3, padding=1)
        self.conv1 = _sn_conv(f, f * 2, 4, stride=2)
        self.conv2 = _sn_conv(f * 2, f * 4, 4, stride=2)
        self.conv3 = _sn_conv(f * 4, f * 8, 4, stride=2)
        self.conv4 = _sn_conv(f * 8, f * 4, 3)
        self.conv5 = _sn_conv(f * 4, f * 2, 3)
        self.conv6 = _sn_conv(f * 2, f, 3)
        self.conv7 = _sn_conv(f, f, 3)
        self.conv8 = _sn_conv(f, f, 3)
        self.conv9 = nn.Conv2d(f, 1, 3, padding=1)

    def _up(self, x: torch.Tensor, conv: nn.Module, skip: torch.Tensor) -> torch.Tensor:
        """Bilinear x2 → conv → LeakyReLU, plus the encoder feature of the same size if enabled."""
        x = _lrelu(conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)))
        return x + skip if self.skip_connection else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        height, width = x.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise UserError(
                f"UNetDiscriminatorSN needs inputs whose height and width are multiples of {self.size_multiple}, "
                f"got {height}x{width}: make data.patch_size a multiple of {self.size_multiple}"
            )
        x0 = _lrelu(self.conv0(x))  # (B, F, H, W)
        x1 = _lrelu(self.conv1(x0))  # (B, 2F, H/2, W/2)
        x2 = _lrelu(self.conv2(x1))  # (B, 4F, H/4, W/4)
        x3 = _lrelu(self.conv3(x2))  # (B, 8F, H/8, W/8)
        x4 = self._up(x3, self.conv4, x2)  # (B, 4F, H/4, W/4)
        x5 = self._up(x4, self.conv5, x1)  # (B, 2F, H/2, W/2)
        x6 = self._up(x5, self.conv6, x0)  # (B, F, H, W)
        out = _lrelu(self.conv8(_lrelu(self.conv7(x6))))
        return self.conv9(out)  # (B, 1, H, W)
