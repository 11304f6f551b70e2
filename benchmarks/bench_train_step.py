"""``make bench`` rows for the training step of each stage: ours against a plain PyTorch loop.

Ours is `SRGANModule.training_step` driven by a real ``L.Trainer``; the baseline is `PlainLoop`,
the same math on the same networks (benchmarks.step_timing). Both sides are measured in the same
run, alternating, best of `ROUNDS`; the ratio is ours / plain in batches per second (> 1: ours
faster). Each row also gives the rate of the plain step run as a LightningModule's training step
(`step_timing.PlainInLightning`: what Lightning's loop costs, apart from what our step adds), the
FLOPs of one batch and the share of this machine's measured matmul peak that ours reaches with them.

On a CPU: tiny networks, and the full networks at batch 1 and half the papers' patch (`stages`),
in fp32 (`python -m benchmarks` runs them on one intra-op thread: on a shared machine other load
otherwise decides the figures; bench_threads measures that effect). On a GPU: the papers' sizes in
bf16-mixed (`benchmarks/gpu_check.sh` runs every speed switch).
"""

from __future__ import annotations

import torch

from benchmarks.stages import CONFIGS, STAGES, Stage, build_stage
from benchmarks.step_timing import Plan, compare, matmul_tflops, plain_rate, step_flops, utilisation
from benchmarks.timing import resolve_device

PLANS = {  # warm-up batches, then at most this many batches / seconds per measurement
    "tiny": Plan(warmup=2, max_batches=10, max_seconds=2.0),
    "cpu": Plan(warmup=1, max_batches=3, max_seconds=6.0),
    "paper": Plan(warmup=5, max_batches=100, max_seconds=3.0),
}
ROUNDS = {"tiny": 2, "cpu": 1, "paper": 1}
SIDES = ("plain", "plain_in_lightning", "ours")  # the middle one tells Lightning's loop from our step's work


def sizes_for(device: torch.device, size: str) -> tuple[str, ...]:
    if size != "auto":
        return (size,)
    return ("tiny", "cpu") if device.type == "cpu" else ("paper",)


def peak_for(device: torch.device, dtype: torch.dtype) -> float:
    """TFLOP/s of a large matrix product on `device` in `dtype` (the utilisation's denominator)."""
    on_gpu = device.type == "cuda"
    return matmul_tflops(device, dtype, 8192 if on_gpu else 1024, repeats=10 if on_gpu else 3)


def stage_row(stage: Stage, result: dict, flops: int, peak: float, peak_name: str, device: torch.device) -> dict:
    ours, plain = result["ours_it_s"], result["plain_it_s"]
    share = utilisation(flops, ours, peak)
    return {
        "name": f"{stage.title} ({stage.size}: {stage.batch} x {stage.patch} px, {result['config']})",
        "device": str(device),
        "ours_ms": 1e3 / ours,
        "baseline_ms": 1e3 / plain,
        "baseline": "plain PyTorch loop",
        "note": f"{ours:.2f} vs {plain:.2f} it/s (the plain step in L.Trainer's loop: "
        f"{result['plain_in_lightning_it_s']:.2f}); {flops / 1e9:,.1f} GFLOP/batch: {share:.0%} of the {peak_name} "
        f"matmul peak ({peak:.3g} TFLOP/s)",
    }


def run(device: str, size: str = "auto") -> list[dict]:
    dev = resolve_device(device)
    config = CONFIGS["fp32" if dev.type == "cpu" else "bf16"]
    dtype, peak_name = (torch.float32, "fp32") if dev.type == "cpu" else (torch.bfloat16, "bf16")
    torch.set_float32_matmul_precision("high")  # as conf/train.yaml
    rows = []
    peak = peak_for(dev, dtype)
    for name in sizes_for(dev, size):
        for stage_name in STAGES:
            stage = build_stage(stage_name, name)
            result = compare(stage, config, dev, PLANS[name], rounds=ROUNDS[name], sides=SIDES)
            rows.append(stage_row(stage, result, step_flops(stage, dev), peak, peak_name, dev))
    return rows


def esrgan_step_ms(device: torch.device, size: str) -> tuple[float, Stage]:
    """Milliseconds of one plain-loop ESRGAN batch at `size` (what the degradation benchmark feeds)."""
    stage = build_stage("esrgan", size)
    return 1e3 / plain_rate(stage, CONFIGS["fp32"], device, PLANS[size]), stage
