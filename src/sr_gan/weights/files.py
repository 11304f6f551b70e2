"""Reading weight files without unpickling code, finding non-finite weights, and writing them atomically.

Torch files are read with `torch.load(weights_only=True)`: only tensors and plain containers are
rebuilt, so a file that carries pickled Python objects (which could run code while loading) is
refused with `UnsafeCheckpointError` instead of being executed.
"""

import json
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from pickle import UnpicklingError
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from sr_gan.atomic import atomic_output
from sr_gan.errors import UserError

# Metadata keys of the safetensors files we write (safetensors metadata is str → str).
GENERATOR_KEY = "sr_gan.generator"  # JSON of the resolved Hydra config of the generator
SCALE_KEY = "sr_gan.scale"
EMA_KEY = "sr_gan.ema"  # "true" / "false": the weights are the EMA generator; absent: not known

# How a torch file starts: a zip archive (torch.save's format since 1.6) or a pickle (legacy format).
ZIP_MAGIC, PICKLE_PROTOCOL = b"PK\x03\x04", b"\x80"


class UnsafeCheckpointError(UserError):
    """A torch file needs more than `weights_only=True` allows, i.e. it holds pickled objects."""


def load_state_file(
    path: str | Path, *, mmap: bool = False, refusal: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """Load a weight file as plain containers of tensors, without unpickling arbitrary objects.

    The format is read off the file's first bytes (`file_format`), whatever its name: safetensors
    gives `{"tensors": {name: Tensor}, "metadata": {str: str}}`, a torch file is read with
    `torch.load(map_location="cpu", weights_only=True)` and returned as is; anything else is a
    one-line UserError (a `.safetensors` name gets safetensors' own reason). With `mmap` a
    zip-format torch file is mapped rather than read (a tensor's bytes are read when it is used):
    a look at a checkpoint's keys and metadata costs milliseconds, not the whole file. `refusal`
    words the error for a caller that wants one kind of file (given "it starts with ..." or "it is
    empty"); by default it names the weight files every tool takes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    with open(path, "rb") as file:
        head = file.read(9)
    found = file_format(head, path.stat().st_size)
    if found == "safetensors" or (found is None and path.suffix == ".safetensors"):
        return _load_safetensors(path)
    if found is None:
        start = f"it starts with {head[:8]!r}" if head else "it is empty"
        raise UserError(
            refusal(start)
            if refusal is not None
            else f"{path}: not a weight file (neither a torch checkpoint nor safetensors; {start}): "
            "pass an sr_gan .ckpt, an exported .safetensors or a .pth of weights; download or export it again"
        )
    return _load_torch(path, mmap=mmap and head.startswith(ZIP_MAGIC))  # the legacy pickle format cannot map


def file_format(head: bytes, size: int) -> str | None:
    """The format of a file of `size` bytes that starts with `head` (at least 9 bytes of it).

    Returns "torch" for a zip archive or a pickle (torch's legacy format), "safetensors" for an
    8-byte little-endian header length N that fits the file followed by a JSON object, else None.
    """
    header_size = int.from_bytes(head[:8], "little")
    if len(head) >= 9 and head[8:9] == b"{" and 2 <= header_size <= size - 8:
        return "safetensors"  # tested first: a header length whose low byte is 0x80 starts like a pickle
    if head.startswith((ZIP_MAGIC, PICKLE_PROTOCOL)):
        return "torch"
    return None


def _load_safetensors(path: Path) -> dict[str, Any]:
    """`{"tensors", "metadata"}` of a safetensors file; a damaged one is a one-line UserError."""
    try:
        with safe_open(path, framework="pt") as handle:  # one open for the tensors and the metadata
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
            return {"tensors": tensors, "metadata": handle.metadata() or {}}
    except (SafetensorError, OSError) as err:  # empty, truncated, or not safetensors at all
        reason = " ".join(str(err).split()) or type(err).__name__
        raise UserError(
            f"{path}: not a valid safetensors file ({reason}): it may be truncated or an error page "
            "saved under this name; download or export it again"
        ) from None


def _check_stored(path: Path) -> None:
    """Refuse a zip-format torch file holding a compressed record, in one line: torch.save stores each
    record as is, and torch.load inflates a deflated one whole, so a small file can claim any size
    (a 390 KB file gave a 400 MB tensor: a decompression bomb, killed or aborted without a word)."""
    try:
        with zipfile.ZipFile(path) as archive:
            packed = [info for info in archive.infolist() if info.compress_type != zipfile.ZIP_STORED]
    except zipfile.BadZipFile:
        return  # no zip after all: torch.load says why
    if packed:
        claimed = sum(info.file_size for info in packed)
        raise UserError(
            f"{path}: refused to load, its record {packed[0].filename} is compressed ({len(packed)} such, "
            f"{claimed:,} bytes once inflated), which torch.save never writes: it may be a decompression bomb; "
            "download or export it again from a source you trust"
        )


def _load_torch(path: Path, *, mmap: bool = False) -> dict[str, Any]:
    """`torch.load(weights_only=True)` of `path`; the pickled-objects refusal only for a rejected global."""
    _check_stored(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except UnpicklingError as err:
        if found := re.search(r"Unsupported global: GLOBAL (\S+)", str(err)):
            raise UnsafeCheckpointError(
                f"{path}: refused to load, torch.load(weights_only=True) rejects it (it needs {found[1]}): it may "
                "hold pickled Python objects, which run code when unpickled; convert it with a tool you trust, "
                "or export it with `python -m sr_gan.export`"
            ) from err
        reason = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        raise UserError(
            f"{path}: torch.load(weights_only=True) cannot read it ({reason[1] if reason else 'not a torch file'}): "
            "it is damaged or not a torch weight file; download or export it again"
        ) from err
    except Exception as err:  # torch raises KeyError, RuntimeError, EOFError ... on foreign files
        raise UserError(f"{path}: not a torch or safetensors weight file ({type(err).__name__}: {err})") from err
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: holds a {type(loaded).__name__}, expected a dict of weights")
    _check_extents(path, loaded)
    return loaded


def _check_extents(path: Path, loaded: dict[str, Any]) -> None:
    """Refuse, in one line, a tensor that spans more bytes than its storage holds: torch.save keeps a
    view's strides, so a 1.5 KB file can hold a stride-0 "tensor" of 3e9 floats, which the first
    operation on it (the NaN check) allocates in full. Walks every container (a loop once)."""
    pending, seen = [loaded], set()
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, torch.Tensor) and node.layout == torch.strided:
            spans, holds = node.numel() * node.element_size(), node.untyped_storage().nbytes()
            if spans > holds:
                raise UserError(
                    f"{path}: refused to load, a tensor of shape {tuple(node.shape)} spans {spans:,} bytes from "
                    f"{holds:,} in the file (a view repeating them): it may be crafted to exhaust the memory; "
                    "download or export it again from a source you trust"
                )
        elif isinstance(node, Mapping):
            pending.extend(node.values())
        elif isinstance(node, list | tuple | set):
            pending.extend(node)


def is_safetensors(loaded: Any) -> bool:
    """True for `load_state_file`'s form of a safetensors file (whatever the file was named)."""
    return isinstance(loaded, Mapping) and "tensors" in loaded and "metadata" in loaded


def non_finite_keys(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of `state` that hold a NaN or an Inf (one host sync)."""
    floats = [(key, value) for key, value in state.items() if torch.is_tensor(value) and value.is_floating_point()]
    if not floats:
        return []
    finite = torch.stack([value.isfinite().all() for _, value in floats]).tolist()
    return [key for (key, _), ok in zip(floats, finite, strict=True) if not ok]


def save_generator_file(
    path: str | Path,
    state: Mapping[str, torch.Tensor],
    *,
    config: dict[str, Any],
    scale: int,
    ema: bool | None = None,
) -> None:
    """Write a generator state dict as safetensors, its config (plain containers) and scale as
    metadata, and `ema` (whether the weights are an EMA generator) unless it is not known (None).

    Written beside `path` and renamed over it: a write that fails (a full disk) leaves an earlier
    file at `path` as it was, and is a one-line UserError. The bytes go through a Python file, as
    the checkpoint writer's do, so a failed write is its OSError (safetensors' own `save_file`
    reports it as a SafetensorError whose text would have to be parsed).
    """
    tensors = {key: tensor.detach().cpu().contiguous() for key, tensor in state.items()}
    metadata = {"format": "pt", GENERATOR_KEY: json.dumps(config), SCALE_KEY: str(scale)}
    if ema is not None:
        metadata[EMA_KEY] = json.dumps(ema)  # "true" / "false"
    data = safetensors_bytes(tensors, metadata=metadata)  # an error here (shared memory) is a bug: traceback
    with atomic_output(path) as temporary:
        temporary.write_bytes(data)


def refuse_overwrite(out: str | Path, *inputs: str | Path, key: str = "out") -> None:
    """Raise a UserError naming the config `key` if writing `out` would replace one of the `inputs`."""
    if any(Path(out).resolve() == Path(source).resolve() for source in inputs):
        raise UserError(f"{key}={out} is also an input: choose another output file")
