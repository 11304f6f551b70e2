"""The prepared GPU check (issue 8): the project's speed figures in one command, written as one
JSON and one Markdown summary.

    benchmarks/gpu_check.sh --out DIR                  # on a GPU node: under 8 minutes on one H100
    python -m benchmarks.gpu_check --dry-run --out DIR # CPU, tiny sizes, the same code paths

Items, in this order (what the open targets need first); a failing item is recorded and the
others go on, and an item that no longer fits the time budget (``--budget-s``) is skipped, so a
summary always comes out:

1. machine: GPU, versions; matmul peaks in fp32 (as training sets it: TF32) and bf16.
2. the targets' steps at the papers' sizes (ESRGAN; PSNR RRDBNet + L1) in bf16-mixed, ours
   (L.Trainer + SRGANModule) against the plain PyTorch loop; FLOPs per batch and utilisation; under
   ``torch.profiler`` (top-10 kernels, GPU busy share) with the host time of our step's extras and
   one batch of the plain loop profiled the same way; the call sites of synchronizing CUDA
   operations in two of their batches (``benchmarks.host_syncs``); and the plain step inside
   Lightning's loop (``step_timing.PlainInLightning``), which tells the loop's cost from our step's.
3. steps with ``torch.compile``: CUDA graphs (mode reduce-overhead) of the RRDBNet stages, profiled
   (the PSNR stage's also with the plain step inside Lightning's loop), then the default mode of
   every stage, in a child process bounded by ``Mode.compile_s`` and the
   remaining budget (compilation time is hard to predict). Each side compiles afresh, as a new
   training process would (`benchmarks.step_timing`), and the summary says what each compiled:
   graphs, graph breaks, functions CUDA graphs skipped.
4. train smoke: ``python -m sr_gan.train experiment=esrgan_x4 logger=csv`` for 150 batches on a
   miniature DIV2K tree of generated DIV2K-like 2040x1356 PNGs: it starts, validates, checkpoints;
   its it/s (device-synchronised), beside what the run logged itself without syncs
   (``time/batches_per_s``, ``time/data_share``).
5. data path: crops/s per worker, raw PNG decode vs prepared, and a DataLoader with 8 and 16
   workers, on those PNGs.
6. train smoke in ``trainer.precision=16-mixed`` (Lightning's GradScaler on CUDA; a CPU dry run
   becomes bf16-mixed): it must train, validate and checkpoint like item 4, and its logged
   gradient norms, beside item 4's, say whether the norms and the clipping see unscaled gradients.
7. upscale: one of those 2K images x4 (tiled) in fp32 and bf16 in process, with a random-weight
   RRDBNet exported as safetensors, and in bf16 through ``python -m sr_gan.upscale``; Real-ESRGAN's
   degradation of a batch 16 x 256 px on the GPU against the same work per image on one CPU core
   (``benchmarks.bench_degradation``), and at the ESRGAN step's batch against that step.
8. the other eager steps (SRGAN, PSNR SRResNet + MSE; fp32 and bf16 + channels_last of every
   stage), as the budget allows (the H200 run of 2026-11-26 has them all).

Then the targets of issue 8 are checked: ESRGAN >= 20 it/s (batch 16, HR 128, bf16), the PSNR stage
>= 3x that, the 8-worker loader >= 3x the crops/s the ESRGAN step consumes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from benchmarks import bench_data, bench_degradation, gpu_report
from benchmarks.host_syncs import SyncRecorder
from benchmarks.profile_step import StepProfiler, host_summary, host_timers
from benchmarks.stages import CONFIGS, Config, Stage, build_stage
from benchmarks.step_timing import Plan, compare, matmul_tflops, ours_rate, plain_rate, step_flops, utilisation
from benchmarks.timing import sync
from sr_gan.atomic import atomic_path
from sr_gan.run_folders import read_metrics

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = 1


@dataclass(frozen=True)
class Mode:
    """Sizes and time limits of a run: the GPU check proper, or its dry run on a CPU."""

    name: str
    device: str
    size: str  # of the training stages (benchmarks.stages.SIZES)
    plan: Plan
    compile_plan: Plan
    compile_backend: bool | str  # True: inductor; the dry run traces with "eager"
    compile_s: float  # at most this long for the compile child, so that the items after it still run
    budget_s: float
    images: int  # generated DIV2K-like images
    image_size: tuple[int, int]  # their (height, width)
    loader_workers: tuple[int, ...]
    data_seconds: float
    tile: int  # upscale tile (LR pixels)
    degradation: tuple[int, int]  # Real-ESRGAN degradation: (batch, HR side), Real-ESRGAN's is 16 x 256
    cli_precisions: tuple[str, ...]  # upscale precisions also run through the CLI (a process each)
    generator: dict[str, int]  # RRDBNet x4 of the upscale and the smoke run's init_from
    smoke_batches: int
    smoke_val_every: int
    smoke_overrides: tuple[str, ...]
    peak_n: int
    cpu_threads: int | None  # intra-op threads of the in-process items (None: torch's default)

    def plan_for(self, config: str) -> Plan:
        """How long to measure a rung: compiled ones warm up longer (CUDA graphs record late)."""
        return self.compile_plan if CONFIGS[config].compile else self.plan


GPU = Mode(
    name="gpu",
    device="cuda",
    size="paper",
    plan=Plan(warmup=3, max_batches=200, max_seconds=1.5),
    compile_plan=Plan(warmup=6, max_batches=200, max_seconds=2.0),  # CUDA graphs record on later batches
    compile_backend=True,
    compile_s=260.0,  # the ESRGAN graphs rung compiled in ~160 s on the H200 (after the PSNR one)
    budget_s=450.0,  # + start-up (wheels, imports: ~20 s) and the last summary: under 8 minutes
    images=8,
    image_size=(bench_data.HEIGHT, bench_data.WIDTH),
    loader_workers=(8, 16),
    data_seconds=1.5,
    tile=512,
    degradation=(bench_degradation.BATCH, bench_degradation.HR_SIZE),
    cli_precisions=("bf16",),  # fp32 in process only: the CLI call is mostly start-up and PNG writing
    generator={"num_features": 64, "num_blocks": 23, "growth_channels": 32},  # ESRGAN's RRDBNet
    smoke_batches=150,
    smoke_val_every=75,
    smoke_overrides=("trainer.precision=bf16-mixed", "data.num_workers=8", "trainer.log_every_n_steps=25"),
    peak_n=8192,
    cpu_threads=None,
)
DRY_RUN = Mode(
    name="dry-run",
    device="cpu",
    size="dry",
    plan=Plan(warmup=1, max_batches=2, max_seconds=0.5),
    compile_plan=Plan(warmup=1, max_batches=2, max_seconds=0.5),
    compile_backend="eager",
    compile_s=600.0,
    budget_s=900.0,
    images=2,
    image_size=(192, 256),
    loader_workers=(1, 2),
    data_seconds=0.1,
    tile=32,
    degradation=(2, 64),
    cli_precisions=("bf16",),
    generator={"num_features": 8, "num_blocks": 1, "growth_channels": 32},
    smoke_batches=4,
    smoke_val_every=2,
    smoke_overrides=(
        "model.generator.num_features=8",
        "model.generator.num_blocks=1",
        "discriminator.num_features=8",
        "data.patch_size=32",
        "data.batch_size=2",
        "trainer.log_every_n_steps=1",
        "data.num_workers=0",
        "data.val_crop=64",
        "trainer.accelerator=cpu",
        "trainer.precision=32-true",
    ),
    peak_n=512,
    cpu_threads=1,
)
MODES = {m.name: m for m in (GPU, DRY_RUN)}

# (stage, config) in the order they run: the targets' stages first
STEPS = [
    ("esrgan", "bf16"),
    ("psnr_rrdb", "bf16"),
    ("esrgan", "fp32"),
    ("esrgan", "bf16+cl"),
    ("psnr_rrdb", "fp32"),
    ("psnr_rrdb", "bf16+cl"),
    ("srgan", "bf16"),
    ("srgan", "fp32"),
    ("srgan", "bf16+cl"),
    ("psnr_srresnet", "bf16"),
    ("psnr_srresnet", "fp32"),
    ("psnr_srresnet", "bf16+cl"),
]
PROFILED = ("esrgan", "psnr_rrdb")  # in bf16: the stages of the targets
# Ours, the plain loop, and the plain step inside Lightning's loop (step_timing.PlainInLightning): where
# ours trails, whether Lightning's loop or our step's own work is the difference. For the targets'
# steps in bf16 and the PSNR stage's CUDA graphs (the widest gap on the H200: 0.65).
THREE_SIDES = ("plain", "plain_in_lightning", "ours")
SPLIT = {(stage, "bf16") for stage in PROFILED} | {("psnr_rrdb", "bf16+cl+graphs")}
PLAIN_PROFILE = ("step_ms", "kernel_ms", "gpu_busy", "launches")  # of the plain loop's profiled batch
COMPILED = [  # (stage, config) of the compile child, targets' stages first; CUDA graphs for the RRDBNet stages
    # the PSNR stage first: the widest gap under graphs on the H200 (0.65), split three ways, G alone to
    # compile; ESRGAN's then finds RRDBNet's kernels in inductor's disk caches (re-tracing only)
    ("psnr_rrdb", "bf16+cl+graphs"),
    ("esrgan", "bf16+cl+graphs"),
    ("esrgan", "bf16+cl+graphs+fused"),
    ("psnr_rrdb", "bf16+cl+graphs+ddp"),  # CUDA graphs under trainer=ddp, one GPU (RRDBNet's kernels cached by now)
    ("esrgan", "bf16+cl+compile"),
    ("psnr_rrdb", "bf16+cl+compile"),
    ("srgan", "bf16+cl+compile"),
    ("psnr_srresnet", "bf16+cl+compile"),
]
NEEDS_S = {
    "step": 10.0,
    "profile": 8.0,
    "data": 45.0,
    "upscale": 45.0,
    "degradation": 20.0,
    "smoke": 60.0,  # 150 batches: the H200's 300-batch run took 64 s, ~21 s of it start-up
    "compile": 60.0,
}
RESERVE_S = 10.0  # kept for the summary at the end


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text}"[:400]


def child_env() -> dict[str, str]:
    """The environment of CLI children: this checkout's src and benchmarks first, no W&B."""
    paths = [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "WANDB_MODE": "disabled"}


def run_cli(module: str, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def machine(device: torch.device) -> dict[str, Any]:
    import lightning

    from sr_gan.threads import usable_cores

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cuda": torch.version.cuda,
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info |= {
            "gpu": torch.cuda.get_device_name(device),
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "cudnn": torch.backends.cudnn.version(),
        }
    return info


class Check:
    """Runs the items of one mode, keeping the summary written after each."""

    def __init__(self, mode: Mode, out: Path, work: Path, budget_s: float) -> None:
        self.mode, self.out, self.work = mode, out, work
        self.device = torch.device(mode.device)
        self.start = time.perf_counter()
        self.deadline = self.start + budget_s
        self.stages: dict[str, Stage] = {}
        self.flops: dict[str, int] = {}
        self.summary: dict[str, Any] = {
            "schema": SCHEMA,
            "mode": mode.name,
            "dry_run": mode.name != "gpu",
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "budget_s": budget_s,
            "seconds": 0.0,
            "machine": {},
            "peaks_tflops": {},
            "steps": [],
            "profiles": {},
            "host_syncs": {},
            "data": {},
            "upscale": [],
            "degradation": {},
            "train_smoke": {},
            "train_smoke_fp16": {},
            "targets": [],
            "items": [],
        }

    # ---------------------------------------------------------------- bookkeeping
    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def item(self, name: str, needs: float, fn: Callable[[], Any]) -> Any:
        """Run `fn` as item `name` unless fewer than `needs` seconds are left; record the outcome."""
        record: dict[str, Any] = {"name": name}
        if self.remaining() < needs:
            record |= {"status": "skipped", "seconds": 0.0, "error": f"time budget: {self.remaining():.0f} s left"}
            print(f"[gpu_check] skip {name}: {record['error']}", flush=True)
            self._record(record)
            return None
        print(f"[gpu_check] {name} ({self.remaining():.0f} s left)", flush=True)
        began = time.perf_counter()
        try:
            result = fn()
            record["status"] = "ok"
        except Exception as err:  # one item's failure must not cost the others
            traceback.print_exc()
            result, record["status"], record["error"] = None, "failed", one_line(err)
        record["seconds"] = round(time.perf_counter() - began, 2)
        self._record(record)
        return result

    def _record(self, record: dict[str, Any]) -> None:
        self.summary["items"].append(record)
        self.write()

    def write(self) -> None:
        self.summary["seconds"] = round(time.perf_counter() - self.start, 1)
        self.summary["targets"] = gpu_report.targets(self.summary)
        self.out.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.out / gpu_report.JSON_NAME) as partial:
            partial.write_text(json.dumps(self.summary, indent=2, default=float))
        with atomic_path(self.out / gpu_report.MARKDOWN_NAME) as partial:
            partial.write_text(gpu_report.markdown(self.summary))

    # ---------------------------------------------------------------- items
    def stage(self, name: str) -> Stage:
        if name not in self.stages:
            self.stages[name] = build_stage(name, self.mode.size)
        return self.stages[name]

    def config(self, name: str) -> Config:
        config = CONFIGS[name]
        if not config.compile or self.mode.compile_backend is True:
            return config
        return replace(config, compile=self.mode.compile_backend, compile_mode=None)  # modes are inductor's

    def compiled_pairs(self) -> list[tuple[str, str]]:
        """`COMPILED`, less a pair whose stage this mode already compiles with the same switches: the
        dry run's backend has no modes, so there a CUDA-graphs rung is its +compile rung again."""
        pairs: dict[tuple[str, Config], tuple[str, str]] = {}
        for stage, config in COMPILED:
            pairs.setdefault((stage, replace(self.config(config), name="")), (stage, config))
        return list(pairs.values())

    def peaks(self) -> None:
        self.summary["machine"] = machine(self.device)
        n = self.mode.peak_n
        self.summary["peaks_tflops"] = {
            "fp32": matmul_tflops(self.device, torch.float32, n),
            "bf16": matmul_tflops(self.device, torch.bfloat16, n),
        }

    def measure(self, stage_name: str, config_name: str) -> dict[str, Any]:
        """Ours against the plain loop (`THREE_SIDES` for the steps in `SPLIT`)."""
        stage, config = self.stage(stage_name), self.config(config_name)
        sides = THREE_SIDES if (stage_name, config_name) in SPLIT else ("plain", "ours")
        return compare(stage, config, self.device, self.mode.plan_for(config_name), sides=sides)

    def step(self, stage_name: str, config_name: str) -> dict[str, Any]:
        result = self.measure(stage_name, config_name)
        self.add_utilisation(result)
        self.summary["steps"].append(result)
        return result

    def add_utilisation(self, result: dict[str, Any]) -> None:
        stage = result["stage"]
        if stage not in self.flops:
            self.flops[stage] = step_flops(self.stage(stage), self.device)
        peak_name = "bf16" if result["config"].startswith("bf16") else "fp32"
        peak = self.summary["peaks_tflops"].get(peak_name)
        result["gflop_per_batch"] = self.flops[stage] / 1e9
        result["peak"] = peak_name
        result["utilisation"] = utilisation(self.flops[stage], result["ours_it_s"], peak) if peak else None

    def profile(self, stage_name: str, config_name: str = "bf16") -> dict[str, Any]:
        """One steady-state batch of ours under torch.profiler, and the host time of our step's extras;
        then one of the plain loop, profiled the same way (its wall time, GPU busy share, launches)."""
        base = self.mode.plan_for(config_name)
        plan = replace(base, warmup=max(2, base.warmup), max_seconds=1.0)
        stage, config = self.stage(stage_name), self.config(config_name)
        profiler, theirs = StepProfiler(self.device), StepProfiler(self.device)
        try:
            with host_timers() as calls:
                ours_rate(stage, config, self.device, plan, profiler=profiler)
            plain_rate(stage, config, self.device, plan, profiler=theirs)
        finally:  # a fit that failed mid-batch leaves no profiler running for the items after it
            profiler.stop()
            theirs.stop()
        batches = len(calls.get("training_step (all of it)", [])) or 1
        summary = profiler.summary() | {"config": config_name, "host_ms_per_batch": host_summary(calls, batches)}
        summary["plain"] = {k: v for k, v in theirs.summary().items() if k in PLAIN_PROFILE}
        self.summary["profiles"][_key(stage_name, config_name)] = summary
        return summary

    def host_syncs(self, stage_name: str, config_name: str = "bf16") -> dict[str, Any]:
        """Synchronizing CUDA operations in two steady-state batches of ours, by call site."""
        recorder = SyncRecorder(self.device)
        base = self.mode.plan_for(config_name)
        plan = replace(base, warmup=max(4, base.warmup), max_batches=1, max_seconds=1.0)
        try:
            ours_rate(self.stage(stage_name), self.config(config_name), self.device, plan, profiler=recorder)
        finally:  # a fit that failed mid-batch leaves neither CUDA's sync debug mode on nor warnings caught
            recorder.stop()
        summary = recorder.summary() | {"config": config_name}
        self.summary["host_syncs"][_key(stage_name, config_name)] = summary
        return summary

    def images(self) -> tuple[Path, Path]:
        os.environ["SR_GAN_BENCH_DIR"] = str(self.work / "bench")
        return bench_data.make_images(self.mode.images, self.mode.image_size)

    def data(self) -> dict[str, Any]:
        self.images()
        figures = bench_data.measure(
            self.mode.images, list(self.mode.loader_workers), seconds=self.mode.data_seconds, size=self.mode.image_size
        )
        figures["loader"] = {str(k): v for k, v in figures["loader"].items()}
        figures["batch"], figures["hr_patch"] = bench_data.BATCH, bench_data.PATCH
        self.summary["data"] = figures
        return figures

    def random_generator(self) -> Path:
        """A random-weight RRDBNet x4 exported as safetensors (config and scale in its metadata)."""
        from sr_gan.archs import RRDBNet
        from sr_gan.weights import save_generator_file

        path = self.work / "rrdbnet_x4_random.safetensors"
        if not path.is_file():
            torch.manual_seed(0)
            config = {"_target_": "sr_gan.archs.RRDBNet", "scale": 4, **self.mode.generator}
            generator = RRDBNet(scale=4, **self.mode.generator)
            save_generator_file(path, generator.state_dict(), config=config, scale=4)
        return path

    def upscale(self) -> list[dict[str, Any]]:
        from PIL import Image

        from sr_gan.upscale import PRECISIONS, read_picture, upscale_picture
        from sr_gan.weights import load_generator

        image = sorted(self.images()[0].glob("*.png"))[0]
        weights = self.random_generator()
        model = load_generator(weights)[0].to(self.device)
        picture = read_picture(image)
        height, width = picture.rgb.shape[-2:]
        torch.backends.cudnn.benchmark = False  # as the CLI runs (varying tile shapes)
        rows = []
        for precision in ("fp32", "bf16"):
            dtype = PRECISIONS[precision]
            kwargs = {"scale": 4, "tile": self.mode.tile, "overlap": 32 if self.mode.tile >= 128 else 8, "dtype": dtype}
            upscale_picture(model, replace(picture, rgb=picture.rgb[..., : self.mode.tile, : self.mode.tile]), **kwargs)
            sync(self.device)
            began = time.perf_counter()
            upscale_picture(model, picture, **kwargs)
            sync(self.device)
            compute = time.perf_counter() - began
            row = {
                "precision": precision,
                "input": [height, width],
                "tile": self.mode.tile,
                "compute_s": compute,
                "input_megapixels_per_s": height * width / 1e6 / compute,
                "cli_s": None,
                "ok": True,
                "error": None,
            }
            if precision in self.mode.cli_precisions:
                out_dir = self.work / f"upscale_{precision}"
                began = time.perf_counter()
                args = [f"ckpt={weights}", f"input={image}", f"out_dir={out_dir}", f"precision={precision}"]
                args += [f"tile={self.mode.tile}", f"tile_overlap={kwargs['overlap']}", f"device={self.mode.device}"]
                done = run_cli("sr_gan.upscale", args, timeout=max(30.0, self.remaining()))
                row["cli_s"] = time.perf_counter() - began
                written = out_dir / f"{image.stem}_x4.png"
                size = Image.open(written).size if written.is_file() else None
                row["ok"] = done.returncode == 0 and size == (4 * width, 4 * height)
                if not row["ok"]:
                    row["error"] = (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
            rows.append(row)
        self.summary["upscale"] = rows
        if not all(r["ok"] for r in rows):
            raise RuntimeError("python -m sr_gan.upscale failed: " + "; ".join(r["error"] or "" for r in rows))
        return rows

    def degradation(self) -> dict[str, Any]:
        """Real-ESRGAN's degradation on the device against the per-image loader work (one core), and
        against the bf16 ESRGAN step it feeds (measured above, ours)."""
        batch, side = self.mode.degradation
        stage = self.stage("esrgan")
        figures = bench_degradation.measure(self.device, batch=batch, hr_size=side, feed=(stage.batch, stage.patch))
        rate = next(
            (r["ours_it_s"] for r in self.summary["steps"] if (r["stage"], r["config"]) == ("esrgan", "bf16")), None
        )
        figures["step_ms"] = 1e3 / rate if rate else None
        self.summary["degradation"] = figures
        return figures

    def smoke(self, key: str = "train_smoke", precision: str | None = None) -> dict[str, Any]:
        """A real training run of experiment=esrgan_x4 on the generated images (see the module
        docstring), recorded as `key`; `precision` replaces the mode's ``trainer.precision``."""
        hr_dir, lr_dir = self.images()
        from sr_gan.data.prepared import prepare_folder

        for folder in (hr_dir, lr_dir):
            prepare_folder(folder, progress=False)  # kept if the data item prepared it already
        run_dir, clock = self.work / key, self.work / f"{key}_clock.json"
        overrides = [o for o in self.mode.smoke_overrides if not (precision and o.startswith("trainer.precision="))]
        args = [
            "experiment=esrgan_x4",
            "logger=csv",
            f"hydra.run.dir={run_dir}",
            f"data.train_hr_dir={hr_dir}",
            f"data.train_lr_dir={lr_dir}",
            f"data.val_hr_dir={hr_dir}",
            f"data.val_lr_dir={lr_dir}",
            "data.val_max_images=2",
            f"model.init_from={self.random_generator()}",
            "allow_random_vgg=true",
            "loss.perceptual.pretrained=false",
            f"trainer.max_steps={self.mode.smoke_batches}",
            f"trainer.val_check_interval={self.mode.smoke_val_every}",
            "trainer.enable_progress_bar=false",
            "test=false",
            "+callbacks.clock._target_=benchmarks.clock.StepClock",
            f"+callbacks.clock.path={clock}",
            f"+callbacks.clock.skip={min(20, self.mode.smoke_batches // 4)}",  # start-up left out
            *overrides,
            *([f"trainer.precision={precision}"] if precision else []),
        ]
        began = time.perf_counter()
        done = run_cli("sr_gan.train", args, timeout=max(30.0, self.remaining()))
        seconds = time.perf_counter() - began
        checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
        metrics = run_dir / "csv" / "metrics.csv"
        logged = _logged(metrics)
        speed = json.loads(clock.read_text()) if clock.is_file() else {}
        result = {
            "command": "python -m sr_gan.train " + " ".join(args),
            "returncode": done.returncode,
            "seconds": seconds,
            "batches": self.mode.smoke_batches,
            "it_s": speed.get("it_s"),
            **logged,
            "checkpoints": checkpoints,
            "ok": done.returncode == 0 and logged["validations"] > 0 and {"best.ckpt", "last.ckpt"} <= set(checkpoints),
            "log_tail": (done.stdout + done.stderr).strip().splitlines()[-15:],
        }
        self.summary[key] = result
        if not result["ok"]:
            raise RuntimeError(f"the training smoke run failed (exit {done.returncode}): {result['log_tail'][-1:]}")
        return result

    def compiled_steps(self) -> None:
        """The compile rung of every stage in one child process, bounded by the remaining budget."""
        listing = self.work / "compiled_steps.json"
        listing.unlink(missing_ok=True)
        pairs = self.compiled_pairs()
        steps = ",".join(f"{stage}:{config}" for stage, config in pairs)
        command = [sys.executable, "-m", "benchmarks.gpu_check", "--mode", self.mode.name, "--child-steps", steps]
        command += ["--child-json", str(listing)]
        timeout = min(self.remaining() - RESERVE_S, self.mode.compile_s)
        child = subprocess.Popen(command, cwd=ROOT, env=child_env(), start_new_session=True)
        try:
            child.wait(timeout=timeout)
            ended = f"the compile child exited with {child.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the child and its compile workers (its own session)
            child.wait()
            ended = f"stopped by the time budget after {timeout:.0f} s (compilation)"
        results = json.loads(listing.read_text()) if listing.is_file() else []
        for result in results:
            name = f"step {result['stage']} {result['config']}"
            if "error" in result:
                self._record({"name": name, "status": "failed", **result})
                continue
            key = _key(result["stage"], result["config"])
            failed = {part: result.pop(f"{part}_error", None) for part in ("profile", "host_syncs")}
            for part in ("profile", "host_syncs"):
                if part in result:
                    self.summary["profiles" if part == "profile" else part][key] = result.pop(part)
            self.add_utilisation(result)
            self.summary["steps"].append(result)
            self._record({"name": name, "status": "ok", "seconds": result["seconds"]})
            for part, error in failed.items():  # the rung was measured; its profile or sync list failed
                if error is not None:
                    what = f"{part.replace('_', ' ')} {result['stage']} {result['config']}"
                    self._record({"name": what, "status": "failed", "error": error})
        measured = {(r["stage"], r["config"]) for r in results}
        for stage, config in pairs:
            if (stage, config) not in measured:
                self._record({"name": f"step {stage} {config}", "status": "skipped", "error": ended})

    def run(self) -> dict[str, Any]:
        """The items in the order of the module docstring: what the open targets need first."""
        self.item("machine and matmul peaks", 5.0, self.peaks)
        for stage in PROFILED:
            self.item(f"step {stage} bf16", NEEDS_S["step"], lambda s=stage: self.step(s, "bf16"))
            self.item(f"profile {stage} bf16", NEEDS_S["profile"], lambda s=stage: self.profile(s))
            self.item(f"host syncs {stage} bf16", NEEDS_S["profile"], lambda s=stage: self.host_syncs(s))
        self.item("compiled steps", NEEDS_S["compile"], self.compiled_steps)
        self.item("train smoke", NEEDS_S["smoke"], self.smoke)
        self.item("data path", NEEDS_S["data"], self.data)
        # Lightning's GradScaler on CUDA (a CPU dry run becomes bf16-mixed): norms, clipping, skipped overflows
        self.item("train smoke 16-mixed", NEEDS_S["smoke"], lambda: self.smoke("train_smoke_fp16", "16-mixed"))
        self.item("upscale", NEEDS_S["upscale"], self.upscale)  # measured on the H200 on 2026-11-26
        self.item("degradation", NEEDS_S["degradation"], self.degradation)
        for stage, config in STEPS:
            if not (stage in PROFILED and config == "bf16"):  # the targets' steps ran first
                self.item(f"step {stage} {config}", NEEDS_S["step"], lambda s=stage, c=config: self.step(s, c))
        self.write()
        return self.summary


def _key(stage: str, config: str) -> str:
    """Profiles and sync lists are keyed by stage for the bf16 step (the targets' bound), else by both."""
    return stage if config == "bf16" else f"{stage} {config}"


def _logged(metrics: Path) -> dict[str, Any]:
    """From a Lightning metrics.csv: the validations (rows holding val/psnr), the medians of the
    speed the run logged itself (`sr_gan.callbacks.SpeedMonitor`), its first interval (start-up) left
    out, and the peak GPU memory it logged (none on a CPU)."""
    rows = read_metrics(metrics) if metrics.is_file() else []
    speed = [row for row in rows if "time/batches_per_s" in row][1:]

    def median(key: str) -> float | None:
        return statistics.median(row[key] for row in speed) if speed else None

    norms = {
        player: [row[f"train/grad_norm_{player}"] for row in rows if f"train/grad_norm_{player}" in row]
        for player in ("g", "d")
    }
    return {
        "validations": sum(1 for row in rows if "val/psnr" in row),
        "logged_it_s": median("time/batches_per_s"),
        "data_share": median("time/data_share"),
        "gpu_peak_gib": max((row["memory/gpu_peak_gib"] for row in rows if "memory/gpu_peak_gib" in row), default=None),
        # the logged gradient norms: a 16-mixed run's near the bf16 run's says they are unscaled
        "grad_norms": {
            player: {
                "median": statistics.median(finite) if (finite := [v for v in values if math.isfinite(v)]) else None,
                "non_finite": len(values) - len(finite),
            }
            for player, values in norms.items()
        },
    }


def child_steps(mode: Mode, steps: str, listing: Path) -> None:
    """`--child-steps`: measure `stage:config` pairs, rewriting `listing` (a JSON list) after each."""
    check = Check(mode, out=listing.parent, work=listing.parent, budget_s=mode.budget_s)
    results: list[dict[str, Any]] = []

    def write(began: float) -> None:  # after each part: a kill by the parent's time limit keeps what is done
        results[-1]["seconds"] = round(time.perf_counter() - began, 2)
        with atomic_path(listing) as partial:
            partial.write_text(json.dumps(results))

    for pair in steps.split(","):
        stage, config = pair.split(":")
        print(f"[gpu_check child] step {stage} {config}", flush=True)
        began = time.perf_counter()
        try:
            results.append(check.measure(stage, config))
        except Exception as err:
            traceback.print_exc()
            results.append({"stage": stage, "config": config, "error": one_line(err)})
        else:  # what bounds the step under CUDA graphs; a failure here keeps the rung's figures
            profiled = stage in PROFILED and config == "bf16+cl+graphs"
            for part, run in (("profile", check.profile), ("host_syncs", check.host_syncs)) if profiled else ():
                write(began)  # the rung's figures first: each part recompiles (tens of seconds)
                try:
                    results[-1][part] = run(stage, config)
                except Exception as err:
                    traceback.print_exc()
                    results[-1][f"{part}_error"] = one_line(err)
        write(began)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: the same items in seconds")
    parser.add_argument("--out", type=Path, default=None, help="summary folder (default: $OUT, else gpu_check_out)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds for all items (GPU default 450)")
    parser.add_argument("--mode", choices=list(MODES), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-steps", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-json", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    mode = MODES[args.mode] if args.mode else DRY_RUN if args.dry_run else GPU
    torch.set_float32_matmul_precision("high")  # as conf/train.yaml: TF32 matmuls on GPUs
    if mode.cpu_threads:
        torch.set_num_threads(mode.cpu_threads)
    if args.child_steps:
        child_steps(mode, args.child_steps, args.child_json)
        return
    if mode.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device: run on a GPU node, or pass --dry-run for the CPU check")
    out = args.out or Path(os.environ.get("OUT") or "gpu_check_out")
    work = args.work or Path(tempfile.mkdtemp(prefix="sr_gan_gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    summary = Check(mode, out, work, args.budget_s or mode.budget_s).run()
    failed = [i["name"] for i in summary["items"] if i["status"] == "failed"]
    print(gpu_report.markdown(summary))
    print(f"[gpu_check] summary: {out / gpu_report.JSON_NAME}, {out / gpu_report.MARKDOWN_NAME}", flush=True)
    if failed:
        print(f"[gpu_check] failed items: {', '.join(failed)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
