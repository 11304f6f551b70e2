"""The demo's GAN runs start from a PSNR-oriented generator, as both papers' GAN stages do.

``python -m sr_gan.train model=rrdb loss=ragan`` on the demo data would otherwise start the GAN from
noise: in a few hundred batches that gives a dark, cast or gridded image, not a GAN result. With
``demo_psnr_init: true`` (experiment=demo) a GAN objective without ``model.init_from`` first gets
the PSNR stage of the same generator on the same data (``loss=l1``, the demo's PSNR sizes): cached
under ``${paths.cache_dir}/demo_psnr_stage/<key>`` and trained there once when absent, the key
being a hash of everything that makes that stage (generator, data, budget, optimiser, seed, torch's
CPU thread count) and of sr-gan's code: its version and its source files (a release, or an edit
in a clone, may train it otherwise).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

import sr_gan
from sr_gan.atomic import atomic_path
from sr_gan.config import CONF_DIR, is_gan
from sr_gan.run_summary import read_record
from sr_gan.threads import local_processes, resolve_cpu_threads

log = logging.getLogger(__name__)

# Overrides that shape the stage too: the generator, the data, the hardware it runs on; and the run's seed
# (a seed=null run's drawn one), passed on by `stage_config`.
_KEPT = ("model", "data", "experiment", "degradation", "paths.cache_dir", "paths.data_dir", "allow_random_vgg")
_KEPT += ("cpu_threads", "trainer.accelerator", "trainer.devices", "trainer.precision", "trainer.enable_progress_bar")
# ckpt_path=last: a stage cut short (Ctrl-C, SIGTERM) goes on from its last.ckpt when the GAN run is started again.
_STAGE = ["loss=l1", "discriminator=none", "test=false", "logger=csv", "ckpt_path=last", "demo_psnr_init=false"]
RESUME_HINT = "the same GAN command again (it goes on with this PSNR stage)"
PACKAGE_DIR = Path(sr_gan.__file__).parent  # whose source files are in the cache key


def needs_psnr_stage(cfg: DictConfig) -> bool:
    """A demo GAN run that was given no starting generator."""
    return bool(cfg.get("demo_psnr_init")) and is_gan(cfg) and not cfg.model.init_from


class Stage(NamedTuple):
    """The PSNR stage's config and its own Hydra node (group choices ``loss=l1``, ``model=rrdb``;
    overrides): Hydra's view while the stage trains, and its run folder's ``.hydra/``."""

    config: DictConfig
    hydra: DictConfig


def stage_config(cfg: DictConfig) -> Stage:
    """The PSNR stage of `cfg`'s generator and data: the run's model/data overrides + `_STAGE`."""
    task = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    overrides = [*(o for o in task if _kept(o)), f"seed={'null' if cfg.seed is None else cfg.seed}", *_STAGE]
    if GlobalHydra.instance().is_initialized():
        stage = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    else:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            stage = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    hydra = OmegaConf.masked_copy(stage, "hydra")
    with open_dict(stage):
        del stage.hydra
    stage.paths.output_dir = "<cache>"  # not the calling run's folder: every run shares the stage
    resolved = OmegaConf.to_container(stage, resolve=True)
    key = {k: resolved[k] for k in ("model", "data", "optim", "trainer", "seed")}  # type: ignore[index]
    key["sr_gan"] = f"{sr_gan.__version__}+{source_digest(PACKAGE_DIR)}"
    key["torch_threads"] = _stage_threads(stage)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    stage.paths.output_dir = str(Path(cfg.paths.cache_dir) / "demo_psnr_stage" / digest)
    return Stage(stage, hydra)


def source_digest(package: Path) -> str:
    """A hash of the Python files under `package` (names and bytes): a clone's edit to the code
    that trains the stage keys a stage of its own, which a version alone does not (0.6 MB, ~2 ms)."""
    digest = hashlib.sha256()
    for file in sorted(package.rglob("*.py")):
        digest.update(file.relative_to(package).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:12]


def _stage_threads(stage: DictConfig) -> int:
    """The torch thread count the stage will train with: a CPU run's weights depend on it."""
    workers, processes = stage.data.get("num_workers", 0), local_processes(stage.trainer)
    return resolve_cpu_threads(stage.get("cpu_threads", "auto"), num_workers=workers, processes_per_node=processes)[0]


def _kept(override: str) -> bool:
    """Whether a command-line override shapes the PSNR stage too (the generator, the data, the seed)."""
    key = override.lstrip("+~").split("=")[0]
    return any(key == k or key.startswith((f"{k}.", f"{k}/")) for k in _KEPT)


def psnr_stage_checkpoint(cfg: DictConfig, train: Callable[..., object]) -> Path:
    """The last.ckpt of the demo PSNR stage matching `cfg`, trained first with `train` (sr_gan.train's)
    if no finished one is cached."""
    stage, hydra = stage_config(cfg)
    folder = Path(stage.paths.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:  # parallel sweep jobs train it once
        if rank_zero_only.rank == 0:  # DDP: the other ranks train it with rank 0, which holds the lock
            fcntl.flock(lock, fcntl.LOCK_EX)
        checkpoint = folder / "checkpoints" / "last.ckpt"
        if (read_record(folder) or {}).get("status") == "done" and checkpoint.is_file():
            log.info("GAN stage starts from the demo's PSNR-oriented generator (as both papers): %s", checkpoint)
        else:
            log.warning(
                "GAN stage on the demo data: training its PSNR-oriented generator first (both papers start "
                "the GAN from it; cached for later runs) in %s; demo_psnr_init=false starts from noise",
                folder,
            )
            (folder / ".hydra").mkdir(exist_ok=True)
            records = {"hydra.yaml": hydra, "overrides.yaml": hydra.hydra.overrides.task}
            for name, record in records.items():
                with atomic_path(folder / ".hydra" / name) as temporary:
                    temporary.write_text(OmegaConf.to_yaml(record))
            with _hydra_view(hydra):  # its own "ckpt_path=<stage folder>" would resume the GAN run from it
                train(stage, resume_hint=RESUME_HINT, next_steps=False)
    return checkpoint


@contextmanager
def _hydra_view(hydra: DictConfig) -> Iterator[None]:
    """Hydra's view of the running job is the stage's while it trains, so what reads it (the
    config.yaml's group choices, W&B names) describes the stage, not the GAN run that started it."""
    outer = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(hydra)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = outer
