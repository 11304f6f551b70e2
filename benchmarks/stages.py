"""The training stages that the step benchmarks time, built from the project's experiment configs.

A stage is what ``python -m sr_gan.train experiment=<name>`` trains: its generator, discriminator,
loss terms and weights, optimizers, learning-rate schedules and EMA, composed from conf/ with
Hydra and instantiated as `SRGANModule` (a random VGG19: it costs what the ImageNet one costs).

Sizes:
  dry    8-channel 1-block generators, batch 2 of 32 px: the GPU check's dry run, code paths only.
  tiny   16-channel 2-block generators, 8-channel discriminators, batch 4 of 32 px: CPU seconds.
  cpu    the full networks at batch 1 and half the papers' HR patch (64 px for the RRDBNet
         stages, 48 px for the SRResNet ones): the real networks, seconds per step on a CPU.
  paper  the papers' full networks at batch 16, HR 128 px (ESRGAN) / 96 px (SRGAN).

Configs (speed switches, cumulative as a user would turn them on): fp32, bf16 (bf16-mixed),
bf16+cl (+ channels_last), bf16+cl+compile (+ torch.compile of G, D and the VGG), bf16+cl+graphs (compiled
in mode reduce-overhead: CUDA graphs), bf16+cl+graphs+fused (+ fused Adam; the H200's profile gave the
for-each Adam 13-16 % of the kernel time, but counted its record_function span as a kernel too),
bf16+cl+graphs+ddp (CUDA graphs under trainer=ddp's strategy, one process: its wrappers' hooks and
reducer around the compiled networks; what a cluster run adds before any communication).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from sr_gan.config import register_resolvers
from sr_gan.lit import SRGANModule

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

STAGES = {  # name: (experiment config, what it trains)
    "esrgan": ("esrgan_x4", "ESRGAN stage: RRDBNet + L1 + VGG19 conv5_4 + RaGAN, VGG-style D, EMA"),
    "psnr_rrdb": ("rrdb_psnr_x4", "PSNR stage: RRDBNet + L1, EMA"),
    "srgan": ("srgan_x4", "SRGAN stage: SRResNet + VGG54 + GAN, SRGAN D"),
    "psnr_srresnet": ("srresnet_x4", "PSNR stage: SRResNet + MSE"),
}
SIZES = ("dry", "tiny", "cpu", "paper")
SMALL = {  # size: (generator features, blocks, RRDB growth, discriminator features, batch, HR patch)
    "dry": (8, 1, 8, 8, 2, 32),
    "tiny": (16, 2, 8, 8, 4, 32),
}


@dataclass(frozen=True)
class Config:
    """One rung of the speed-switch ladder: the trainer precision and the module's switches."""

    name: str
    precision: str  # Lightning trainer.precision
    channels_last: bool = False
    compile: bool | str = False  # True: inductor; a backend name (the dry run uses "eager")
    compile_mode: str | None = None  # inductor's mode (model.compile_mode)
    fused: bool = False  # fused Adam for G and D (optim.*.fused)
    ddp: bool = False  # ours under trainer=ddp's strategy (PlayerDDPStrategy), one process

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16-mixed" else None


CONFIGS = {
    "fp32": Config("fp32", "32-true"),
    "bf16": Config("bf16", "bf16-mixed"),
    "bf16+cl": Config("bf16+cl", "bf16-mixed", channels_last=True),
    "bf16+cl+compile": Config("bf16+cl+compile", "bf16-mixed", channels_last=True, compile=True),
    "bf16+cl+graphs": Config(
        "bf16+cl+graphs", "bf16-mixed", channels_last=True, compile=True, compile_mode="reduce-overhead"
    ),
    "bf16+cl+graphs+fused": Config(
        "bf16+cl+graphs+fused",
        "bf16-mixed",
        channels_last=True,
        compile=True,
        compile_mode="reduce-overhead",
        fused=True,
    ),
    "bf16+cl+graphs+ddp": Config(
        "bf16+cl+graphs+ddp", "bf16-mixed", channels_last=True, compile=True, compile_mode="reduce-overhead", ddp=True
    ),
}


@dataclass
class Stage:
    """A stage at a size: its composed config and the shape of its batches."""

    name: str
    size: str
    cfg: DictConfig
    batch: int
    patch: int  # HR side
    scale: int
    _built: dict[str, torch.nn.Module | None] | None = field(default=None, repr=False)

    @property
    def title(self) -> str:
        return STAGES[self.name][1]

    @property
    def has_discriminator(self) -> bool:
        return self.cfg.discriminator is not None

    def module(self, config: Config) -> SRGANModule:
        """A fresh `SRGANModule` of this stage with the switches of `config`, holding copies of the
        same seeded networks every time (ours and the plain loop start from identical weights)."""
        with open_dict(self.cfg):
            self.cfg.model.channels_last = config.channels_last
            self.cfg.model.compile = config.compile
            self.cfg.model.compile_mode = config.compile_mode
            for player in ("generator", "discriminator"):
                self.cfg.optim[player].fused = config.fused or None
        copies = {key: copy.deepcopy(network) for key, network in self._networks().items()}
        return instantiate(self.cfg.module, **copies)

    def _networks(self) -> dict[str, torch.nn.Module | None]:
        """Generator, discriminator and perceptual loss, built once (seed 0): VGG19 takes seconds."""
        if self._built is None:
            torch.manual_seed(0)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*RANDOM VGG19")
                self._built = {
                    "generator": instantiate(self.cfg.model.generator),
                    "discriminator": instantiate(self.cfg.discriminator),
                    "perceptual_loss": instantiate(self.cfg.loss.perceptual),
                }
        return self._built

    def batches(self, count: int, device: torch.device, *, distinct: int = 4) -> list[dict[str, torch.Tensor]]:
        """`count` batches on `device`, cycling over `distinct` random ones (no loader in the way)."""
        g = torch.Generator().manual_seed(0)
        lr_side = self.patch // self.scale
        made = [
            {
                "lr": torch.rand(self.batch, 3, lr_side, lr_side, generator=g).to(device),  # (B, 3, h, w)
                "hr": torch.rand(self.batch, 3, self.patch, self.patch, generator=g).to(device),  # (B, 3, H, W)
            }
            for _ in range(min(distinct, count))
        ]
        return [made[i % len(made)] for i in range(count)]


def compose_experiment(experiment: str, overrides: tuple[str, ...] = ()) -> DictConfig:
    """conf/train.yaml with `experiment=...`: offline (random VGG, no init_from needed), CPU-safe."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[f"experiment={experiment}", "allow_random_vgg=true", "logger=none", *overrides],
        )
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        if cfg.loss.perceptual is not None:
            cfg.loss.perceptual.pretrained = False  # no download: a random VGG19 costs the same
    return cfg


def build_stage(name: str, size: str) -> Stage:
    """Stage `name` (a key of STAGES) at `size` (one of SIZES)."""
    if name not in STAGES or size not in SIZES:
        raise ValueError(f"unknown stage {name!r} or size {size!r}: stages {list(STAGES)}, sizes {list(SIZES)}")
    cfg = compose_experiment(STAGES[name][0])
    with open_dict(cfg):
        generator, data = cfg.model.generator, cfg.data
        if size in SMALL:
            features, blocks, growth, d_features, data.batch_size, data.patch_size = SMALL[size]
            generator.num_features, generator.num_blocks = features, blocks
            if "growth_channels" in generator:
                generator.growth_channels = growth
            if cfg.discriminator is not None:
                cfg.discriminator.num_features = d_features
        elif size == "cpu":
            data.batch_size, data.patch_size = 1, data.patch_size // 2
    return Stage(name=name, size=size, cfg=cfg, batch=data.batch_size, patch=data.patch_size, scale=data.scale)
