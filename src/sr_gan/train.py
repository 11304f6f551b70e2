"""``python -m sr_gan.train``: compose the config, train, test the best checkpoint.

Order of construction follows lightning-hydra-template: datamodule -> module -> callbacks ->
loggers -> trainer. Returns the monitored metric so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from sr_gan.callbacks import BatchBudget
from sr_gan.checkpoint_io import is_url
from sr_gan.config import check_train_config, register_resolvers, save_resolved_config
from sr_gan.errors import UserError, exit_on_user_error
from sr_gan.lit import SRGANModule
from sr_gan.threads import configure_cpu_threads, local_processes
from sr_gan.weights import extract_generator_state, load_state_file

log = logging.getLogger(__name__)
register_resolvers()


def build_module(cfg: DictConfig) -> SRGANModule:
    """Instantiate the LightningModule, initialising G from ``model.init_from`` when set."""
    module: SRGANModule = instantiate(cfg.module)
    module.generator_config = OmegaConf.to_container(cfg.model.generator, resolve=True)
    if cfg.discriminator is not None:
        module.discriminator_config = OmegaConf.to_container(cfg.discriminator, resolve=True)
    if cfg.model.init_from:
        state = extract_generator_state(load_state_file(cfg.model.init_from), prefer_ema=True)
        try:
            module.init_generator_from(state)
        except RuntimeError as err:
            first_line = str(err).splitlines()[0]
            raise UserError(
                f"model.init_from={cfg.model.init_from} does not fit the configured generator "
                f"({first_line}): use the same model=... and size as the run that wrote it"
            ) from None
        log.info("generator initialised from %s", cfg.model.init_from)
    return module


PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: what a shell reports for a job the scheduler terminated


def resolve_ckpt_path(value: str | None, output_dir: Path) -> str | None:
    """The checkpoint to resume from: a file, an http(s) URL, a run folder (its last.ckpt), or
    ``last``: this run folder's ``checkpoints/last.ckpt`` if it exists (a requeued job with a fixed
    ``hydra.run.dir``), else none and the run starts afresh."""
    if value in (None, ""):
        return None
    if is_url(value):
        return str(value)
    if value == "last":
        last = output_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            log.info("ckpt_path=last: no %s yet, starting from scratch", last)
            return None
        return str(last)
    path = Path(value)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise UserError(
            f"ckpt_path={value}: no such checkpoint; pass a .ckpt file, a run folder holding "
            "checkpoints/last.ckpt, an http(s) URL, or last"
        )
    return str(path)


def train(cfg: DictConfig) -> float | None:
    """Train and test one configuration; return ``cfg.optimized_metric`` from the test."""
    check_train_config(cfg)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), Path(cfg.paths.output_dir))
    # The EMA generator and the frozen VGG are in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)

    workers, processes = cfg.data.get("num_workers", 0), local_processes(cfg.trainer)
    configure_cpu_threads(cfg.get("cpu_threads", "auto"), num_workers=workers, processes_per_node=processes)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    module = build_module(cfg)
    callbacks: list[L.Callback] = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    batches_per_iteration = cfg.optim.accumulate_batches
    callbacks.append(BatchBudget(cfg.trainer.max_steps * batches_per_iteration))
    loggers = [instantiate(lg) for lg in (cfg.logger or {}).values() if lg is not None]
    trainer: L.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        max_steps=-1,
        max_epochs=-1,
        val_check_interval=cfg.trainer.val_check_interval * batches_per_iteration,
    )
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if trainer.is_global_zero:
        save_resolved_config(resolved, Path(cfg.paths.output_dir) / "config.yaml")
    for lg in trainer.loggers:
        lg.log_hyperparams(resolved)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if cfg.test:
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        metric = trainer.callback_metrics.get(cfg.optimized_metric)
        return None if metric is None else float(metric)
    except SIGTERMException:  # the checkpoint is saved (callbacks.PreemptionCheckpoint)
        raise SystemExit(PREEMPTED_EXIT_CODE) from None
    finally:
        _finish_wandb()


def _finish_wandb() -> None:
    """Close a W&B run if one was started, also on failure (template slip: it leaked runs)."""
    try:
        import wandb
    except ImportError:  # pragma: no cover - wandb is a dependency, but stay robust
        return
    if wandb.run is not None:
        wandb.finish()


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    main()
