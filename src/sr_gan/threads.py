"""How many threads torch's CPU operators use in a training process: the cores its data workers leave.

PyTorch starts one intra-op (OpenMP) thread per core it can see, whatever else runs there. A
training process shares those cores with its DataLoader workers and, under DDP, with the other
ranks of its node; an OpenMP operator then waits for whichever of its threads was descheduled. On
this project's 2-core machine under load, a CPU GAN step ran 0.14 it/s with torch's default
threads and 1.8 it/s with one thread per process (`make bench` measures it again: bench_threads).

``cpu_threads: auto`` (conf/train.yaml) gives each training process
``max(1, (cores - processes x data workers) // processes)`` threads; an int forces a count. The
count also goes to ``OMP_NUM_THREADS``, which Lightning's DDP launchers otherwise reset to
``cores // processes`` and which the ranks they start inherit.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from sr_gan.errors import UserError

log = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"
_applied: str | None = None  # the OMP_NUM_THREADS value this module last set (not the user's)
_exported = ""  # OMP_NUM_THREADS as found before this module set it: the user's, or a DDP parent's


def usable_cores() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cpusets, Slurm) where the OS has
    one, else ``os.cpu_count()``; bounded by a cgroup v2 CPU quota (a container's ``--cpus``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):  # no cgroup v2 (macOS, Windows, cgroup v1): the affinity decides
        pass
    return cores


def cpu_threads_for(*, num_workers: int, processes_per_node: int = 1, cores: int | None = None) -> int:
    """Intra-op threads per training process: the cores left after every process's data workers,
    shared among the processes of the node; at least one."""
    cores = usable_cores() if cores is None else cores
    processes = max(1, processes_per_node)
    return max(1, (cores - processes * max(0, num_workers)) // processes)


def local_processes(trainer: Mapping[str, Any]) -> int:
    """Training processes on this node for a trainer config: Lightning starts one per device
    (``devices`` as a count, a list, "0,1", or -1 / "auto": every visible GPU)."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, str):
        text = devices.strip()
        if text == "auto":  # as -1 (a one-item list "auto" was one process)
            devices = -1
        else:
            devices = int(text) if text.lstrip("-").isdigit() else [d for d in text.split(",") if d.strip()] or text
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return max(1, len(devices))
    on_gpu = str(trainer.get("accelerator", "auto")) in ("gpu", "cuda", "auto")
    return max(1, torch.cuda.device_count()) if on_gpu else 1


def configure_cpu_threads(
    setting: int | str | None = "auto", *, num_workers: int = 0, processes_per_node: int = 1
) -> int:
    """Set torch's intra-op thread count (and ``OMP_NUM_THREADS``) for this training process and
    log it; returns the count.

    ``setting``: ``"auto"`` (or None) computes it with `cpu_threads_for`, unless the user exported
    ``OMP_NUM_THREADS``, which is kept; a positive int forces it. Anything else is a UserError
    naming the ``cpu_threads`` key.
    """
    global _applied, _exported
    _exported = _exported_threads()
    threads, reason = resolve_cpu_threads(setting, num_workers=num_workers, processes_per_node=processes_per_node)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = _applied = str(threads)
    log.info("torch CPU threads per training process: %d (%s)", threads, reason)
    return threads


def _exported_threads() -> str:
    """OMP_NUM_THREADS as the user (or a DDP parent) exported it: the value found now, unless it is
    the one this module set itself."""
    current = os.environ.get("OMP_NUM_THREADS", "")
    return _exported if current == _applied else current


def resolve_cpu_threads(
    setting: int | str | None = "auto", *, num_workers: int = 0, processes_per_node: int = 1
) -> tuple[int, str]:
    """The thread count `configure_cpu_threads` sets for `setting` (and why), setting nothing: what
    a cached demo PSNR stage is keyed by, as its weights depend on it."""
    exported = _exported_threads()
    if setting is None or setting == "auto":
        if exported.isdigit() and int(exported) > 0:  # kept for every run of the process (a sweep's jobs)
            return int(exported), "OMP_NUM_THREADS from the environment"
        cores = usable_cores()
        threads = cpu_threads_for(num_workers=num_workers, processes_per_node=processes_per_node, cores=cores)
        return threads, (
            f"cpu_threads=auto: {cores} cores, {num_workers} data workers x {processes_per_node} "
            "training process(es) on this node"
        )
    if isinstance(setting, int) and not isinstance(setting, bool) and setting > 0:
        return setting, f"cpu_threads={setting}"
    raise UserError(f"cpu_threads={setting!r}: use auto (cores left after the data workers) or a positive integer")
