"""Random draws for on-device degradations: per sample on the device, per batch on the host.

Per-sample draws are (B,) tensors made on the batch's device from the caller's generator: choices
are masks and indices, applied with `torch.where` and gathers, never read back to the host, so a
CUDA step does not wait for them.

A few values decide tensor shapes (the random resize factors of Real-ESRGAN): they must be Python
numbers. They come from a host `random.Random` seeded from the device generator's *state*, which
`Generator.get_state()` keeps on the host for CPU and CUDA alike (a CUDA generator is a seed and an
offset): reading it is not a device sync. Every batch advances the device generator, so the next
batch seeds a different host stream, and the same generator state always gives the same batch.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import torch
from torch import Tensor


def uniform(low: float, high: float, n: int, *, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """(n,) float32 uniform in [low, high)."""
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def chance(p: float, n: int, *, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """(n,) bool, each True with probability p."""
    return torch.rand(n, generator=generator, device=device) < p


def categorical(probs: Sequence[float], n: int, *, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """(n,) int64 indices into `probs` drawn with those probabilities (they need not sum to 1).

    Inverse-CDF on one uniform draw rather than `torch.multinomial`: the bin edges stay Python
    numbers (no host-to-device copy), each compared with the draw on the device.
    """
    total = sum(probs)
    edges = [sum(probs[: k + 1]) / total for k in range(len(probs) - 1)]
    u = torch.rand(n, generator=generator, device=device)
    index = torch.zeros(n, dtype=torch.int64, device=device)
    for edge in edges:
        index += u >= edge
    return index


def resolve_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """The generator that device draws use: the given one, else the device's default generator."""
    if generator is not None:
        return generator
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


def host_rng(generator: torch.Generator) -> random.Random:
    """A host random stream determined by the generator's current state (no device sync)."""
    state = generator.get_state().numpy().tobytes()  # host memory for CPU and CUDA generators
    return random.Random(int.from_bytes(hashlib.blake2b(state, digest_size=8).digest(), "little"))
