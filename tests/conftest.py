"""Shared fixtures: the real Hydra config composed with tiny, CPU-sized overrides."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from sr_gan.config import register_resolvers
from tests.helpers import serve_folder

# One intra-op thread per process, here and in the CLI subprocesses (they inherit the variable), unless
# the caller chose. The tests' tensors are tiny: a second thread gains little on an idle machine, and
# on a shared 2-core one the threads spin-wait for each other (measured: a tiny RRDBNet forward took
# 1.5 s with 2 threads, 0.016 s with 1, under a load of 6).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# Small enough for 2 CPU cores, big enough to exercise every part.
TINY = [
    "model.generator.num_features=8",
    "model.generator.num_blocks=1",
    "data.patch_size=32",
    "data.batch_size=2",
    "data.num_workers=0",
    "trainer.accelerator=cpu",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "module.num_samples=1",
    "logger=csv",
    "allow_random_vgg=true",
    "demo_psnr_init=false",  # GAN tests start from random weights; tests/test_demo_stage.py checks the stage
]


@pytest.fixture(scope="session", autouse=True)
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Demo photos in a session cache, W&B offline and silent."""
    os.environ["SR_GAN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ["WANDB_SILENT"] = "true"
    register_resolvers()


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/train.yaml`` with TINY + ``overrides``, outputs under ``tmp_path``."""

    def _make(*overrides: str, tiny: bool = True) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=[*(TINY if tiny else []), *overrides],
                return_hydra_config=True,
            )
        HydraConfig.instance().set_config(cfg)
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path)
            cfg.paths.log_dir = str(tmp_path / "logs")
            if cfg.discriminator is not None and tiny:
                cfg.discriminator.num_features = 8
            if cfg.loss.perceptual is not None:
                cfg.loss.perceptual.pretrained = False  # no ImageNet weights offline
            del cfg.hydra
        return cfg

    return _make


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, folder) of an HTTP server on 127.0.0.1 serving a temporary folder."""
    folder = tmp_path / "served"
    folder.mkdir()
    with serve_folder(folder) as (url, _):
        yield url, folder


# A module of the user's own, outside sr_gan: a network, a loss term, and a function that is no network.
USER_MODULE = """
from torch import nn


class TinyNet(nn.Module):
    def __init__(self, *, scale: int = 2, act: object = None) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        self.act = nn.Identity() if act is None else act

    def forward(self, x):
        return self.act(self.body(x))


class TinyLoss(nn.L1Loss):
    def __init__(self, *, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight


def not_a_network(*args, **kwargs):
    return TinyNet()
"""


@pytest.fixture
def usernet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """``usernet`` (USER_MODULE), imported from ``tmp_path/userpkg`` put on sys.path, as a user's package
    on PYTHONPATH; SR_GAN_TRUST unset."""
    folder = tmp_path / "userpkg"
    folder.mkdir()
    (folder / "usernet.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv("SR_GAN_TRUST", raising=False)
    import usernet

    yield usernet
    sys.modules.pop("usernet", None)
