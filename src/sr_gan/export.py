"""Export a generator: safetensors weights with their config, optionally an ONNX graph.

    python -m sr_gan.export ckpt=PATH out=generator.safetensors [ema=false] [generator={...}]
        [onnx=generator.onnx] [onnx_check=true]

The safetensors file loads back with `sr_gan.weights.load_generator` (config from its metadata)
and cannot execute code when loaded, unlike a pickled checkpoint.
"""

import importlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from sr_gan.atomic import atomic_output
from sr_gan.cli import hydra_command
from sr_gan.config import path_arg
from sr_gan.errors import UserError, exit_on_user_error
from sr_gan.schema import EXPORT, validate
from sr_gan.weights import as_generator_config, load_generator, refuse_overwrite, save_generator_file

# (batch, height, width) of the ONNX check inputs: multiples of 4, where the graph of an x1 / x2
# RRDBNet pixel-unshuffles its input as it is, and odd sides, where it pads it first.
ONNX_CHECK_SIZES = ((1, 16, 16), (2, 24, 20), (1, 17, 15))


def export_safetensors(
    ckpt: str | Path,
    out: str | Path,
    *,
    prefer_ema: bool = True,
    generator_config: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Write the generator of `ckpt` (EMA copy when present and `prefer_ema`) to `out`, atomically,
    with whether it is the EMA copy in its metadata (when the file says).

    `generator_config` (the `generator` key) builds it instead of the config stored in the file, as
    in `load_generator`; the file written stores the config it was built from.
    """
    refuse_overwrite(out, ckpt)
    generator, info = load_generator(ckpt, prefer_ema=prefer_ema, generator_config=generator_config)
    save_generator_file(out, generator.state_dict(), config=info["config"], scale=info["scale"], ema=info["ema"])
    return generator, info


class EdgePadded(nn.Module):
    """`network`, which pixel-unshuffles its input by `network.unshuffle` (x1 / x2 RRDBNet), on any
    input size: the input is edge-padded (replicate) at the bottom and right to multiples of that
    factor and the output cropped back to `network.scale` times the input, as `sr_tiles` does.

    Written for the ONNX tracer: the pad is a constant `unshuffle - 1` rows and columns, and only
    the crops depend on the input's size (Slice with dynamic ends, opset >= 10), so the graph keeps
    its dynamic height and width. Sides that are multiples already get their input back unchanged.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network, self.align, self.scale = network, network.unshuffle, network.scale

    def forward(self, lr: torch.Tensor) -> torch.Tensor:  # (B, C, h, w)
        height, width = lr.shape[-2:]
        padded = F.pad(lr, (0, self.align - 1, 0, self.align - 1), mode="replicate")  # (B, C, h + a - 1, w + a - 1)
        rounded_h = (height + self.align - 1) // self.align * self.align
        rounded_w = (width + self.align - 1) // self.align * self.align
        sr = self.network(padded[..., :rounded_h, :rounded_w])  # (B, C_out, rounded_h·s, rounded_w·s)
        return sr[..., : height * self.scale, : width * self.scale]  # (B, C_out, h·s, w·s)


def any_size(generator: nn.Module) -> nn.Module:
    """`generator` as it runs on inputs of any height and width: `EdgePadded` when it
    pixel-unshuffles its input (attribute `unshuffle` > 1, as `sr_tiles` reads it), else itself."""
    return EdgePadded(generator) if getattr(generator, "unshuffle", 1) > 1 else generator


def export_onnx(generator: nn.Module, path: str | Path, *, in_channels: int = 3, opset: int = 17) -> None:
    """Write `generator` as ONNX with dynamic batch, height and width; a failed write (a full disk)
    is a one-line UserError naming `onnx=`.

    A generator that pixel-unshuffles its input (x1 / x2 RRDBNet) is exported as `any_size` of it,
    so the graph takes any height and width as the PyTorch tools do (it pads and crops itself).
    Uses the TorchScript-based exporter (`dynamo=False`): the torch.export-based default of
    torch >= 2.9 needs the `onnxscript` package, which is not a dependency; the legacy exporter
    handles pixel_unshuffle, nearest upsampling and dynamic axes exactly for these networks.
    """
    sample = torch.rand(1, in_channels, 16, 16)  # (B, C, h, w); any size, the axes are dynamic
    with warnings.catch_warnings(), atomic_output(path, key="onnx") as temporary:
        warnings.filterwarnings("ignore", ".*legacy TorchScript-based ONNX export", DeprecationWarning)
        # EdgePadded's crops end where the input's size says: nothing to fold, the graph is right
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        torch.onnx.export(
            any_size(generator),
            (sample,),
            str(temporary),
            dynamo=False,
            opset_version=opset,
            input_names=["lr"],
            output_names=["sr"],
            dynamic_axes={  # distinct names: the output is `scale` times larger than the input
                "lr": {0: "batch", 2: "height", 3: "width"},
                "sr": {0: "batch", 2: "sr_height", 3: "sr_width"},
            },
        )


@torch.no_grad()
def check_onnx(generator: nn.Module, path: str | Path, *, in_channels: int = 3, atol: float = 1e-4) -> float:
    """Max |onnxruntime - PyTorch| over `ONNX_CHECK_SIZES` random inputs; a one-line UserError above `atol`.
    PyTorch runs `any_size(generator)`: sides that are not multiples of its unshuffle are padded."""
    import onnxruntime  # optional dependency (dev extra), only needed for this check

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    network, worst = any_size(generator), 0.0
    for batch, height, width in ONNX_CHECK_SIZES:
        lr = torch.rand(batch, in_channels, height, width)  # (B, C, h, w)
        (sr,) = session.run(None, {"lr": lr.numpy()})  # (B, C, h·s, w·s)
        worst = max(worst, float(np.abs(sr - network(lr).numpy()).max()))
    if worst > atol:
        raise UserError(f"{path}: onnxruntime differs from PyTorch by {worst:.2e} > {atol:.0e}")
    return worst


def check_onnx_tools(*, onnx: bool, onnx_check: bool) -> None:
    """Before anything is written: `onnx=` needs the optional `onnx` package (torch's exporter
    serializes with it), `onnx_check=true` an ONNX file to check and `onnxruntime` (both in the dev extra)."""
    if onnx_check and not onnx:
        raise UserError("onnx_check=true checks an ONNX file: set onnx=generator.onnx too, or leave onnx_check=false")
    needed = [("onnx", "onnx=<file>", "leave onnx unset")] if onnx else []
    if onnx and onnx_check:
        needed.append(("onnxruntime", "onnx_check=true", "set onnx_check=false"))
    for module, key, instead in needed:
        try:
            importlib.import_module(module)
        except ImportError:
            raise UserError(
                f"{key} needs the {module} package, which is not installed: pip install {module} "
                f"(or the dev extra), or {instead}"
            ) from None


@hydra_command("export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    validate(cfg, EXPORT)
    generator_config = as_generator_config(cfg.generator)
    ckpt = path_arg(cfg, "ckpt", example="last.ckpt", must_exist=True, url=True)
    out = path_arg(cfg, "out", example="generator.safetensors", suffix=".safetensors", output=True)
    onnx = path_arg(cfg, "onnx", example="generator.onnx", suffix=".onnx", output=True) if cfg.onnx else None
    if onnx:
        refuse_overwrite(onnx, ckpt, out, key="onnx")
    check_onnx_tools(onnx=onnx is not None, onnx_check=cfg.onnx_check)
    generator, info = export_safetensors(ckpt, out, prefer_ema=cfg.ema, generator_config=generator_config)
    weights = {True: "EMA weights", False: "non-EMA weights", None: "weights"}[info["ema"]]
    unknown = " (it does not say whether they are an EMA)" if info["ema"] is None else ""
    target = info["config"]["_target_"]
    print(f"wrote {out}: {target} x{info['scale']}, {weights} from a {info['source']} file{unknown}")
    if onnx:
        in_channels = info["config"].get("in_channels", 3)
        try:
            export_onnx(generator, onnx, in_channels=in_channels, opset=cfg.onnx_opset)
        except UserError as err:  # the safetensors file stays: it is whole and loads on its own
            raise UserError(f"{err}; {out} was written and is whole") from None
        print(f"wrote {onnx} (opset {cfg.onnx_opset})")
        if cfg.onnx_check:
            difference = check_onnx(generator, onnx, in_channels=in_channels)
            print(f"onnxruntime vs PyTorch: max abs diff {difference:.2e}")


if __name__ == "__main__":
    main()
