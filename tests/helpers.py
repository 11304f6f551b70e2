"""Running the project's CLIs in the tests, the way a user runs them."""

from __future__ import annotations

import gc
import os
import resource
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig
from scipy import special
from torch import nn

from sr_gan.archs import RRDBNet
from sr_gan.errors import UserError
from sr_gan.ops.kernels import GRID

SRC = Path(__file__).resolve().parents[1] / "src"
CONF_DIR = SRC.parent / "conf"


def tool_cfg(tool: str, *overrides: str) -> DictConfig:
    """`conf/<tool>.yaml` composed by Hydra with `overrides` (key=value), as `python -m sr_gan.<tool>`
    parses its command line: the config its `main(cfg)` runs in-process (no subprocess)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(tool, overrides=list(overrides))


def run_module(
    module: str,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    own_session: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`python -m <module> <args>` in `cwd`: src first on PYTHONPATH, W&B offline and silent
    (unless `env` says otherwise), `env` merged over os.environ; output captured as text.
    `own_session`: in a process group of its own (a signal to its group reaches no one else), with
    Ctrl-C's default handling."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=child_env({"WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}),
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=own_session,
        preexec_fn=_ctrl_c_as_in_a_terminal if own_session else None,
    )


def child_env(extra: dict[str, str] | None = None, *, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """The environment of a child Python process running this checkout: os.environ without `drop`,
    `extra` merged over it, src first on PYTHONPATH."""
    merged = {k: v for k, v in os.environ.items() if k not in drop} | (extra or {})
    merged["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), merged.get("PYTHONPATH")]))
    return merged


def _ctrl_c_as_in_a_terminal() -> None:
    """A child's SIGINT as a terminal's command has it: the default, even when the tests run as a
    background job, whose children inherit SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of an offline `run-*.wandb` file (W&B's LevelDB-style log: a 7-byte
    file header, then 32 KiB blocks of records with a 7-byte header: CRC, length, type)."""
    from wandb.proto import wandb_internal_pb2

    data, records, payload = path.read_bytes(), [], b""
    position, block = 7, 32768
    while position + 7 <= len(data):
        if block - position % block < 7:  # block trailer: padding
            position += block - position % block
            continue
        length, kind = struct.unpack("<HB", data[position + 4 : position + 7])
        payload += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            records.append(record)
            payload = b""
        elif kind == 0:
            break
    return records


@contextmanager
def file_size_limit(size: int) -> Iterator[None]:
    """This process may not grow a file past `size` bytes: a write past it fails with EFBIG ("File
    too large"), as a full disk's fails with ENOSPC, in the OS call itself. The soft limit only,
    put back on exit; SIGXFSZ (which would kill the process) is ignored meanwhile."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@contextmanager
def serve_folder(folder: Path) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 over `folder`: (its base URL, the paths GET so far, in order)."""
    requested: list[str] = []

    class Handler(SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            requested.append(self.path)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# Nested aliases ("billion laughs"): 5 lines here are 10**5 values; 9 such lines (5 KB) are 10**9.
LAUGHS = "data: {scale: 2}\nx:\n  a: &a [l, l, l, l, l, l, l, l, l, l]\n" + "".join(
    f"  {name}: &{name} [{', '.join([f'*{previous}'] * 10)}]\n" for previous, name in zip("abcd", "bcde")
)


def _png(path: Path, header: bytes, idat: bytes, *chunks: bytes) -> Path:
    """A PNG of an IHDR `header`, `chunks` (whole), and a zlib `idat`."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    body = chunk(b"IHDR", header) + b"".join(chunk(c[:4], c[4:]) for c in chunks) + chunk(b"IDAT", idat)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + chunk(b"IEND", b""))
    return path


def png_bomb(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height RGB pixels, with (almost) no data behind it."""
    return _png(path, struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0), zlib.compress(b"\0" * 64))


def keyed_png(path: Path, pixels: np.ndarray, colour: tuple[int, ...]) -> Path:
    """A grey or RGB PNG of (H, W, C) uint8 / uint16 `pixels` (C = 1 or 3) with a transparent
    `colour` (tRNS, one sample value per channel, in the pixels' bit depth). Pillow writes no 16-bit RGB."""
    height, width, channels = pixels.shape
    depth = 16 if pixels.dtype == np.uint16 else 8
    header = struct.pack(">IIBBBBB", width, height, depth, 0 if channels == 1 else 2, 0, 0, 0)
    rows = b"".join(b"\0" + row.astype(">u2" if depth == 16 else np.uint8).tobytes() for row in pixels)
    return _png(path, header, zlib.compress(rows), b"tRNS" + struct.pack(f">{channels}H", *colour))


TINY_RRDBNET = {"num_features": 8, "num_blocks": 2, "growth_channels": 4}  # the weights tests' generator


def tiny_rrdbnet(scale: int = 4, seed: int = 0) -> RRDBNet:
    """A seeded `TINY_RRDBNET` in eval mode: two seeds give two different generators."""
    torch.manual_seed(seed)
    return RRDBNet(**TINY_RRDBNET, scale=scale).eval()


@torch.no_grad()
def upscale(net: nn.Module, lr_size: tuple[int, int] = (8, 8)) -> torch.Tensor:
    """`net` applied to one fixed random LR image (seed 1) of `lr_size`: equal outputs, equal weights."""
    torch.manual_seed(1)
    return net(torch.rand(1, 3, *lr_size))  # (1, 3, h*s, w*s)


class SigtermInValidation(L.Callback):
    """Sends SIGTERM to this process as the validation after batch `batch` starts: after
    `PreemptionCheckpoint` has read its flag for that batch (the budget's last one: a signal during
    the final validation)."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_validation_start(self, trainer: L.Trainer, *args) -> None:  # noqa: ANN002
        if not trainer.sanity_checking and trainer.fit_loop.epoch_loop.batch_progress.total.completed == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


class CtrlCDuring(L.Callback):
    """Presses Ctrl-C `times` times while batch `batch` runs: SIGINT to this process, or with `group`
    to its whole process group, as a terminal sends it (the run's loader workers too; the test
    starts the run in a session of its own)."""

    def __init__(self, batch: int, times: int = 1, group: bool = False) -> None:
        self.batch, self.times, self.group = batch, times, group

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:  # noqa: ANN002
        if trainer.fit_loop.epoch_loop.batch_progress.total.ready == self.batch:
            if self.group and not trainer.is_global_zero:  # one terminal: one signal to the group
                return
            for _ in range(self.times):
                if self.group:
                    os.killpg(os.getpgid(0), signal.SIGINT)
                else:
                    os.kill(os.getpid(), signal.SIGINT)


class CtrlCAgainWhileSaving(CtrlCDuring):
    """A first Ctrl-C during batch `batch`, and a second one while its checkpoint is being written."""

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:  # noqa: ANN002
        self.pressed = trainer.fit_loop.epoch_loop.batch_progress.total.ready >= self.batch
        super().on_train_batch_start(trainer, *args)

    def on_save_checkpoint(self, trainer: L.Trainer, *args) -> None:  # noqa: ANN002
        if getattr(self, "pressed", False):
            os.kill(os.getpid(), signal.SIGINT)


class OnRank(L.Callback):
    """Rank `rank` alone (None: every rank) does `act` as batch `batch` starts (after the batch moved
    to the device), or with ``batch=0`` as the trainer sets up (the callbacks' ``setup``: the ranks
    started and joined, no batch yet; `act` gets None)."""

    def __init__(self, rank: int | None, batch: int = 1) -> None:
        self.rank, self.batch = rank, batch

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if self._acts(trainer, 0):
            self.act(None)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, *args) -> None:  # noqa: ANN002
        if self._acts(trainer, trainer.fit_loop.epoch_loop.batch_progress.total.ready):
            self.act(batch)

    def _acts(self, trainer: L.Trainer, batch: int) -> bool:
        return self.rank in (None, trainer.global_rank) and batch == self.batch

    def act(self, batch: Any) -> None:
        raise NotImplementedError


class SigtermDuring(OnRank):
    """Sends SIGTERM to rank `rank` while batch `batch` runs: rank 0 as a ``kill`` of the process that
    started the run, None every rank, as SLURM pre-empts a job; `PreemptionCheckpoint` stops every
    rank after that batch (under DDP: after the logging interval's and the iteration's end) and
    writes last.ckpt."""

    def __init__(self, batch: int, rank: int | None = 0) -> None:
        super().__init__(rank, batch)

    def act(self, batch: Any) -> None:
        os.kill(os.getpid(), signal.SIGTERM)


class FailOnRank(OnRank):
    """Rank `rank` alone fails as batch `batch` starts (0: as the trainer sets up): a UserError with
    `message` (a bad input only that rank reads), or with ``user=False`` a RuntimeError; the other
    ranks then wait in the batch's (the set-up's) collective for a rank that is gone."""

    def __init__(self, rank: int, message: str, batch: int = 1, user: bool = True) -> None:
        super().__init__(rank, batch)
        self.message, self.user = message, user

    def act(self, batch: Any) -> None:
        raise (UserError if self.user else RuntimeError)(self.message)


class KilledOnRank(OnRank):
    """Rank `rank` is killed (SIGKILL: out of host memory, ``kill -9``) as batch `batch` starts."""

    def act(self, batch: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class StuckOnRank(OnRank):
    """Rank `rank` hangs for `seconds` outside any collective as batch `batch` starts (its data loader
    on a hung file system), after writing its process id to `pid_file`."""

    def __init__(self, rank: int, batch: int, seconds: float, pid_file: str) -> None:
        super().__init__(rank, batch)
        self.seconds, self.pid_file = seconds, Path(pid_file)

    def act(self, batch: Any) -> None:
        self.pid_file.write_text(str(os.getpid()))
        time.sleep(self.seconds)


class NaNInputOnRank(OnRank):
    """Rank `rank`'s LR batch `batch` is NaN: its losses alone are, and its gradients, which DDP
    averages into every rank's."""

    def act(self, batch: Any) -> None:
        batch["lr"].fill_(float("nan"))


class SlowToReport(L.Callback):
    """Rank 0 takes `seconds` to handle the exception that ends the fit (a slow disk, a W&B upload)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_exception(self, trainer: L.Trainer, *args) -> None:  # noqa: ANN002
        if trainer.is_global_zero:
            time.sleep(self.seconds)


class OtherStartOnRank1(L.Callback):
    """Rank 1 moves the weights of G, its EMA and D before the strategy's set-up; as the fit starts,
    each rank saves its module's state to `folder`/rank<r>.pt: the strategy must have made them
    equal again (from rank 0)."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if trainer.global_rank == 1:
            with torch.no_grad():
                for network in (module.generator, module.generator_ema, module.discriminator):
                    for parameter in network.parameters():
                        parameter.add_(1e-3)

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save(module.state_dict(), self.folder / f"rank{trainer.global_rank}.pt")


class CompiledFrames(L.Callback):
    """As the fit ends, each rank writes to `folder`/rank<r>.txt how many frames dynamo compiled
    (``torch._dynamo`` counters): a compiled run that fell back to eager compiled none."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        from torch._dynamo.utils import counters

        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / f"rank{trainer.global_rank}.txt").write_text(str(counters["frames"]["ok"]))


class LiveTrainers(L.Callback):
    """As the fit starts, appends to `file` how many ``L.Trainer`` objects this process holds, garbage
    not yet collected included (a sweep's jobs share a process: an ended job's is garbage)."""

    def __init__(self, file: str) -> None:
        self.file = Path(file)

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        with self.file.open("a") as f:
            f.write(f"{sum(isinstance(o, L.Trainer) for o in gc.get_objects())}\n")


class LoggedRows(Logger):
    """What Lightning writes to a logger: ``(step, metrics)`` rows."""

    name, version = "rows", 0

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, *args: object, **kwargs: object) -> None:
        pass


class GlobalDraws(L.Callback):
    """Draws from the global torch, NumPy and Python generators as each training batch starts, as a
    user's augmentation or dropout would, and appends ``[batch, torch, numpy, python]`` to the JSON
    lines file `path`: a resumed run must go on drawing what the uninterrupted run drew."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer: L.Trainer, *args) -> None:  # noqa: ANN002
        import json
        import random

        import numpy as np

        batch = trainer.fit_loop.epoch_loop.batch_progress.total.ready
        draws = [batch, torch.rand(()).item(), float(np.random.rand()), random.random()]
        with self.path.open("a") as lines:
            lines.write(json.dumps(draws) + "\n")


class ZeroGeneratorFrom(L.Callback):
    """Sets every weight of G and of its EMA to zero as training batch `batch` starts: the validations
    after it score a black image, so the best checkpoint by val/psnr is one from before it."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, *args) -> None:  # noqa: ANN002
        if trainer.fit_loop.epoch_loop.batch_progress.total.ready == self.batch:
            with torch.no_grad():
                for network in (module.generator, module.generator_ema):
                    for parameter in network.parameters():
                        parameter.zero_()


def reference_kernel(kind: str, k: int, sx: float, sy: float, theta: float, beta: float) -> np.ndarray:
    """BasicSR's formulas through the covariance matrix and its inverse (degradations.py), padded to 21;
    `kind`: gaussian or generalized (exp(-Q^beta / 2)), plateau (1 / (1 + Q^beta))."""
    ax = np.arange(-(k // 2), k // 2 + 1, dtype=np.float64)
    xx, yy = np.meshgrid(ax, ax)
    grid = np.stack([xx, yy], -1)  # (k, k, 2): (x, y)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    inverse = np.linalg.inv(rot @ np.diag([sx**2, sy**2]) @ rot.T)
    quad = np.sum((grid @ inverse) * grid, -1)
    kernel = 1 / (quad**beta + 1) if kind == "plateau" else np.exp(-0.5 * quad**beta)
    pad = (GRID - k) // 2
    return np.pad(kernel / kernel.sum(), pad)


def reference_sinc(cutoff: float, k: int) -> np.ndarray:
    """BasicSR's circular_lowpass_kernel(cutoff, k) with scipy's Bessel function, padded to 21."""
    r = np.hypot(*np.meshgrid(np.arange(k) - (k - 1) / 2, np.arange(k) - (k - 1) / 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = cutoff * special.j1(cutoff * r) / (2 * np.pi * r)
    kernel[k // 2, k // 2] = cutoff**2 / (4 * np.pi)
    return np.pad(kernel / kernel.sum(), (GRID - k) // 2)
