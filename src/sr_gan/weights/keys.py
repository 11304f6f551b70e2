"""Renaming RRDBNet state-dict keys between our (BasicSR) names and the two original ESRGAN layouts.

Pure dict → dict functions; the tensors are passed through untouched. Module names per layout:

| ours (BasicSR)              | ESRGAN release code ("old")   | 2018 release file ("sequential") |
|-----------------------------|-------------------------------|----------------------------------|
| conv_first                  | conv_first                    | model.0                          |
| body.{i}.rdb{k}.conv{j}     | RRDB_trunk.{i}.RDB{k}.conv{j} | model.1.sub.{i}.RDB{k}.conv{j}.0 |
| conv_body                   | trunk_conv                    | model.1.sub.{num_blocks}         |
| conv_up{n}                  | upconv{n}                     | model.{3n}                       |
| conv_hr                     | HRconv                        | model.{3N + 2}                   |
| conv_last                   | conv_last                     | model.{3N + 4}                   |

(N = number of upsampling stages, 2 at x4.) The 2018 file is an nn.Sequential: conv, a shortcut
block holding the RRDBs and the trunk conv, then per stage [upsample, conv, LeakyReLU], then
HRconv, LeakyReLU, conv_last, so x4 gives model.3, model.6, model.8, model.10.
"""

import re
from dataclasses import dataclass

from torch import Tensor

from sr_gan.errors import UserError

StateDict = dict[str, Tensor]


@dataclass(frozen=True)
class KeyLayout:
    """How one layout names RRDBNet modules (parameter suffixes `.weight`/`.bias` are shared)."""

    head: dict[str, str]  # our module name → this layout's name, for the non-body convs
    body_pattern: str  # regex of a body conv; groups: (block, rdb, conv)
    body_format: str  # str.format template taking (block, rdb, conv)


_UPSAMPLE_STAGES = (1, 2, 3)  # conv_up3 exists at x8 only

OURS = KeyLayout(
    head={name: name for name in ("conv_first", "conv_body", "conv_hr", "conv_last")}
    | {f"conv_up{n}": f"conv_up{n}" for n in _UPSAMPLE_STAGES},
    body_pattern=r"body\.(\d+)\.rdb([123])\.conv([1-5])",
    body_format="body.{}.rdb{}.conv{}",
)

ESRGAN_OLD = KeyLayout(
    head={"conv_first": "conv_first", "conv_body": "trunk_conv", "conv_hr": "HRconv", "conv_last": "conv_last"}
    | {f"conv_up{n}": f"upconv{n}" for n in _UPSAMPLE_STAGES},
    body_pattern=r"RRDB_trunk\.(\d+)\.RDB([123])\.conv([1-5])",
    body_format="RRDB_trunk.{}.RDB{}.conv{}",
)


def sequential_layout(*, num_blocks: int, num_upsample: int) -> KeyLayout:
    """The 2018 nn.Sequential layout; its indices depend on the block and upsampling counts."""
    return KeyLayout(
        head={"conv_first": "model.0", "conv_body": f"model.1.sub.{num_blocks}"}
        | {f"conv_up{n}": f"model.{3 * n}" for n in range(1, num_upsample + 1)}
        | {"conv_hr": f"model.{3 * num_upsample + 2}", "conv_last": f"model.{3 * num_upsample + 4}"},
        body_pattern=r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0",
        body_format="model.1.sub.{}.RDB{}.conv{}.0",
    )


def rename_keys(state: StateDict, source: KeyLayout, target: KeyLayout) -> StateDict:
    """Rename every key of `state` from the `source` layout to the `target` layout."""
    source_to_ours = {theirs: ours for ours, theirs in source.head.items()}
    renamed = {}
    for key, tensor in state.items():
        module, _, parameter = key.rpartition(".")
        if module in source_to_ours:
            new_module = target.head[source_to_ours[module]]
        elif match := re.fullmatch(source.body_pattern, module):
            new_module = target.body_format.format(*match.groups())
        else:
            raise UserError(f"state-dict key '{key}' is not an RRDBNet key of the expected layout")
        renamed[f"{new_module}.{parameter}"] = tensor
    return renamed


def esrgan_old_to_ours(state: StateDict) -> StateDict:
    """RRDB_trunk / trunk_conv / upconv / HRconv names (ESRGAN release code) → ours."""
    return rename_keys(state, ESRGAN_OLD, OURS)


def ours_to_esrgan_old(state: StateDict) -> StateDict:
    """Ours → RRDB_trunk / trunk_conv / upconv / HRconv names (ESRGAN release code)."""
    return rename_keys(state, OURS, ESRGAN_OLD)


def sequential_to_ours(state: StateDict) -> StateDict:
    """model.N names (2018 RRDB_ESRGAN_x4.pth) → ours.

    The trunk conv is the one `model.1.sub.{n}` entry that is not an RRDB, so n = num_blocks; the
    convs after the shortcut block are the N upsampling convs plus HRconv and conv_last.
    """
    trunk = [int(m[1]) for key in state if (m := re.fullmatch(r"model\.1\.sub\.(\d+)\.weight", key))]
    tail = {int(m[1]) for key in state if (m := re.fullmatch(r"model\.(\d+)\.weight", key)) and m[1] != "0"}
    if len(trunk) != 1 or len(tail) < 3:
        raise UserError(
            "state dict with model.N keys is not the 2018 ESRGAN layout: expected one trunk conv "
            "'model.1.sub.<num_blocks>.weight' and model.3 ... model.<last> convs after it"
        )
    return rename_keys(state, sequential_layout(num_blocks=trunk[0], num_upsample=len(tail) - 2), OURS)


def ours_to_sequential(state: StateDict) -> StateDict:
    """Ours → model.N names (2018 RRDB_ESRGAN_x4.pth)."""
    num_upsample = sum(f"conv_up{n}.weight" in state for n in _UPSAMPLE_STAGES)
    return rename_keys(state, OURS, sequential_layout(num_blocks=count_blocks(state), num_upsample=num_upsample))


def count_blocks(state: StateDict) -> int:
    """Number of RRDBs in a state dict with our names (distinct `body.{i}` indices)."""
    return len({key.split(".")[1] for key in state if key.startswith("body.")})


def is_esrgan_old(state: StateDict) -> bool:
    """True for either original ESRGAN layout (model.N or RRDB_trunk names)."""
    return "model.0.weight" in state or any(key.startswith("RRDB_trunk.") for key in state)


def to_our_keys(state: StateDict) -> StateDict:
    """Rename either original ESRGAN layout to ours; other state dicts are returned as they are."""
    if not is_esrgan_old(state):
        return state
    return sequential_to_ours(state) if "model.0.weight" in state else esrgan_old_to_ours(state)
