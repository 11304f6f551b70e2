"""Lightning checkpoint files: written atomically and only when finite, read without unpickling code.

`SafeCheckpointIO` is the trainer's checkpoint plugin (conf/trainer/default.yaml):

- save: the weights are checked for NaN/Inf first (a diverged run never replaces a good
  checkpoint), then the file is written beside its target, flushed and renamed over it
  (`sr_gan.atomic.atomic_path`): a crash, `kill -9` or full disk leaves the previous checkpoint
  intact. Lightning's own save writes to a temporary file elsewhere and moves it, which across
  file systems is a copy that truncates the old checkpoint first.
- load: local files and http(s) URLs alike go through `torch.load(weights_only=True)`
  (`sr_gan.weights.load_state_file`): a checkpoint that would unpickle Python objects, and so
  could run code, is refused. Lightning loads URLs with `weights_only=False`. A checkpoint whose
  ModelCheckpoint state names a file by a '..', a relative path or a URL is refused too
  (`_check_checkpoint_names`): Lightning deletes the files named there.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO

from sr_gan.atomic import atomic_path, remove_stale_temporaries
from sr_gan.errors import UserError
from sr_gan.weights import load_state_file, non_finite_keys
from sr_gan.weights.remote import fetch

log = logging.getLogger(__name__)


@contextmanager
def downloaded(url: str, *, folder: str | Path) -> Iterator[Path]:
    """`url` downloaded into a temporary file in `folder`, removed when the block ends. A UserError
    raised in the block names `url`, not the temporary file."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".sr_gan-download-", dir=folder) as temporary:
        local = Path(temporary) / "checkpoint.ckpt"
        fetch(url, local, key="ckpt_path")
        with _naming(url, local):
            yield local


@contextmanager
def downloaded_once(url: str, *, folder: str | Path) -> Iterator[Path]:
    """`url` downloaded once for all the processes of a run (the DDP ranks: those Lightning starts,
    and those torchrun or srun start side by side with a fixed ``hydra.run.dir``): into the run
    `folder` under a name made from the URL, by the first process to take the folder's lock for it;
    the others wait for the lock and read that copy (one download for N GPUs, not N). Each process
    removes the copy when its block ends, after its fit: by then every rank has loaded it (DDP's
    start-up broadcast waits for every rank, and a rank loads the checkpoint before it); a rank
    that still finds it gone fetches it again. Where the file system cannot lock (some Lustre and
    NFS mounts), each process fetches its own copy (`downloaded`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f".sr_gan-download-{hashlib.sha256(url.encode()).hexdigest()[:16]}"
    local, lock_path = folder / f"{name}.ckpt", folder / f"{name}.lock"
    try:
        with open(lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, once the copy is whole
            except OSError:
                locked = False
            else:
                locked = True
                if not local.is_file():
                    fetch(url, local, key="ckpt_path")
        if locked:
            with _naming(url, local):
                yield local
        else:
            log.info("no file lock in %s: this process downloads its own copy of %s", folder, url)
            with downloaded(url, folder=folder) as own:
                yield own
    finally:  # also after a failed download: nothing is left in the run folder
        local.unlink(missing_ok=True)
        lock_path.unlink(missing_ok=True)


@contextmanager
def _naming(url: str, local: Path) -> Iterator[None]:
    """A UserError raised in the block names `url` where it named its local copy."""
    try:
        yield
    except UserError as err:
        err.args = tuple(str(arg).replace(str(local), url) for arg in err.args)
        raise


def load_run_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """A training run's checkpoint file, read code-free (a URL is fetched first: `downloaded_once`);
    weights alone are a one-line UserError naming model.init_from. `mmap` maps the file instead of
    reading it: sr_gan.train's look at the networks a checkpoint holds, before Lightning loads it in full."""
    checkpoint = load_state_file(path, mmap=mmap, refusal=lambda start: _not_a_checkpoint(path, start))
    if not isinstance(checkpoint, dict) or "pytorch-lightning_version" not in checkpoint:
        raise UserError(
            f"ckpt_path={path} holds weights, not a training run's checkpoint (last.ckpt, best.ckpt): "
            f"to start a run from these weights use model.init_from={path}"
        )
    _check_checkpoint_names(path, checkpoint)
    return checkpoint


# The keys of a ModelCheckpoint state that name checkpoint files. A resumed run's ModelCheckpoint
# takes them over and deletes the file (recursively: a folder too) that a newer checkpoint replaces,
# when its folder is among the name's parents as written: `<run>/checkpoints/../../home` passes that.
CHECKPOINT_NAMES = ("best_model_path", "kth_best_model_path", "last_model_path")


def _check_checkpoint_names(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """A one-line UserError when a callback state of `checkpoint` names a file other than by an
    absolute local path without '..' (Lightning writes real paths): a '..' escapes the folder that
    Lightning checks, a URL is deleted unchecked and a relative name is taken from the working
    folder. A path through a link is kept: a run folder moved behind a link names its old place,
    which Lightning leaves alone (not under the resumed run's real folder)."""
    for state in (checkpoint.get("callbacks") or {}).values():
        if not isinstance(state, Mapping):
            continue
        names = [state.get(key) for key in CHECKPOINT_NAMES] + list(state.get("best_k_models") or {})
        for name in names:
            if name and not (isinstance(name, str) and _is_plain_local_path(name)):
                raise UserError(
                    f"ckpt_path={path}: its checkpoint callback state names {name!r}, which is no plain path of a "
                    "checkpoint file (a '..', a relative path or a URL): resuming would let Lightning delete it; the "
                    "file may be crafted: resume from a checkpoint you trust, or start a new run with model.init_from"
                )


def follow_moved_folder(state: dict[str, Any], dirpath: str) -> str | None:
    """Rename in a ModelCheckpoint `state` the files of the folder it was written in (its 'dirpath')
    to the same names in `dirpath`, and its 'dirpath' to `dirpath`; the folder it names, or None when
    that is `dirpath` already. Lightning restores a state only when its 'dirpath' is the callback's:
    the state of a run folder that moved (another disk, another mount, a link within it) lost the best
    score and the best file's name, and the next validation wrote best-v1.ckpt beside a stale
    best.ckpt. A name outside that folder stays as it is (Lightning removes only files of `dirpath`)."""
    written = state.get("dirpath")
    if not isinstance(written, str) or written == dirpath:
        return None

    def moved(name: Any) -> Any:
        return (
            os.path.join(dirpath, os.path.basename(name))
            if isinstance(name, str) and os.path.dirname(name) == written
            else name
        )

    for key in CHECKPOINT_NAMES:
        if key in state:
            state[key] = moved(state[key])
    if isinstance(state.get("best_k_models"), Mapping):
        state["best_k_models"] = {moved(name): score for name, score in state["best_k_models"].items()}
    state["dirpath"] = dirpath
    return written


def _is_plain_local_path(name: str) -> bool:
    """An absolute local path with no '..' among its parts."""
    return "://" not in name and os.path.isabs(name) and ".." not in Path(name).parts


def _not_a_checkpoint(path: str | Path, start: str) -> str:
    """The error for a ckpt_path that holds no weights at all (an image, a web page, a log)."""
    return (
        f"ckpt_path={path} is not a checkpoint ({start}): "
        "pass a run's checkpoints/last.ckpt or best.ckpt, its run folder, an http(s) URL, or last"
    )


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic, finite-only checkpoint writes and code-free reads (see the module docstring)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        path = Path(path)
        if bad := non_finite_keys(checkpoint.get("state_dict", {})):
            raise UserError(
                f"refused to write {path}: {len(bad)} weight tensors hold NaN/Inf (e.g. {bad[0]}), the run "
                "diverged; the previous checkpoint is intact: resume from it with a lower learning rate"
            )
        remove_stale_temporaries([path])
        try:
            with atomic_path(path) as temporary, open(temporary, "wb") as file:
                torch.save(checkpoint, file)  # through a Python file: a failed write raises its OSError
        except (OSError, RuntimeError) as failure:
            if (err := _os_error(failure)) is None:
                raise
            reason = "the disk is full" if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else err.strerror
            raise UserError(
                f"cannot write checkpoint {path}: {reason} ({err}); the previous checkpoint is intact: "
                "free space (or choose paths.log_dir on another disk) and resume with ckpt_path=last"
            ) from None

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_run_checkpoint(path)


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind `err`: torch.save reports a failed write as a RuntimeError whose context it is."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err
