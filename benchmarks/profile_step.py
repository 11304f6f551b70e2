"""What bounds a training step: one batch of ours under ``torch.profiler``, and the host time of
what our step adds to the plain loop.

`StepProfiler` records one batch (started and stopped by the step timer's callback) and sums it up:
the top kernels (CUDA; CPU operators on a CPU) with their share, the kernel classes, the share of
the step's wall time during which the GPU ran kernels, and one sentence on what bounds the step.
`host_timers` wraps the methods our step adds (logging, guard, toggling, schedules) to time them.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from lightning.pytorch.core.module import LightningModule
from torch.profiler import ProfilerActivity, profile

from benchmarks.timing import sync
from sr_gan.lit import SRGANModule
from sr_gan.lit.guard import NonFiniteGuard

# kernel / operator name fragments (lower case) -> class; the first matching class wins
KERNEL_CLASSES = (
    ("optimizer and EMA (foreach)", ("multi_tensor", "foreach", "adam", "lerp")),
    ("convolution and matmul", ("conv", "gemm", "xmma", "cudnn", "cutlass", "wgrad", "dgrad", "mkldnn", "aten::mm")),
    ("batch norm", ("batch_norm", "batchnorm", "bn_fw", "bn_bw", "welford")),
    ("copies and layout", ("copy", "memcpy", "memset", "cat", "nchw", "nhwc", "transpose", "pixel_shuffle")),
    ("reductions and losses", ("reduce", "sum", "mean", "norm", "l1_loss", "mse_loss")),
    ("elementwise and activations", ("elementwise", "vectorized", "relu", "prelu", "add", "mul", "where", "sigmoid")),
)
HOST_BOUND_BELOW = 0.8  # GPU busy share under which a step is host-bound (Python, launches)


def kernel_class(name: str) -> str:
    lowered = name.lower()
    return next((label for label, parts in KERNEL_CLASSES if any(p in lowered for p in parts)), "other")


def _device_us(event: Any) -> float:
    return float(event.self_device_time_total)  # microseconds on the device (torch >= 2.4)


class StepProfiler:
    """``torch.profiler`` around one batch: `start`/`stop` from the step timer, then `summary`."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        self.profile = profile(activities=activities)
        self.wall, self.running = 0.0, False

    def start(self) -> None:
        sync(self.device)
        self.profile.start()
        self._start, self.running = time.perf_counter(), True

    def stop(self) -> None:
        """Stop recording; nothing if not recording (a fit that failed mid-batch is stopped after)."""
        if not self.running:
            return
        self.running = False
        sync(self.device)
        self.wall = time.perf_counter() - self._start
        self.profile.stop()

    def summary(self, top: int = 10) -> dict[str, Any]:
        """Top kernels, kernel classes, GPU busy share and the bound, as plain JSON values."""
        events = list(self.profile.key_averages())
        if self.device.type == "cuda":
            from torch.autograd import DeviceType

            # kernels, copies and sets: not the GPU spans of record_function ranges (torch >= 2.5 marks them;
            # Optimizer.step#Adam.step, Torch-Compiled Region), which cover kernels counted already
            events = [
                e for e in events if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)
            ]
            time_us = _device_us
        else:
            time_us = lambda e: float(e.self_cpu_time_total)  # noqa: E731
        total = sum(time_us(e) for e in events) or 1.0
        ranked = sorted(events, key=time_us, reverse=True)
        classes: dict[str, float] = {}
        for event in events:
            classes[kernel_class(event.key)] = classes.get(kernel_class(event.key), 0.0) + time_us(event) / total
        kernels = [
            {"name": e.key[:160], "calls": e.count, "ms": time_us(e) / 1e3, "share": time_us(e) / total}
            for e in ranked[:top]
        ]
        busy = total / 1e6 / self.wall if self.device.type == "cuda" and self.wall > 0 else None
        return {
            "device": self.device.type,
            "step_ms": self.wall * 1e3,
            "kernel_ms": total / 1e3,
            "gpu_busy": busy,
            "launches": sum(e.count for e in events) if self.device.type == "cuda" else None,
            "classes": dict(sorted(classes.items(), key=lambda kv: -kv[1])),
            "top": kernels,
            "bound": bound_sentence(busy, classes, kernels, self.device.type),
        }


def bound_sentence(busy: float | None, classes: dict[str, float], kernels: list[dict], device: str) -> str:
    """One sentence naming what limits the step."""
    label, share = max(classes.items(), key=lambda kv: kv[1]) if classes else ("nothing", 0.0)
    top = f"top: {kernels[0]['name'][:80]} ({kernels[0]['share']:.0%})" if kernels else "no kernels"
    if device != "cuda":
        return f"CPU operators: {label} take {share:.0%} of operator time ({top})"
    if busy is not None and busy < HOST_BOUND_BELOW:
        return (
            f"host-bound: the GPU runs kernels {busy:.0%} of the step; the rest is Python, Lightning and kernel "
            f"launches (torch.compile fuses kernels, CUDA graphs remove launches); {label} {share:.0%} of kernel time"
        )
    return f"GPU-bound ({busy:.0%} busy): {label} take {share:.0%} of kernel time; {top}"


HOST_METHODS = {  # what our step adds to the plain loop: label -> (owner, method)
    "log_dict (Lightning logging)": (LightningModule, "log_dict"),
    "non-finite guard": (NonFiniteGuard, "update"),
    "learning-rate tensors": (SRGANModule, "_learning_rates"),
    "schedulers": (SRGANModule, "_step_schedulers"),
    "training_step (all of it)": (SRGANModule, "training_step"),
}


@contextmanager
def host_timers() -> Iterator[dict[str, list[float]]]:
    """Time every call of `HOST_METHODS` (host seconds, no device sync) while inside."""
    calls: dict[str, list[float]] = {}
    originals = []
    for label, (owner, name) in HOST_METHODS.items():
        original = owner.__dict__[name]
        originals.append((owner, name, original))

        @functools.wraps(original)
        def timed(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                calls.setdefault(_label, []).append(time.perf_counter() - start)

        setattr(owner, name, timed)
    try:
        yield calls
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def host_summary(calls: dict[str, list[float]], batches: int) -> dict[str, float]:
    """Host milliseconds per batch of each timed method: its median call x its calls per batch
    (the median keeps the first, slow calls of the warm-up out); 0 for a method the measured
    batches never called (``log_dict`` runs only on Lightning's write batches)."""
    return {
        label: statistics.median(t) * 1e3 * len(t) / max(1, batches) if (t := calls.get(label)) else 0.0
        for label in HOST_METHODS
    }
