"""Finding the generator weights in a checkpoint or weight file, and building the generator from them.

Understood containers (what `load_state_file` returns):
- sr_gan Lightning checkpoints: `state_dict` with `generator.*` and, with EMA, `generator_ema.*`
  keys, plus `sr_gan = {"generator": <Hydra config>, "scale": int}`;
- safetensors files written by `save_generator_file` (config and scale in the metadata);
- BasicSR files `{"params": ..., "params_ema": ...}`;
- plain state dicts with our keys, or either original ESRGAN layout (see `sr_gan.weights.keys`).

A config found in a file is checked by `check_generator_config` as soon as it is read, so every
loader (including `model.init_from`, which never builds it) refuses a file whose config would
call anything but our generators.
"""

import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.nn.modules.module import register_module_parameter_registration_hook
from torch.overrides import TorchFunctionMode

from sr_gan.errors import UserError
from sr_gan.weights.allowlist import check_generator_config
from sr_gan.weights.files import EMA_KEY, GENERATOR_KEY, SCALE_KEY, is_safetensors, load_state_file, non_finite_keys
from sr_gan.weights.keys import StateDict, count_blocks, is_esrgan_old, to_our_keys

_SHOWN_KEYS = 5  # how many offending keys an error message lists


@dataclass(frozen=True)
class GeneratorWeights:
    """Generator weights found in a file, with what the file says about them."""

    state: StateDict  # keys in the file's own layout
    source: str  # lightning | basicsr | esrgan-old | safetensors | state_dict
    ema: bool | None  # the EMA copy was picked; None: the file does not say (a plain state dict)
    config: dict[str, Any] | None = None  # stored Hydra config of the generator, if any
    scale: int | None = None


def find_generator_weights(obj: Mapping[str, Any], *, prefer_ema: bool = True) -> GeneratorWeights:
    """Pick the generator weights out of a loaded file; EMA weights win when `prefer_ema`.

    Weights holding NaN/Inf are refused: they would only make black images or NaN files.
    """
    weights = _pick_generator_weights(obj, prefer_ema=prefer_ema)
    if bad := non_finite_keys(weights.state):
        raise UserError(f"{len(bad)} tensors hold NaN/Inf (e.g. {bad[0]}): the file is damaged or from a diverged run")
    return weights


def _pick_generator_weights(obj: Mapping[str, Any], *, prefer_ema: bool) -> GeneratorWeights:
    """The generator weights of a loaded file, as `find_generator_weights`, unchecked."""
    if is_safetensors(obj):
        config = _stored_config(_metadata(obj["metadata"], GENERATOR_KEY, json.loads))
        scale = _metadata(obj["metadata"], SCALE_KEY, int)
        ema = _metadata(obj["metadata"], EMA_KEY, _flag)  # None in files exported before it was stored
        return GeneratorWeights(obj["tensors"], "safetensors", ema, config, scale)
    if isinstance(obj.get("state_dict"), Mapping):
        state_dict = obj["state_dict"]
        ema = prefer_ema and any(key.startswith("generator_ema.") for key in state_dict)
        prefix = "generator_ema." if ema else "generator."
        state = {key.removeprefix(prefix): value for key, value in state_dict.items() if key.startswith(prefix)}
        if not state:
            raise UserError("checkpoint 'state_dict' has no 'generator.*' keys; is it an sr_gan checkpoint?")
        stored = obj.get("sr_gan", {})
        if not isinstance(stored, Mapping):
            raise UserError(f"checkpoint key 'sr_gan' holds a {type(stored).__name__}, expected a mapping")
        config = _stored_config(stored.get("generator"))
        return GeneratorWeights(_state_dict(state, "state_dict"), "lightning", ema, config, stored.get("scale"))
    if "params" in obj or "params_ema" in obj:
        ema = "params_ema" in obj and (prefer_ema or "params" not in obj)
        key = "params_ema" if ema else "params"
        return GeneratorWeights(_state_dict(obj[key], key), "basicsr", ema)
    if obj and all(isinstance(value, Tensor) for value in obj.values()):
        return GeneratorWeights(dict(obj), "esrgan-old" if is_esrgan_old(obj) else "state_dict", None)
    raise UserError(
        f"no generator weights found (top-level keys {list(obj)[:_SHOWN_KEYS]}); expected an sr_gan "
        "checkpoint, a BasicSR file (params / params_ema), an ESRGAN release file or a state dict"
    )


def _metadata(metadata: Mapping[str, str], key: str, parse: Callable[[str], Any]) -> Any:
    """`parse` of the safetensors metadata value under `key` (None when absent); one line when it fails."""
    if key not in metadata:
        return None
    try:
        return parse(metadata[key])
    except (ValueError, RecursionError) as err:  # json.JSONDecodeError is a ValueError; deep nesting recurses
        raise UserError(
            f"its metadata key {key} is damaged ({err}): export it again with `python -m sr_gan.export`"
        ) from None


def _flag(text: str) -> bool:
    """A metadata flag written by `json.dumps(bool)`; ValueError for any other text."""
    if text not in ("true", "false"):
        raise ValueError(f"{text!r} is neither true nor false")
    return text == "true"


def _state_dict(value: Any, key: str) -> StateDict:
    """`value` (found under the file's `key`) if it maps names to tensors; else a one-line UserError."""
    if not isinstance(value, Mapping):
        found = f"a {type(value).__name__}"
    elif bad := [k for k, v in value.items() if not (isinstance(k, str) and isinstance(v, Tensor))]:
        found = f"{bad[0]!r}: {type(value[bad[0]]).__name__}"
    else:
        return dict(value)
    raise UserError(
        f"'{key}' holds {found}, not a state dict (names to tensors): the file is damaged or not a weight file"
    )


def _stored_config(config: Any) -> dict[str, Any] | None:
    """A config read from a file, after `check_generator_config`; None stays None."""
    return None if config is None else check_generator_config(config)


def load_generator_weights(path: str | Path, *, prefer_ema: bool = True) -> GeneratorWeights:
    """`find_generator_weights` of the file at `path`, its state renamed to our (BasicSR) keys;
    errors name the file. Builds nothing."""
    loaded = load_state_file(path)
    try:
        weights = find_generator_weights(loaded, prefer_ema=prefer_ema)
        return replace(weights, state=to_our_keys(weights.state))
    except ValueError as err:
        raise UserError(f"{path}: {err}") from err


# The fix offered when a file's config is missing or wrong (the `generator` key of evaluate, upscale,
# export and interpolate).
PASS_CONFIG = "pass the network's config, e.g. 'generator={_target_:sr_gan.archs.SRResNet,scale:4}'"


def infer_rrdbnet_config(state: StateDict) -> dict[str, Any]:
    """RRDBNet config read off the tensor shapes of a state dict with our keys (files without config).

    num_features = conv_first's output channels; num_blocks = number of `body.{i}` indices;
    growth_channels = body.0.rdb1.conv1's output channels; out_channels = conv_last's output
    channels. The scale follows from how much the input was pixel-unshuffled before conv_first:
    conv_first in-channels / out_channels = 1 → x4 (x8 when conv_up3 exists), 4 → x2, 16 → x1
    (3 / 12 / 48 for RGB). Assumes in_channels == out_channels, as in every released model.
    """
    needed = ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_last.weight")
    if missing := [key for key in needed if key not in state]:
        raise UserError(f"cannot infer the RRDBNet config, keys {missing} are missing: {PASS_CONFIG}")
    num_features, first_in = state["conv_first.weight"].shape[:2]
    channels = state["conv_last.weight"].shape[0]
    scales = {1: 8 if "conv_up3.weight" in state else 4, 4: 2, 16: 1}
    if first_in % channels or first_in // channels not in scales:
        raise UserError(
            f"conv_first takes {first_in} channels for {channels} output channels, which is no RRDBNet "
            f"scale (x1, x2, x4 take 16x, 4x, 1x): {PASS_CONFIG}"
        )
    return {
        "_target_": "sr_gan.archs.RRDBNet",
        "in_channels": channels,
        "out_channels": channels,
        "num_features": num_features,
        "num_blocks": count_blocks(state),
        "growth_channels": state["body.0.rdb1.conv1.weight"].shape[0],
        "scale": scales[first_in // channels],
    }


def fit_problems(network: nn.Module, state: StateDict) -> str:
    """'' when `state` loads strictly into `network`; else its missing, unexpected and mis-shaped keys
    on one line, a few of each, the mis-shaped ones with their shapes in the file and in `network`."""
    expected = network.state_dict()
    wrong = [key for key in state if key in expected and state[key].shape != expected[key].shape]
    problems = {
        "missing": [key for key in expected if key not in state],
        "unexpected": [key for key in state if key not in expected],
        "wrong shape": [
            f"{key} {tuple(state[key].shape)} in the file, {tuple(expected[key].shape)} here" for key in wrong
        ],
    }
    return "; ".join(f"{len(keys)} {kind} {keys[:_SHOWN_KEYS]}" for kind, keys in problems.items() if keys)


def with_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """`config` with its target's constructor defaults filled in and its target named by where it is
    defined, so that two configs of one network compare equal however many defaults each spells
    out (an inferred RRDBNet config names its channels, a stored one may leave them out) and by
    whichever import path (top-level arguments; nested configs compare as written). Only for
    configs that passed the allowlist."""
    target = get_object(config["_target_"])
    parameters = inspect.signature(target).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return defaults | dict(config) | {"_target_": f"{target.__module__}.{target.__qualname__}"}


def _build(config: dict[str, Any], state: StateDict) -> nn.Module:
    """`instantiate(config)` once a build on the meta device (shapes, no memory) fits `state`.

    A file's config decides how large a network is built before its weights are checked: a small
    crafted file asking for `num_features: 60000` or `num_blocks: 10**7` would exhaust the memory
    (killed without a word) or hang. So the network is first built on the meta device, stopped
    past twice the file's tensor count in parameters (`_meta_probe`), and built for real only when
    the probe fits the file: then it is as large as the file. A network that cannot be built on
    the meta device (a user's own one whose constructor needs values) skips the check.
    """
    probe = _meta_probe(config, tensors=len(state))
    network = probe if probe is not None and fit_problems(probe, state) else _instantiate(config)
    if not isinstance(network, nn.Module):
        raise UserError(f"{config['_target_']} built a {type(network).__name__}, not a network")
    if problems := fit_problems(network, state):
        raise UserError(f"weights do not fit {config['_target_']}: {problems}; {PASS_CONFIG}")
    return network


def _meta_probe(config: dict[str, Any], *, tensors: int) -> nn.Module | None:
    """`config` built on the meta device; a UserError once it registers more parameters than twice the
    file's `tensors` (a network that fits registers at most one per tensor, two where a parametrization
    moves it); None when the build fails otherwise or gives no network (the real build then says
    why, or builds a user's network)."""
    registered, budget = 0, 2 * tensors

    def count(*_: object) -> None:
        nonlocal registered
        registered += 1
        if registered > budget:
            raise RuntimeError("over budget")  # stops the constructor; Hydra wraps it

    handle = register_module_parameter_registration_hook(count)
    try:
        with torch.device("meta"), _AllOnMeta():
            probe = instantiate(config)
    except Exception:
        if registered > budget:
            raise UserError(
                f"its config builds a larger {config['_target_']} than its weights (more than {budget} parameters "
                f"for {tensors} tensors in the file): the config does not describe them; {PASS_CONFIG}"
            ) from None
        return None
    finally:
        handle.remove()
    return probe if isinstance(probe, nn.Module) else None


class _AllOnMeta(TorchFunctionMode):
    """Every tensor made in the block with a device given is made on the meta device instead (inside
    ``torch.device("meta")``, which places the others): that context keeps a given device, so
    `device: cpu` in a layer's config (as a keyword, or among its `_args_`, which the layer passes
    on as a keyword) would allocate that layer's tensors for real during the probe."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if kwargs and kwargs.get("device") is not None:
            kwargs = {**kwargs, "device": "meta"}
        return func(*args, **(kwargs or {}))


def _instantiate(config: dict[str, Any]) -> Any:
    """`instantiate(config)`; a constructor that refuses the config is a one-line UserError."""
    try:
        return instantiate(config)
    except Exception as err:  # Hydra wraps the constructor's error; keep one line of it
        raise UserError(f"cannot build {config['_target_']} from its config: {' '.join(str(err).split())}") from err


def as_generator_config(value: Mapping[str, Any] | DictConfig | None) -> dict[str, Any] | None:
    """The `generator` key of evaluate, upscale, export and interpolate as a plain dict, or None; a one-line UserError
    when it is no network config (the CLIs call it at start-up, before any file is read)."""
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if value is not None and not (isinstance(value, Mapping) and "_target_" in value):
        raise UserError(f"generator={value} is not a network config: {PASS_CONFIG}, or leave it null")
    return None if value is None else dict(value)


def load_generator(
    path: str | Path,
    *,
    prefer_ema: bool = True,
    generator_config: Mapping[str, Any] | DictConfig | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the generator stored in `path` and load its weights strictly; returned in eval mode.

    The config is `generator_config` when given, else the one stored in the file, else inferred
    (`infer_rrdbnet_config`). Returns the generator and `{"scale", "config", "source", "ema"}`
    (`ema` None when the file does not say).
    """
    generator_config = as_generator_config(generator_config)
    loaded = load_state_file(path)
    try:
        weights = find_generator_weights(loaded, prefer_ema=prefer_ema)
        state = to_our_keys(weights.state)
        config = dict(generator_config or weights.config or infer_rrdbnet_config(state))
        scale = config.get("scale", weights.scale)
        if scale is None:
            raise UserError("the scale is unknown: add it to the generator config ('generator={...,scale:4}')")
        if isinstance(scale, bool) or not isinstance(scale, int | str) or not str(scale).isdigit():
            raise UserError(f"its scale {scale!r} is no whole number: the file is damaged or not an sr-gan file")
        generator = _build(config, state)
    except ValueError as err:
        raise UserError(f"{path}: {err}") from err
    generator.load_state_dict(state, strict=True)
    info = {"scale": int(scale), "config": config, "source": weights.source, "ema": weights.ema}
    return generator.eval(), info
