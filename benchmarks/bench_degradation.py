"""The Real-ESRGAN degradation on the device, batched, against the same work per image in a data loader.

Row 1, batch 16 of 256 px HR (Real-ESRGAN's gt_size): our `RealESRGANDegradation` (one batched call
on the device) against a data-loader worker doing the same stages per image with NumPy, SciPy and
Pillow (OpenCV is not a dependency; SciPy's FFT convolution plays cv2.filter2D, which also switches
to the DFT for kernels this large): USM, 21x21 blur, resize, Gaussian/Poisson noise, JPEG, twice, and
the final resize + sinc + JPEG. On the CPU both run on one thread, so the ratio is per core (a
loader spreads images over workers, our call over intra-op threads).

Row 2: the same degradation against the ESRGAN training step it feeds (the plain-loop step of
`bench_train_step`, tiny sizes on a CPU, paper sizes on a GPU), at that step's batch and HR size:
the ratio says how many degradations fit in one step.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from scipy import ndimage, signal, special

from benchmarks import bench_train_step
from benchmarks.timing import median_ms, resolve_device

CONF = Path(__file__).resolve().parents[1] / "conf" / "degradation" / "realesrgan.yaml"
BATCH, HR_SIZE, SCALE = 16, 256, 4
_PIL_MODES = {"area": Image.BOX, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def build_degradation(scale: int = SCALE) -> torch.nn.Module:
    """conf/degradation/realesrgan.yaml as Hydra builds it."""
    cfg = OmegaConf.merge({"data": {"scale": scale}}, {"degradation": OmegaConf.load(CONF)})
    return instantiate(cfg.degradation)


# --- the data-loader baseline: one image at a time, NumPy / SciPy / Pillow ----------------------


def _kernel(rng: np.random.Generator, sigma: tuple[float, float]) -> np.ndarray:
    """A random 21x21 anisotropic generalised Gaussian or sinc kernel, as a dataset worker draws it."""
    size = 2 * rng.integers(3, 11) + 1
    ax = np.arange(size) - size // 2
    xx, yy = np.meshgrid(ax, ax)
    if rng.random() < 0.1:
        cutoff, radius = rng.uniform(math.pi / 5, math.pi), np.hypot(xx, yy)
        with np.errstate(divide="ignore", invalid="ignore"):
            kernel = np.where(
                radius > 0, cutoff * special.j1(cutoff * radius) / (2 * np.pi * radius), cutoff**2 / 4 / np.pi
            )
    else:
        sx, sy, theta, beta = (
            rng.uniform(*sigma),
            rng.uniform(*sigma),
            rng.uniform(-math.pi, math.pi),
            rng.uniform(0.5, 4),
        )
        u, v = np.cos(theta) * xx + np.sin(theta) * yy, -np.sin(theta) * xx + np.cos(theta) * yy
        kernel = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2) ** beta)
    return np.pad(kernel / kernel.sum(), (21 - size) // 2)


def _filter(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    pad = kernel.shape[0] // 2
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    channels = [signal.fftconvolve(padded[..., c], kernel[::-1, ::-1], mode="valid") for c in range(3)]
    return np.stack(channels, -1).astype(np.float32)


def _usm(image: np.ndarray) -> np.ndarray:
    taps = np.exp(-0.5 * (np.arange(51) - 25.0) ** 2 / 64)
    taps /= taps.sum()

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.correlate1d(ndimage.correlate1d(a, taps, axis=0, mode="mirror"), taps, axis=1, mode="mirror")

    residual = image - blur(image)
    soft = blur((np.abs(residual) * 255 > 10).astype(np.float32))
    return soft * np.clip(image + 0.5 * residual, 0, 1) + (1 - soft) * image


def _resize(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    mode = _PIL_MODES[rng.choice(list(_PIL_MODES))]
    planes = [Image.fromarray(image[..., c].astype(np.float32)) for c in range(3)]  # mode "F"
    return np.stack([np.asarray(plane.resize(size[::-1], mode)) for plane in planes], -1)


def _noise(image: np.ndarray, rng: np.random.Generator, sigma: tuple[float, float], scale: tuple[float, float]):
    if rng.random() < 0.5:
        noisy = image + rng.normal(0, rng.uniform(*sigma) / 255, image.shape)
    else:
        levels = np.clip(np.round(image * 255), 0, 255) / 255
        photons = 2 ** np.ceil(np.log2(len(np.unique(levels))))
        noisy = image + (rng.poisson(levels * photons) / photons - levels) * rng.uniform(*scale)
    return np.clip(noisy, 0, 1).astype(np.float32)


def _jpeg(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=int(rng.uniform(30, 95))
    )
    return np.asarray(Image.open(buffer), dtype=np.float32) / 255


def numpy_degrade(hr: np.ndarray, rng: np.random.Generator, scale: int = SCALE) -> np.ndarray:
    """One (H, W, 3) float32 image through the two orders and the final stage, on the host."""
    height, width = hr.shape[:2]
    out = _filter(_usm(hr), _kernel(rng, (0.2, 3)))
    factor = rng.uniform(0.15, 1.5)
    out = _jpeg(_noise(_resize(out, (int(height * factor), int(width * factor)), rng), rng, (1, 30), (0.05, 3)), rng)
    if rng.random() < 0.8:
        out = _filter(out, _kernel(rng, (0.2, 1.5)))
    factor = rng.uniform(0.3, 1.2)
    lr_size = (height // scale, width // scale)
    out = _noise(_resize(out, (int(lr_size[0] * factor), int(lr_size[1] * factor)), rng), rng, (1, 25), (0.05, 2.5))
    return _jpeg(_filter(_resize(out, lr_size, rng), _kernel(rng, (0.2, 1.5))), rng)


# --- the rows ------------------------------------------------------------------------------------


def _one_thread_ms(fn, device: torch.device, repeats: int) -> float:  # type: ignore[no-untyped-def]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return median_ms(fn, device, warmup=1, repeats=repeats)
    finally:
        torch.set_num_threads(threads)


def measure(dev: torch.device, *, batch: int = BATCH, hr_size: int = HR_SIZE, feed: tuple[int, int]) -> dict:
    """Milliseconds of our batched degradation of `batch` x `hr_size` px and of the per-image loader
    baseline on the same images (both on one thread on a CPU), and of ours at `feed` = (batch, HR
    side) of the training step it feeds."""
    degradation = build_degradation()
    generator = torch.Generator(dev).manual_seed(0)
    hr = torch.rand(batch, 3, hr_size, hr_size, generator=generator, device=dev)
    images = [image.permute(1, 2, 0).cpu().numpy() for image in hr]  # (H, W, 3) float32 each
    rng = np.random.default_rng(0)
    if dev.type == "cpu":
        ours = _one_thread_ms(lambda: degradation(hr, generator=generator), dev, repeats=3)
    else:
        ours = median_ms(lambda: degradation(hr, generator=generator), dev)
    base = _one_thread_ms(lambda: [numpy_degrade(image, rng) for image in images], torch.device("cpu"), repeats=3)
    small = torch.rand(feed[0], 3, feed[1], feed[1], generator=generator, device=dev)
    fed = median_ms(lambda: degradation(small, generator=generator), dev)
    return {"batch": batch, "hr": hr_size, "ours_ms": ours, "baseline_ms": base, "feed": list(feed), "feed_ms": fed}


def run(device: str, size: str = "auto") -> list[dict]:
    dev = resolve_device(device)
    size = ("paper" if dev.type == "cuda" else "tiny") if size == "auto" else size
    step, stage = bench_train_step.esrgan_step_ms(dev, size)
    figures = measure(dev, feed=(stage.batch, stage.patch))
    return [
        {
            "name": f"Real-ESRGAN degradation, {BATCH}x{HR_SIZE}px" + (" (1 thread)" if dev.type == "cpu" else ""),
            "device": str(dev),
            "ours_ms": figures["ours_ms"],
            "baseline_ms": figures["baseline_ms"],
            "baseline": "per image, NumPy/SciPy/Pillow, 1 worker",
        },
        {
            "name": f"Real-ESRGAN degradation, {stage.batch}x{stage.patch}px, vs the ESRGAN step it feeds ({size})",
            "device": str(dev),
            "ours_ms": figures["feed_ms"],
            "baseline_ms": step,
            "baseline": "ESRGAN training step (plain loop)",
        },
    ]
