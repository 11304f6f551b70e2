"""The values a user sets on the command line, checked at start-up before any data is read.

Hydra composes any string (``data.batch_size=abc``); without a check it fails minutes later, deep
inside a DataLoader or a Lightning loop. Each entry below states what a key allows; `validate`
reports the first violation in one line naming the key, the value and what is allowed. A key
absent from the config (another option of its group) is not checked.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sr_gan.errors import UserError


@dataclass(frozen=True)
class Rule:
    """What one key allows: a kind (``int``, ``float``: a number, ``bool``, ``str``), bounds
    (``low``/``high`` inclusive, ``above``/``below`` exclusive), a set of choices, ``null``."""

    kind: type
    low: float | None = None
    high: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple[Any, ...] | None = None
    nullable: bool = False

    def allows(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind is object:  # any type: the choices decide
            return value in self.choices
        if isinstance(value, bool) != (self.kind is bool):  # True is an int to Python, not to us
            return False
        if self.kind is float:
            if not isinstance(value, int | float) or not math.isfinite(value):
                return False
        elif not isinstance(value, self.kind):
            return False
        if self.choices is not None and value not in self.choices:
            return False
        bounds = (
            (self.low, operator.ge),
            (self.high, operator.le),
            (self.above, operator.gt),
            (self.below, operator.lt),
        )
        return all(bound is None or holds(value, bound) for bound, holds in bounds)

    def describe(self) -> str:
        if self.choices is not None:
            allowed = "one of " + ", ".join(_show(c) for c in self.choices)  # true, as typed: not True
        else:
            allowed = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[self.kind]
            limits = [
                f"{sign} {bound if isinstance(bound, int) else f'{bound:g}'}"  # an int exactly: 4294967295
                for bound, sign in ((self.low, ">="), (self.above, ">"), (self.high, "<="), (self.below, "<"))
                if bound is not None
            ]
            allowed += f" {' and '.join(limits)}" if limits else ""
        return allowed + (" or null" if self.nullable else "")


POSITIVE_INT, COUNT, POSITIVE = Rule(int, low=1), Rule(int, low=0), Rule(float, above=0)
MAX_SEED = 2**32 - 1  # the largest seed L.seed_everything takes (NumPy's); a larger one failed in a traceback
WEIGHT = Rule(float, low=0)

TRAIN: Mapping[str, Rule] = {
    "seed": Rule(int, low=0, high=MAX_SEED, nullable=True),
    "test": Rule(bool),  # switches read as `if cfg.x`: a typo'd value ("flase") would be a truthy string
    "allow_random_vgg": Rule(bool),
    "demo_psnr_init": Rule(bool),
    "require_init_from": Rule(bool),
    "data.scale": Rule(int, choices=(1, 2, 3, 4, 8)),
    "data.patch_size": POSITIVE_INT,
    "data.batch_size": POSITIVE_INT,
    "data.num_workers": COUNT,
    "data.cache": Rule(bool),
    "data.augment": Rule(bool),
    "data.rotate": Rule(bool),
    "data.verify": Rule(bool),
    "data.use_prepared": Rule(bool),
    "data.val_max_images": Rule(int, low=1, nullable=True),
    "data.val_crop": Rule(int, low=1, nullable=True),
    "data.max_image_pixels": Rule(int, low=1, nullable=True),
    "model.ema_decay": Rule(float, above=0, below=1, nullable=True),
    "model.init_from_ema": Rule(bool),
    "model.generator.num_features": POSITIVE_INT,
    "model.generator.num_blocks": POSITIVE_INT,
    "loss.pixel_weight": WEIGHT,
    "loss.perceptual_weight": WEIGHT,
    "loss.adversarial_weight": WEIGHT,
    "optim.generator.lr": POSITIVE,
    "optim.discriminator.lr": POSITIVE,
    "optim.scheduler.gamma": Rule(float, above=0, high=1),
    "optim.generator.fused": Rule(bool, nullable=True),
    "optim.discriminator.fused": Rule(bool, nullable=True),
    "optim.accumulate_batches": POSITIVE_INT,
    "model.compile": Rule(object, choices=(False, True, "inductor", "eager", "aot_eager", "cudagraphs")),
    "model.compile_mode": Rule(
        str, nullable=True, choices=("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    ),
    "model.channels_last": Rule(bool),
    "optim.clip_grad_norm.generator": Rule(float, above=0, nullable=True),
    "optim.clip_grad_norm.discriminator": Rule(float, above=0, nullable=True),
    "module.d_steps_per_g_step": POSITIVE_INT,
    "module.d_init_steps": COUNT,
    "module.nonfinite_patience": POSITIVE_INT,
    "module.num_samples": COUNT,
    "callbacks.snapshots.every": Rule(int, low=1, nullable=True),
    "callbacks.snapshots.keep": Rule(int, low=1, nullable=True),
    "trainer.max_steps": POSITIVE_INT,
    "trainer.val_check_interval": POSITIVE_INT,
    "trainer.log_every_n_steps": POSITIVE_INT,
    "trainer.num_nodes": POSITIVE_INT,
    # not Lightning's bf16-true / 16-true / 64-true: they cast the weights, the EMA and the optimizer
    # state (an EMA at decay 0.999 cannot move in bf16), and the step's inputs stay float32
    "trainer.precision": Rule(str, choices=("32-true", "32", "bf16-mixed", "16-mixed")),
}


TILING: Mapping[str, Rule] = {
    "tile": COUNT,
    "tile_overlap": COUNT,
    "tile_batch": POSITIVE_INT,
}

UPSCALE: Mapping[str, Rule] = {
    **TILING,
    "precision": Rule(str, choices=("fp32", "bf16", "fp16")),
    "format": Rule(str, choices=("png", "jpg", "jpeg", "webp")),
    "quality": Rule(int, low=1, high=100, nullable=True),
    "max_pixels": Rule(int, low=1, nullable=True),
    "suffix": Rule(str),
}

EVALUATE: Mapping[str, Rule] = {
    **TILING,
    "scale": Rule(int, choices=(1, 2, 3, 4, 8), nullable=True),
    "rgb": Rule(bool),
    "plot": Rule(bool),
    "lpips": Rule(object, choices=("auto", True, False)),
    "max_pixels": Rule(int, low=1, nullable=True),
}


EXPORT: Mapping[str, Rule] = {
    "ema": Rule(bool),
    # 10: the oldest opset with a Slice of dynamic ends, which the graph of an x1 / x2 RRDBNet needs
    # to crop its padded input to any size (9 exported them for multiples of 4 / 2 only);
    # 20: the TorchScript exporter's newest
    "onnx_opset": Rule(int, low=10, high=20),
    "onnx_check": Rule(bool),
}

INTERPOLATE: Mapping[str, Rule] = {
    "alpha": Rule(float, low=0, high=1),
    "ema": Rule(bool),
}


COMPARE: Mapping[str, Rule] = {
    "crop_size": POSITIVE_INT,
    "smoothing": Rule(float, low=0, below=1),  # the EMA weight of compare_figures.smooth: 1 divides by 0
    "stale_s": Rule(float, low=0),
    "plane": Rule(bool),
    "lpips": EVALUATE["lpips"],
}

DEGRADE: Mapping[str, Rule] = {
    "n": Rule(int, low=1, high=64),
    "seed": Rule(int, low=0),
    "scale": TRAIN["data.scale"],  # the scales a model is trained for
    "degradation.scale": TRAIN["data.scale"],  # ${scale} unless set on its own
    "crop": COUNT,
    "max_pixels": EVALUATE["max_pixels"],
}


def validate(cfg: DictConfig, rules: Mapping[str, Rule]) -> None:
    """Raise a one-line UserError for the first key of `rules` whose value is not allowed."""
    for key, rule in rules.items():
        if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            continue
        value = OmegaConf.select(cfg, key)
        if not rule.allows(value):
            raise UserError(f"{key}={_show(value)} is not allowed: {key} must be {rule.describe()}")


_ABSENT = object()


def _show(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
