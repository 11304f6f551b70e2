"""Perceptual scores for the perception–distortion plane (Blau & Michaeli, CVPR 2018).

PSNR rewards the blurry average of plausible textures; GAN generators trade some of it for
realism (SRGAN Sec. 1, ESRGAN Sec. 3.4 network interpolation). Showing that trade-off needs a
second axis that follows human judgement:

- LPIPS (Zhang et al., CVPR 2018; AlexNet backbone; lower = closer to HR). We use torchmetrics'
  port of the `lpips` package: its linear layers ship inside torchmetrics and its backbone is
  torchvision's ImageNet AlexNet, read from the torch hub cache. Nothing is ever downloaded: when
  those weights are absent LPIPS is unavailable and no value is reported.
- VIF-P on Y (pixel-domain Visual Information Fidelity, Sheikh & Bovik 2006; torchmetrics'
  `visual_information_fidelity`; higher = more fidelity), the fallback that needs no weights.
  No maintained no-reference index works offline here (scikit-image has no NIQE; pyiqa downloads
  its NIQE/PI parameters), so the fallback is full-reference. Blau & Michaeli count VIF among
  the *distortion* measures: a PSNR-vs-VIF plot compares two fidelity scores, and the axis label
  says so. Only LPIPS gives a perceptual axis.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchmetrics.functional.image import visual_information_fidelity
from torchmetrics.image import LearnedPerceptualImagePatchSimilarity
from torchvision.models import AlexNet_Weights

from sr_gan.metrics import protocol_images

LPIPS_LABEL = "LPIPS (AlexNet, lower = better)"
VIF_LABEL = "VIF-P on Y (full-reference fidelity, not a perceptual index; higher = better)"
VIF_MIN_SIZE = 41  # torchmetrics' VIF filters need 41 x 41 pixels


def lpips_backbone_path() -> Path:
    """Where torchvision keeps the ImageNet AlexNet that LPIPS needs (`$TORCH_HOME/hub/checkpoints`)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(AlexNet_Weights.DEFAULT.url)


def load_lpips(device: torch.device) -> LearnedPerceptualImagePatchSimilarity | None:
    """LPIPS-Alex on `device`, or None when its backbone weights are not on this machine."""
    if not lpips_backbone_path().is_file():
        return None
    return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True, reduction="none").to(device)


@torch.no_grad()
def lpips_score(metric: LearnedPerceptualImagePatchSimilarity, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Per-image LPIPS (B,) of RGB images in [0, 1], (B, 3, H, W), computed in float32."""
    metric.reset()
    metric.update(sr.float().clamp(0, 1), hr.float().clamp(0, 1))
    return metric.compute().reshape(-1)


@torch.no_grad()
def vif_y(sr: torch.Tensor, hr: torch.Tensor, *, crop_border: int) -> torch.Tensor:
    """Per-image VIF-P (B,) of RGB images in [0, 1] on the BT.601 Y channel of their 8-bit levels
    (VIF's noise variance 2.0 assumes 0..255), after cropping `crop_border` pixels, as PSNR/SSIM;
    NaN when the crop is under 41 x 41."""
    sr_y, hr_y = protocol_images(sr, hr, crop=crop_border)  # (B, 1, H, W) in 16..235
    if min(sr_y.shape[-2:]) < VIF_MIN_SIZE:
        return torch.full((sr.shape[0],), float("nan"), dtype=torch.float64)
    return visual_information_fidelity(sr_y, hr_y, reduction="none")
