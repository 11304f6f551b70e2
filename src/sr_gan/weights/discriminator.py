"""Discriminator weight files of the reference implementation (BasicSR / Real-ESRGAN), and our own.

BasicSR saves a network as ``{"params": state_dict}`` (`RealESRGAN_x4plus_netD.pth`). Its U-Net
discriminator wraps convs in the older ``torch.nn.utils.spectral_norm``, which stores each as
``convK.weight_orig`` (the raw weight), ``convK.weight_u`` and ``convK.weight_v`` (the power
iteration's vectors); ours uses ``torch.nn.utils.parametrizations.spectral_norm``, which stores the
same three tensors as ``convK.parametrizations.weight.original`` / ``.0._u`` / ``.0._v``. In eval
mode both divide the raw weight by sigma = u · (W v) with the stored u and v (no power iteration),
so renaming the keys gives the same forward.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from sr_gan.errors import UserError
from sr_gan.weights.files import is_safetensors, load_state_file

StateDict = dict[str, Tensor]

# old torch.nn.utils.spectral_norm suffix → torch.nn.utils.parametrizations.spectral_norm suffix
_SPECTRAL_NORM_KEYS = {
    "weight_orig": "parametrizations.weight.original",
    "weight_u": "parametrizations.weight.0._u",
    "weight_v": "parametrizations.weight.0._v",
}


def spectral_norm_to_parametrized(state: Mapping[str, Tensor]) -> StateDict:
    """Rename old-style spectral-norm keys (``weight_orig``/``_u``/``_v``) to the parametrized ones.

    Other keys (plain convs, biases, already parametrized keys) pass through unchanged.
    """
    renamed = {}
    for key, tensor in state.items():
        module, _, suffix = key.rpartition(".")
        if module and suffix in _SPECTRAL_NORM_KEYS:
            key = f"{module}.{_SPECTRAL_NORM_KEYS[suffix]}"
        renamed[key] = tensor
    return renamed


def load_discriminator_state(path: str | Path) -> StateDict:
    """The discriminator state dict stored in `path`, with parametrized spectral-norm keys.

    Understood: BasicSR files (``params``, else ``params_ema``), sr_gan Lightning checkpoints
    (``state_dict`` with ``discriminator.*`` keys) and plain state dicts; files are read without
    unpickling code (`load_state_file`).
    """
    loaded: Any = load_state_file(path)
    if is_safetensors(loaded):
        state = loaded["tensors"]
    elif isinstance(loaded.get("state_dict"), Mapping):
        prefix = "discriminator."
        state = {k.removeprefix(prefix): v for k, v in loaded["state_dict"].items() if k.startswith(prefix)}
        if not state:
            raise UserError(f"{path}: the checkpoint has no discriminator (no 'discriminator.*' keys)")
    elif "params" in loaded or "params_ema" in loaded:
        state = loaded["params"] if "params" in loaded else loaded["params_ema"]
    else:
        state = loaded
    if not state or not all(isinstance(value, Tensor) for value in state.values()):
        raise UserError(
            f"{path}: no discriminator weights found (top-level keys {list(loaded)[:5]}); expected a BasicSR "
            "file (params), an sr_gan checkpoint or a state dict"
        )
    return spectral_norm_to_parametrized(state)
