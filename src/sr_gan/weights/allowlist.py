"""Which generator configs a weight file may ask us to build: our networks and a few torch layers.

A file's config is handed to `hydra.utils.instantiate`, which calls whatever `_target_` names: a
`.safetensors` metadata block or a `.ckpt`'s `sr_gan` key from a stranger could name
`pathlib.Path.write_text` or `os.system`. Hydra's own target policy is a blocklist and lets such
targets through, so before instantiating we walk the whole config (nested mappings and lists,
`_args_` included) and accept only

- `_target_`s naming a generator of `sr_gan.archs` or a norm / activation layer of `torch.nn`
  (compared as strings: nothing is imported to check a name);
- Hydra's instantiation keys `_target_`, `_partial_`, `_args_`, `_recursive_`, `_convert_`;
- no `${...}` interpolation anywhere (Hydra resolves them, and resolvers such as `oc.create`
  could build new nodes after this check).

A network of the user's own (a `_target_` outside sr_gan) is allowed by naming its class, exactly as
the config spells it, in the environment: `SR_GAN_TRUST=mynet.EDSRLite` (comma-separated for several).
Only the names listed are added, each checked to be an `nn.Module` class when a file asks for it, so a
stranger's file still cannot call anything else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from hydra.utils import get_object
from torch import nn

from sr_gan.archs import RRDBNet, SRResNet
from sr_gan.errors import UserError

# Every generator of sr_gan.archs (tests/test_crafted_files.py fails when archs gains a network
# that is neither listed here nor known to be something else).
GENERATORS: tuple[type[nn.Module], ...] = (RRDBNet, SRResNet)

# Layers a generator takes as `norm_layer` / `act_layer` factories (conf/model/*.yaml use
# BatchNorm2d and PReLU); their constructors only take sizes and numbers.
LAYERS: tuple[type[nn.Module], ...] = (
    nn.BatchNorm2d,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Tanh,
    nn.Sigmoid,
)

TRUST_VARIABLE = "SR_GAN_TRUST"  # the user's own network classes a file may build, comma-separated

HYDRA_KEYS = frozenset({"_target_", "_partial_", "_args_", "_recursive_", "_convert_"})

# How deep a config may nest (ours: 3 levels, generator → norm_layer → _args_). A deeper one, or one
# that holds itself (a pickle can build that), would end the check or Hydra in a RecursionError.
MAX_DEPTH = 32


def _names(cls: type, public_module: str) -> set[str]:
    """The spellings of a class a config may use: its public path and its defining module's."""
    return {f"{public_module}.{cls.__name__}", f"{cls.__module__}.{cls.__qualname__}"}


GENERATOR_TARGETS: frozenset[str] = frozenset().union(*(_names(cls, "sr_gan.archs") for cls in GENERATORS))
ALLOWED_TARGETS: frozenset[str] = GENERATOR_TARGETS.union(*(_names(cls, "torch.nn") for cls in LAYERS))


def check_generator_config(config: Any) -> dict[str, Any]:
    """Return `config` if it only builds an allowed generator; else raise a one-line UserError.

    The message names the refused target or key and where it sits (e.g. `norm_layer._target_`).
    """
    if not isinstance(config, Mapping) or not isinstance(config.get("_target_"), str):
        raise UserError(f"refused: its generator config is not a mapping with a _target_ (got {_short(config)})")
    if config["_target_"] not in GENERATOR_TARGETS and not _trusted(config["_target_"]):
        raise _refused(config["_target_"], "_target_", "is not an sr_gan.archs generator")
    _check_node(config, "")
    return dict(config)


def _trusted(target: str) -> bool:
    """Whether `target` is one of the user's own network classes listed in $SR_GAN_TRUST.

    Only a listed name is imported, and it must be an `nn.Module` class: a one-line UserError
    otherwise (a listed function, such as `os.system`, would let a file call it)."""
    if target not in {name.strip() for name in os.environ.get(TRUST_VARIABLE, "").split(",") if name.strip()}:
        return False
    try:
        found = get_object(target)
    except Exception as err:  # Hydra's ImportError wrapper: the user's package is not importable here
        raise UserError(
            f"{TRUST_VARIABLE} lists {target}, which cannot be imported ({' '.join(str(err).split())}): "
            "put its package on PYTHONPATH"
        ) from None
    if not (isinstance(found, type) and issubclass(found, nn.Module)):
        raise UserError(f"{TRUST_VARIABLE} lists {target}, which is no nn.Module class: list only your own networks")
    return True


def _check_node(node: Any, where: str, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise UserError(
            f"refused: its generator config nests deeper than {MAX_DEPTH} levels (at {_short(where)}), or holds "
            "itself: the file is damaged or crafted; use a file you trust"
        )
    if isinstance(node, Mapping):
        for key, value in node.items():
            at = f"{where}.{key}" if where else str(key)
            if not isinstance(key, str):
                raise UserError(f"refused: its generator config has a non-text key {key!r} at {where or 'the top'}")
            if key.startswith("_") and key.endswith("_") and key not in HYDRA_KEYS:
                raise UserError(f"refused: its generator config has the key {at}, which is no Hydra instantiation key")
            # (a mapping or list as the target is no name, and unhashable: `in` would raise a TypeError)
            if key == "_target_" and not (isinstance(value, str) and (value in ALLOWED_TARGETS or _trusted(value))):
                raise _refused(value, at, "is not an sr_gan.archs generator or an allowed torch.nn layer")
            _check_node(value, at, depth + 1)
    elif isinstance(node, list | tuple):
        for index, item in enumerate(node):
            _check_node(item, f"{where}[{index}]", depth + 1)
    elif isinstance(node, str) and "${" in node:
        raise UserError(f"refused: its generator config has an interpolation {node!r} at {where}")


def _refused(target: Any, where: str, why: str) -> UserError:
    name = _short(target)
    own = f"; if you made this file and {name} is your own network class, allow it: export {TRUST_VARIABLE}={name}"
    return UserError(
        f"refused: its generator config asks to call {name} (at {where}), which {why}; "
        "a file may only build sr_gan's own networks (it may have been crafted to run code)"
        + (own if isinstance(target, str) else "")
    )


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."
