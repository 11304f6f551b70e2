"""README's "Your own network, loss or discriminator", followed literally: its config files, a module of
the user's own outside sr_gan, both training stages and the tools that rebuild the network."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.helpers import SRC, run_module

pytestmark = pytest.mark.slow

README = SRC.parent / "README.md"

# The classes the README's configs name, as small as the test needs (their arguments are the README's).
MYNET = """
import torch
from torch import nn


class EDSRLite(nn.Module):
    def __init__(self, *, scale: int = 4, n_feats: int = 64, n_resblocks: int = 16) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, n_feats, 3, padding=1)
        self.body = nn.Sequential(*[nn.Conv2d(n_feats, n_feats, 3, padding=1) for _ in range(n_resblocks)])
        self.tail = nn.Sequential(nn.Conv2d(n_feats, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, x):
        features = self.head(x)
        return self.tail(features + self.body(features))


class FFTL1Loss(nn.Module):
    def __init__(self, *, fft_weight: float = 0.05) -> None:
        super().__init__()
        self.fft_weight = fft_weight

    def forward(self, sr, hr):
        spectrum = (torch.fft.rfft2(sr) - torch.fft.rfft2(hr)).abs().mean()
        return nn.functional.l1_loss(sr, hr) + self.fft_weight * spectrum


class PatchD(nn.Module):
    def __init__(self, *, num_features: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, num_features, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(num_features, 1, 3))

    def forward(self, x):
        return self.net(x)
"""
SMALL = ["model.generator.n_feats=4", "model.generator.n_resblocks=1", "discriminator.num_features=4"]
TINY_RUN = ["data.patch_size=32", "data.batch_size=2", "logger=csv", "trainer.enable_progress_bar=false"]


def _readme_setup(work: Path) -> None:
    """The README section's config files under `work` (each block names its path), and the module."""
    section = README.read_text().split("## Your own network, loss or discriminator")[1].split("\n## ")[0]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 4
    for block in blocks:
        path = work / re.search(r"# (conf/\S+\.yaml)", block)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(block)
    (work / "mynet.py").write_text(MYNET)


def test_the_readme_recipe_trains_a_network_of_ones_own_in_two_stages_and_upscales_with_it(tmp_path: Path) -> None:
    work, runs = tmp_path / "srwork", tmp_path / "runs"
    _readme_setup(work)
    env = {"PYTHONPATH": str(work)}  # run_module puts src before it
    stage = ["-cd", str(work / "conf"), "model=mynet", "~experiment", *TINY_RUN, f"paths.log_dir={runs}"]
    psnr = run_module(
        "sr_gan.train",
        *stage,
        "loss=fft",
        *SMALL[:2],
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        f"hydra.run.dir={runs / 's1'}",
        env=env,
        cwd=tmp_path,
    )
    assert psnr.returncode == 0, psnr.stderr[-2000:]
    best = runs / "s1" / "checkpoints" / "best.ckpt"
    gan = run_module(
        "sr_gan.train",
        *stage,
        "loss=fft_gan",
        *SMALL,
        f"model.init_from={best}",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        f"hydra.run.dir={runs / 's2'}",
        env=env | {"SR_GAN_TRUST": "mynet.EDSRLite"},
        cwd=tmp_path,
    )
    assert gan.returncode == 0, gan.stderr[-2000:]
    recorded = yaml.safe_load((runs / "s2" / "config.yaml").read_text())["environment"]
    assert recorded["sr_gan_trust"] == "mynet.EDSRLite"  # what the run's checkpoints need to load
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(photos / "a.png")
    last = runs / "s2" / "checkpoints" / "last.ckpt"
    upscale = [f"ckpt={last}", f"input={photos}", f"out_dir={tmp_path / 'x4'}"]
    refused = run_module("sr_gan.upscale", *upscale, env=env, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.strip().endswith("export SR_GAN_TRUST=mynet.EDSRLite")
    done = run_module("sr_gan.upscale", *upscale, env=env | {"SR_GAN_TRUST": "mynet.EDSRLite"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert Image.open(tmp_path / "x4" / "a_x4.png").size == (40, 48)
