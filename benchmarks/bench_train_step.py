"""Our Lightning GAN training step against a plain PyTorch loop of the same math.

Both run the ESRGAN objective (L1 + VGG19 conv5_4 perceptual + RaGAN, VGG-style D, G EMA) with the
same networks, batches and optimizers; the ratio is the plain loop's median batch time over ours.
"""

from __future__ import annotations

import statistics
import time

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.timing import resolve_device, sync
from sr_gan.archs import RRDBNet, VGGStyleDiscriminator
from sr_gan.callbacks import BatchBudget
from sr_gan.lit import SRGANModule, make_ema, update_ema
from sr_gan.losses import PerceptualLoss, RelativisticGANLoss

SIZES = {  # name: (RRDBNet kwargs, patch, batch)
    "tiny": (dict(num_features=16, num_blocks=2, growth_channels=8), 32, 4),
    "paper": (dict(num_features=64, num_blocks=23, growth_channels=32), 128, 16),
}
WARMUP, BATCHES = 3, 13


class _Batches(Dataset):
    def __init__(self, n: int, patch: int, batch: int, scale: int = 4) -> None:
        self.hr = torch.rand(n * batch, 3, patch, patch)
        self.lr = torch.rand(n * batch, 3, patch // scale, patch // scale)

    def __len__(self) -> int:
        return len(self.hr)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"lr": self.lr[i], "hr": self.hr[i]}


class _BatchTimer(L.Callback):
    def __init__(self, device: torch.device) -> None:
        self.device, self.times, self.start = device, [], 0.0

    def on_train_batch_start(self, *args) -> None:
        sync(self.device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, *args) -> None:
        sync(self.device)
        self.times.append((time.perf_counter() - self.start) * 1e3)


def _parts(kwargs: dict, patch: int) -> dict:
    torch.manual_seed(0)
    return dict(
        generator=RRDBNet(**kwargs),
        discriminator=VGGStyleDiscriminator(input_size=patch),
        perceptual=PerceptualLoss(pretrained=False),
    )


def _ours(device: torch.device, kwargs: dict, patch: int, batch: int) -> float:
    p = _parts(kwargs, patch)
    module = SRGANModule(
        generator=p["generator"],
        discriminator=p["discriminator"],
        pixel_loss=nn.L1Loss(),
        pixel_weight=1e-2,
        perceptual_loss=p["perceptual"],
        adversarial_loss=RelativisticGANLoss(),
        adversarial_weight=5e-3,
        optimizer_g=lambda ps: torch.optim.Adam(ps, lr=1e-4),
        optimizer_d=lambda ps: torch.optim.Adam(ps, lr=1e-4),
        scale=4,
        ema_decay=0.999,
    )
    timer = _BatchTimer(device)
    trainer = L.Trainer(
        accelerator=device.type,
        devices=1,
        max_steps=-1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[BatchBudget(WARMUP + BATCHES), timer],
    )
    trainer.fit(module, DataLoader(_Batches(WARMUP + BATCHES, patch, batch), batch_size=batch))
    return statistics.median(timer.times[WARMUP:])


def _baseline(device: torch.device, kwargs: dict, patch: int, batch: int) -> float:
    p = _parts(kwargs, patch)
    g, d, percep = p["generator"].to(device), p["discriminator"].to(device), p["perceptual"].to(device)
    ema, l1, gan = make_ema(g), nn.L1Loss(), RelativisticGANLoss()
    opt_g, opt_d = torch.optim.Adam(g.parameters(), lr=1e-4), torch.optim.Adam(d.parameters(), lr=1e-4)
    times = []
    for item in DataLoader(_Batches(WARMUP + BATCHES, patch, batch), batch_size=batch):
        sync(device)
        start = time.perf_counter()
        lr, hr = item["lr"].to(device), item["hr"].to(device)
        sr = g(lr)
        d.requires_grad_(False)
        l_g = 1e-2 * l1(sr, hr) + percep(sr, hr) + 5e-3 * gan.generator_loss(d(hr).detach(), d(sr))
        opt_g.zero_grad(set_to_none=True)
        l_g.backward()
        opt_g.step()
        update_ema(ema, g, decay=0.999)
        d.requires_grad_(True)
        l_real, l_fake = gan.discriminator_loss(d(hr), d(sr.detach()))
        opt_d.zero_grad(set_to_none=True)
        (l_real + l_fake).backward()
        opt_d.step()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times[WARMUP:])


def run(device: str, size: str) -> list[dict]:
    dev = resolve_device(device)
    size = ("paper" if dev.type == "cuda" else "tiny") if size == "auto" else size
    kwargs, patch, batch = SIZES[size]
    base = _baseline(dev, kwargs, patch, batch)
    ours = _ours(dev, kwargs, patch, batch)
    return [
        {
            "name": f"ESRGAN train step ({size}: {batch}x{patch}px)",
            "device": str(dev),
            "ours_ms": ours,
            "baseline_ms": base,
            "baseline": "plain PyTorch loop",
        }
    ]
