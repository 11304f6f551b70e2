"""Properties a broken pipeline would violate: LR/HR alignment after augmentation, the metrics'
border crop, and adversarial losses on logits small enough to work out by hand.

Planted defects these tests catch are listed in docs/testing.md.
"""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from skimage import data as skdata
from torchvision.io import write_png

from sr_gan.data import SRDataModule, paired_augment
from sr_gan.errors import UserError
from sr_gan.losses import RelativisticGANLoss, VanillaGANLoss
from sr_gan.metrics import psnr, ssim

SCALE = 4


# ---------------------------------------------------------------------------- alignment after augmentation
def dot_pair(row: int, col: int, lr_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 HR (3, 4s, 4s) dark but one bright SCALE x SCALE block, and LR with the bright pixel it maps to."""
    lr = torch.zeros(3, lr_size, lr_size, dtype=torch.uint8)
    lr[:, row, col] = 255
    return lr.repeat_interleave(SCALE, -2).repeat_interleave(SCALE, -1), lr


def dot_positions(hr: torch.Tensor, lr: torch.Tensor) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Per sample: (LR position of the bright pixel, top-left of HR's bright block divided by SCALE)."""
    pairs = []
    for h, low in zip(hr, lr, strict=True):  # (3, H, W), (3, h, w)
        (lr_rc,) = low[0].nonzero().tolist()  # exactly one bright LR pixel
        hr_rc = h[0].nonzero()  # (SCALE**2, 2): one bright block
        assert len(hr_rc) == SCALE**2
        top_left = hr_rc.min(0).values
        assert torch.equal(hr_rc.max(0).values - top_left, torch.tensor([SCALE - 1, SCALE - 1]))
        pairs.append((tuple(lr_rc), tuple((top_left // SCALE).tolist())))
    return pairs


def test_paired_augment_moves_the_hr_dot_to_the_lr_dot() -> None:
    hr, lr = dot_pair(1, 5)  # off every symmetry axis of the 8x8 LR: the 8 transforms put it in 8 places
    flips = torch.tensor(list(itertools.product([False, True], repeat=3)))  # (8, 3): each transform once
    aug_hr, aug_lr = paired_augment(hr.expand(8, -1, -1, -1), lr.expand(8, -1, -1, -1), flips)
    pairs = dot_positions(aug_hr, aug_lr)
    assert all(lr_rc == hr_rc for lr_rc, hr_rc in pairs), pairs
    assert len({lr_rc for lr_rc, _ in pairs}) == 8


class _DotProbe(L.LightningModule):
    """Records the (HR, LR) batches the Trainer hands to training_step, after on-device augmentation."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def training_step(self, batch, batch_idx):  # noqa: ANN001, ANN201
        self.seen.append((batch["hr"], batch["lr"]))
        return (self.weight - batch["lr"].mean()) ** 2

    def configure_optimizers(self):  # noqa: ANN201
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_paired_lr_files_stay_aligned_through_the_datamodule_under_a_trainer(tmp_path: Path) -> None:
    """HR/LR files with a dot, whole-image patches, augmentation on: every batch keeps the dots together."""
    hr, lr = dot_pair(2, 3)
    for folder, image, name in (("hr", hr, "a.png"), ("lr", lr, "ax4.png")):
        (tmp_path / folder).mkdir()
        write_png(image, str(tmp_path / folder / name))
    dm = SRDataModule(
        train_hr_dir=tmp_path / "hr", train_lr_dir=tmp_path / "lr", val_hr_dir=tmp_path / "hr",
        val_lr_dir=tmp_path / "lr", scale=SCALE, patch_size=32, batch_size=16, num_workers=0, seed=0,
    )  # fmt: skip
    probe = _DotProbe()
    trainer = L.Trainer(
        accelerator="cpu", max_steps=3, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
        trainer.fit(probe, datamodule=dm)
    hr_seen = (torch.cat([h for h, _ in probe.seen]) * 255).round().to(torch.uint8)
    lr_seen = (torch.cat([low for _, low in probe.seen]) * 255).round().to(torch.uint8)
    pairs = dot_positions(hr_seen, lr_seen)
    assert len(pairs) == 48 and all(lr_rc == hr_rc for lr_rc, hr_rc in pairs)
    assert len({lr_rc for lr_rc, _ in pairs}) > 4  # the batches were augmented


# ---------------------------------------------------------------------------- border crop in the metrics
CROP = 4
SIDES = {
    "top": (slice(None), slice(None, CROP), slice(None)),
    "bottom": (slice(None), slice(-CROP, None), slice(None)),
    "left": (slice(None), slice(None), slice(None, CROP)),
    "right": (slice(None), slice(None), slice(-CROP, None)),
}
JUST_INSIDE = {
    "top": (slice(None), CROP, slice(None)),
    "bottom": (slice(None), -CROP - 1, slice(None)),
    "left": (slice(None), slice(None), CROP),
    "right": (slice(None), slice(None), -CROP - 1),
}


@pytest.fixture(scope="module")
def photo_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """HR: a 40x48 crop of a photo (exact uint8 levels); SR: HR with mild noise everywhere."""
    hr = torch.from_numpy(skdata.astronaut()[100:140, 180:228].copy()).permute(2, 0, 1)[None].float() / 255
    noise = torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))
    return (hr + 0.02 * noise).clamp(0, 1), hr  # (1, 3, 40, 48) each


@pytest.mark.parametrize("side", list(SIDES))
@pytest.mark.parametrize("metric", [psnr, ssim], ids=["psnr", "ssim"])
def test_a_difference_in_the_border_changes_no_metric_one_inside_does(photo_pair, side: str, metric) -> None:
    sr, hr = photo_pair
    base = metric(sr, hr, crop_border=CROP)
    in_border, inside = sr.clone(), sr.clone()
    in_border[(0, *SIDES[side])] = 1 - in_border[(0, *SIDES[side])]  # invert the whole border strip
    inside[(0, *JUST_INSIDE[side])] = 1 - inside[(0, *JUST_INSIDE[side])]  # one line just inside it
    assert torch.equal(metric(in_border, hr, crop_border=CROP), base)
    assert abs(metric(inside, hr, crop_border=CROP) - base).item() > 1e-3
    # without the crop, the border strip counts
    assert abs(metric(in_border, hr, crop_border=0) - metric(sr, hr, crop_border=0)).item() > 1e-3


# ---------------------------------------------------------------------------- adversarial losses by hand
LN2 = math.log(2.0)


def test_vanilla_gan_at_logit_zero_is_log_two_everywhere() -> None:
    """sigma(0) = 1/2: -log D(x_r) = -log(1 - D(x_f)) = -log D(x_f) = log 2."""
    zeros = torch.zeros(3, 1)
    l_real, l_fake = VanillaGANLoss().discriminator_loss(zeros, zeros)
    assert (l_real.item(), l_fake.item()) == pytest.approx((LN2, LN2), rel=1e-6)
    assert VanillaGANLoss().generator_loss(None, zeros).item() == pytest.approx(LN2, rel=1e-6)


def test_ragan_on_a_two_sample_batch_by_hand() -> None:
    """real = (2, 0), fake = (0, 0): E[C(real)] = 1, E[C(fake)] = 0; softplus(x) = log(1 + e^x).

    l_d_real = 1/2 * mean(softplus(-(2 - 0)), softplus(-(0 - 0)))
    l_d_fake = 1/2 * mean(softplus(0 - 1), softplus(0 - 1))
    l_g      = 1/2 * [mean(softplus(2 - 0), softplus(0 - 0)) + mean(softplus(-(0 - 1)) twice)]
    """
    real, fake = torch.tensor([[2.0], [0.0]]), torch.zeros(2, 1)

    def sp(x: float) -> float:
        return math.log1p(math.exp(x))

    l_real, l_fake = RelativisticGANLoss().discriminator_loss(real, fake)
    l_g = RelativisticGANLoss().generator_loss(real, fake)
    assert l_real.item() == pytest.approx(0.5 * (sp(-2) + LN2) / 2, rel=1e-6)
    assert l_fake.item() == pytest.approx(0.5 * sp(-1), rel=1e-6)
    assert l_g.item() == pytest.approx(0.5 * ((sp(2) + LN2) / 2 + sp(1)), rel=1e-6)


def test_ragan_l_d_fake_trains_d_through_the_real_mean() -> None:
    """l_d_fake = 1/2 mean_j softplus(f_j - mean r): d/dr_i = -1/2 mean_j sigma(f_j - mean r) / n, not detached."""
    real = torch.tensor([1.5, -0.3, 0.2, 2.0], requires_grad=True)
    fake = torch.tensor([-1.0, 0.4, -2.5, 0.1], requires_grad=True)
    _, l_fake = RelativisticGANLoss().discriminator_loss(real, fake)
    l_fake.backward()
    f, r = fake.detach().numpy(), real.detach().numpy()
    sigma = 1 / (1 + np.exp(-(f - r.mean())))
    np.testing.assert_allclose(real.grad.numpy(), np.full(4, -0.5 * sigma.mean() / 4), rtol=1e-6)
    np.testing.assert_allclose(fake.grad.numpy(), 0.5 * sigma / 4, rtol=1e-6)


def _bad_arguments() -> dict[str, tuple[object, type[Exception], str]]:
    from sr_gan.callbacks import BatchBudget
    from sr_gan.data.sampler import PatchStream
    from sr_gan.imageio import list_images
    from sr_gan.lit.ema import EMAUpdater
    from sr_gan.lit.guard import NonFiniteGuard
    from sr_gan.metrics import crop_border, rgb_to_y
    from sr_gan.ops import imresize
    from sr_gan.weights.allowlist import check_generator_config

    x = torch.zeros(1, 3, 4, 4)
    two_layers = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    config = {"_target_": "sr_gan.archs.RRDBNet", "act_layer": {1: "x"}}
    return {
        "rgb_to_y grey": (
            lambda: rgb_to_y(x[:, :1]),
            ValueError,
            r"expected \(B, 3, H, W\) RGB, got shape \(1, 1, 4, 4\)",
        ),
        "crop_border -1": (lambda: crop_border(x, -1), ValueError, r"crop_border: n must be >= 0, got -1"),
        "imresize 2-d": (lambda: imresize(x[0, 0], scale=2), ValueError, r"x must be \(B, C, H, W\) or \(C, H, W\)"),
        "imresize scale 0": (lambda: imresize(x, scale=0), ValueError, r"scale must be positive, got 0"),
        "imresize size 0": (lambda: imresize(x, size=(0, 3)), ValueError, r"size must be positive, got \(0, 3\)"),
        "no images": (lambda: PatchStream(0, seed=1), ValueError, r"PatchStream needs at least one image"),
        "EMA of another net": (
            lambda: EMAUpdater(torch.nn.Linear(2, 2), two_layers),
            ValueError,
            r"the EMA copy and the generator differ in structure",
        ),
        "patience 0": (lambda: NonFiniteGuard(0), UserError, r"module\.nonfinite_patience=0 must be >= 1"),
        "budget 0": (lambda: BatchBudget(0), ValueError, r"trainer\.max_steps must be a positive number of batches"),
        "no folder": (
            lambda: list_images("/nowhere/hr"),
            FileNotFoundError,
            r"image folder /nowhere/hr does not exist",
        ),
        "non-text key": (
            lambda: check_generator_config(config),
            UserError,
            r"refused: its generator config has a non-text key 1 at act_layer$",
        ),
    }


@pytest.mark.parametrize("case", list(_bad_arguments()))
def test_public_functions_refuse_bad_arguments_naming_them(case: str) -> None:
    call, error, message = _bad_arguments()[case]
    with pytest.raises(error, match=message):
        call()
