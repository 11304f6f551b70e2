"""``python -m sr_gan.train``: compose the config, train, test the best checkpoint.

Order of construction follows lightning-hydra-template: datamodule -> module -> callbacks ->
loggers -> trainer. Returns the monitored metric so Hydra sweepers can optimise it.
"""

from __future__ import annotations

import gc
import logging
import secrets
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from sr_gan.archs import count_parameters
from sr_gan.callbacks import BatchBudget, BudgetProgressBar, PreemptionCheckpoint, RNGState
from sr_gan.checkpoint_io import downloaded_once, load_run_checkpoint
from sr_gan.cli import hydra_command
from sr_gan.config import (
    check_data_folders,
    check_init_from,
    check_run_subfolders,
    check_train_config,
    is_gan,
    keep_recorded_start,
    path_arg,
    precision_advice,
    register_resolvers,
    save_resolved_config,
    slurm_requeued,
)
from sr_gan.data import SRDataModule
from sr_gan.demo_stage import needs_psnr_stage, psnr_stage_checkpoint
from sr_gan.errors import INTERRUPTED_EXIT_CODE, USER_ERROR_EXIT_CODE, SweepJobFailed, UserError, exit_on_user_error
from sr_gan.lit import SRGANModule
from sr_gan.lit.ddp import PlayerDDPStrategy
from sr_gan.loggers import SRWandbLogger
from sr_gan.losses.perceptual import RANDOM_VGG_WARNING
from sr_gan.ranks import (
    OTHER_NODE_WAIT_S,
    STARTED_RANK_WAIT_S,
    clear_failures,
    ended_rank_line,
    failed_rank,
    is_secondary,
    is_timeout,
    job_seed,
    ranks_of_this_job,
    record_failure,
    share_with_ranks,
    start_ranks_as_this_job,
    timeout_line,
    when_stopped,
)
from sr_gan.run_folders import budget_batches
from sr_gan.run_summary import RunRecord, environment, quiet_third_party_noise, read_record, summary
from sr_gan.schema import MAX_SEED
from sr_gan.threads import configure_cpu_threads, local_processes
from sr_gan.weights import GeneratorWeights, fit_problems, is_url, load_generator_weights

log = logging.getLogger(__name__)
register_resolvers()


def build_module(cfg: DictConfig, *, resuming: bool = False) -> SRGANModule:
    """Instantiate the LightningModule, initialising G from ``model.init_from`` when set, unless
    `resuming`: the checkpoint then holds G, and model.init_from (repeated by a relaunch, its file
    perhaps moved or deleted since the run started) is not read."""
    module: SRGANModule = instantiate(cfg.module)
    module.generator_config = OmegaConf.to_container(cfg.model.generator, resolve=True)
    if cfg.discriminator is not None:
        module.discriminator_config = OmegaConf.to_container(cfg.discriminator, resolve=True)
    lr_patch, multiple = cfg.data.patch_size // cfg.data.scale, getattr(module.generator, "unshuffle", 1)
    if lr_patch % multiple:  # validation images are edge-padded to it; training patches must fit
        raise UserError(
            f"data.patch_size={cfg.data.patch_size} gives {lr_patch}-px LR patches, which "
            f"{type(module.generator).__name__} at x{cfg.data.scale} cannot take (it pixel-unshuffles its input "
            f"by {multiple}): set data.patch_size to a multiple of {cfg.data.scale * multiple}"
        )
    if cfg.model.init_from and resuming:
        log.info("model.init_from=%s not read: the checkpoint resumed holds the generator", cfg.model.init_from)
    elif cfg.model.init_from:  # a URL (the released ESRGAN weights Real-ESRNet starts from) is fetched once, cached
        example = "<the PSNR run>/checkpoints/last.ckpt"
        source = path_arg(cfg, "model.init_from", example=example, must_exist=True, url=True)
        weights = load_generator_weights(source, prefer_ema=cfg.model.init_from_ema)  # builds nothing from the file
        if problems := fit_problems(module.generator, weights.state):
            raise UserError(
                f"model.init_from={cfg.model.init_from} does not fit the configured generator "
                f"{cfg.model.generator._target_} ({problems}): use the model=..., model.generator.* "
                "(num_features, num_blocks, ...) and data.scale of the run that wrote it (its config.yaml)"
            )
        module.init_generator_from(weights.state)
        log.info("generator initialised from %s (%s)", cfg.model.init_from, _which_weights(weights, cfg))
    return module


def _which_weights(weights: GeneratorWeights, cfg: DictConfig) -> str:
    """Which of the file's generator weights G starts from, and the key that picks them."""
    if weights.ema is None:
        return "the weights it holds; it does not say whether they are an EMA"
    picked = "its EMA of G" if weights.ema else "G's own weights, not its EMA"
    if weights.ema == cfg.model.init_from_ema:
        return f"{picked}: model.init_from_ema={str(cfg.model.init_from_ema).lower()}"
    return f"{picked}, the only ones it holds"


PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: what a shell reports for a job the scheduler terminated


def stopped_by_ctrl_c(trainer: L.Trainer) -> bool:
    """Whether the signal that stopped the fit was this process's Ctrl-C (else a SIGTERM)."""
    return any(isinstance(c, PreemptionCheckpoint) and c.ctrl_c for c in trainer.callbacks)


def resolve_ckpt_path(value: str | None, output_dir: Path) -> str | None:
    """The checkpoint to resume from: a file, an http(s) URL, a run folder (its last.ckpt), or
    ``last``: this run folder's ``checkpoints/last.ckpt`` if it exists (a requeued job with a fixed
    ``hydra.run.dir``), else none and the run starts afresh. A SLURM job that was requeued
    (``SLURM_RESTART_COUNT`` > 0) resumes as with ``last`` when no ckpt_path is given."""
    if value in (None, "") and slurm_requeued():
        value = "last"  # a requeued SLURM job continues its run folder rather than overwrite it
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


def train(cfg: DictConfig, *, resume_hint: str | None = None, next_steps: bool = True) -> float | None:
    """Train and test one configuration; return ``cfg.optimized_metric`` from the test.

    A run inside another (the demo's PSNR stage) passes how it is resumed (`resume_hint`, instead
    of its own folder's command) and ``next_steps=False``: the run it serves names the next commands."""
    check_train_config(cfg)
    check_data_folders(cfg)
    output_dir = Path(cfg.paths.output_dir)
    check_run_subfolders(output_dir)  # before a URL checkpoint is fetched into it
    if advice := precision_advice(cfg):
        log.warning(advice)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    if ckpt_path is not None and (done := _finished(cfg, output_dir, Path(ckpt_path))) is not None:
        metric = done.get(cfg.optimized_metric)  # what the run returned to the sweeper when it ended
        return None if metric is None else float(metric)
    check_init_from(cfg, resuming=ckpt_path is not None)
    if ckpt_path is not None and is_url(ckpt_path):  # fetched once and checked before anything is written
        with downloaded_once(ckpt_path, folder=output_dir) as local:  # on the run's disk, gone when the run ends
            return _train(cfg, str(local), resume_hint=resume_hint, next_steps=next_steps)
    return _train(cfg, ckpt_path, resume_hint=resume_hint, next_steps=next_steps)


def _train(cfg: DictConfig, ckpt_path: str | None, *, resume_hint: str | None, next_steps: bool) -> float | None:
    """`train` from a local checkpoint (or none)."""
    checkpoint = None if ckpt_path is None else load_run_checkpoint(ckpt_path, mmap=True)  # keys and metadata: ms
    if checkpoint is not None:
        _check_resumed_states(ckpt_path, checkpoint)
    if cfg.get("seed") is None:
        cfg.seed = _drawn_seed(checkpoint)
        share_with_ranks(f"seed={cfg.seed}")  # the DDP ranks this process starts take this seed, not one of their own
    if ckpt_path is None and needs_psnr_stage(cfg):  # the demo's GAN stage, from its PSNR stage
        cfg.model.init_from = str(psnr_stage_checkpoint(cfg, train))
    # The EMA generator and the frozen VGG are in eval mode on purpose.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.float32_matmul_precision)

    workers, processes = cfg.data.get("num_workers", 0), local_processes(cfg.trainer)
    configure_cpu_threads(cfg.get("cpu_threads", "auto"), num_workers=workers, processes_per_node=processes)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    if isinstance(datamodule, SRDataModule) and datamodule.prepare is None:  # its images are there: read
        datamodule.setup("fit")  # their headers now, so that a bad one is refused before the run's record
    module = build_module(cfg, resuming=checkpoint is not None)
    if checkpoint is not None:  # refused before the run's record is rewritten
        module.check_resumable(checkpoint)
    trainer = build_trainer(cfg)
    for lg in trainer.loggers:
        if isinstance(lg, SRWandbLogger):
            lg.fresh = checkpoint is None  # an earlier attempt's W&B run in this folder is not continued
    for name in ("generator", "discriminator"):
        if (network := getattr(module, name)) is not None:
            log.info("%s: %s, %s parameters", name, type(network).__name__, f"{count_parameters(network):,}")
    resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    resolved["choices"] = _choices()
    resolved["environment"] = environment()
    run_warnings = _what_ran(module, resolved)
    folder = Path(cfg.paths.output_dir)
    record = RunRecord.resumed(folder) if ckpt_path is not None else RunRecord(folder=folder)
    if trainer.is_global_zero:
        clear_failures(folder)  # an earlier attempt's, in a resumed run's folder
        if ckpt_path is not None and (ignored := keep_recorded_start(resolved, _started_record(folder, ckpt_path))):
            log.warning(
                "%s: a resume goes on with its checkpoint's random states and patch stream, whatever the "
                "command's seed; config.yaml keeps the run's",
                ", ".join(ignored),
            )
        save_resolved_config(resolved, record.folder / "config.yaml")
        record.write()
        when_stopped(lambda line: _record_stopped(record, trainer, line))
    for lg in trainer.loggers:
        lg.log_hyperparams(resolved)
        if run_warnings and isinstance(lg, WandbLogger) and trainer.is_global_zero:  # rank > 0: no W&B run
            lg.experiment.summary["warnings"] = "; ".join(run_warnings)
    status, error, last = "failed", None, {}
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        last = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if cfg.test:
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        status = "done"
        metric = trainer.callback_metrics.get(cfg.optimized_metric)
        return None if metric is None else float(metric)
    except SIGTERMException:  # the checkpoint is saved (callbacks.PreemptionCheckpoint)
        if stopped_by_ctrl_c(trainer):
            status = "interrupted"
            raise SystemExit(INTERRUPTED_EXIT_CODE) from None
        status = "preempted"
        raise SystemExit(PREEMPTED_EXIT_CODE) from None
    except SystemExit:
        if trainer.interrupted:  # a second Ctrl-C: Lightning tears the run down and exits with status 1
            status = "interrupted"
        raise
    except KeyboardInterrupt:  # a second Ctrl-C while the first one's checkpoint was written (the last one stays)
        status = "interrupted"
        raise SystemExit(1) from None
    except BaseException as err:
        error = _rank_failure(trainer, folder, err)
        if error is not err:
            raise error from None
        raise
    finally:
        if trainer.is_global_zero:
            score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
            best_psnr = None if score is None else float(score)
            record.metrics = {**last, **({"best/val/psnr": best_psnr} if best_psnr is not None else {})}
            record.finish(status, trainer, error)
            resume = resume_hint or _resume_hint(record.folder)
            for line in summary(
                record, best_psnr=best_psnr, last=last, gan=is_gan(cfg), resume=resume, next_steps=next_steps
            ):
                log.info(line)
        _finish_wandb()
        if module.compile_backend is not None:
            # A sweep's jobs share this process (Hydra's basic launcher, an Optuna search): dynamo kept each
            # job's compiled networks (their CUDA-graph pools too) and, from the 9th architecture a sweep
            # tried, ran G uncompiled (its recompile_limit, 8) with one warning among the logs.
            torch._dynamo.reset()


def _finished(cfg: DictConfig, folder: Path, ckpt_path: Path) -> dict[str, Any] | None:
    """A run resumed in its own folder (``ckpt_path=last``: a sweep relaunched into its folder, a
    requeued job) that its run.json says is done, with the budget asked for trained and, where asked
    for, tested, is left as it is: its recorded metrics, else None (it resumes). Resumed,
    it trained nothing but tested again, logged a second W&B segment, added to its wall time and lost
    its last batch's and last validation's metrics.csv rows (the test logs at that step)."""
    record = read_record(folder) or {}
    budget = budget_batches(cfg)
    metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    if (
        ckpt_path != folder / "checkpoints" / "last.ckpt"
        or record.get("status") != "done"
        or not isinstance(record.get("batches"), int)
        or record["batches"] < budget
        or (cfg.test and not any(key.startswith("test/") for key in metrics))
    ):
        return None
    log.info(
        "%s is done (run.json: %d batches of %d%s): nothing to train or test, the run stays as it is "
        "(a larger trainer.max_steps trains it further)",
        folder,
        record["batches"],
        budget,
        ", tested" if cfg.test else "",
    )
    return metrics


def _check_resumed_states(ckpt_path: str, checkpoint: dict[str, Any]) -> None:
    """A one-line UserError naming the checkpoint when its random states or patch stream position
    would not restore (damaged or crafted: a traceback from Lightning or the sampler at the start)."""
    callbacks = checkpoint.get("callbacks")
    states = {
        "random states (RNGState)": (callbacks.get("RNGState") if isinstance(callbacks, dict) else None, RNGState),
        "patch stream (SRDataModule)": (checkpoint.get("SRDataModule"), SRDataModule),
    }
    for name, (state, owner) in states.items():
        try:
            if state is not None:
                owner.check_state(state)
        except (TypeError, KeyError, ValueError, IndexError, AttributeError, RuntimeError) as err:
            raise UserError(
                f"ckpt_path={ckpt_path}: its {name} would not restore ({err}): the checkpoint is damaged or was not "
                "written by sr-gan; resume from a checkpoint you trust, or start a new run from its weights with "
                "model.init_from"
            ) from None


def _started_record(folder: Path, ckpt_path: str) -> Path:
    """The config.yaml that says how a resumed run started: its own folder's, or for a branch (a new
    folder) that of the run whose ``checkpoints/`` holds the checkpoint."""
    own, checkpoint = folder / "config.yaml", Path(ckpt_path).resolve()
    return own if own.is_file() or checkpoint.parent.name != "checkpoints" else checkpoint.parents[1] / "config.yaml"


def _drawn_seed(checkpoint: dict[str, Any] | None) -> int:
    """The seed of a run given ``seed=null``, set into its config so that config.yaml and W&B record
    it: a resumed run's, which its checkpoint's patch stream holds, else, in ranks that torchrun or
    srun started, one derived alike from their job (`job_seed`), else a fresh draw from the
    operating system (not from the global generators, which an earlier sweep job in this process
    seeded), in the range that `L.seed_everything` takes (a checkpoint of a seed=null run written
    before the seed was recorded holds a 63-bit stream seed: that resume draws one)."""
    seed = ((checkpoint or {}).get("SRDataModule") or {}).get("seed")
    if seed is not None and seed <= MAX_SEED:
        return int(seed)
    # ranks started by torchrun or srun derive theirs alike; a process alone draws from the OS
    seed, origin = job_seed(MAX_SEED) or (secrets.randbelow(MAX_SEED + 1), "the operating system")
    log.info(
        "seed=null: this run takes seed %d from %s (recorded in its config.yaml; seed=%d reruns it)", seed, origin, seed
    )
    return seed


def _rank_failure(trainer: L.Trainer, folder: Path, err: BaseException) -> BaseException:
    """The error this rank ends a failed DDP run with. A rank that fails makes the others fail in turn,
    on the connection it closed (`is_secondary`): a rank > 0 records its own error in `folder` for rank
    0, and ends quietly (exit 1) on a secondary one; rank 0 reports the failed rank's error (a
    UserError: ``rank <r> failed: <its error>``) instead of its own secondary one, or, where none was
    recorded (a rank killed), which rank ended and how. A collective that timed out (a rank stuck) is
    said in one line naming ``trainer.strategy.timeout_s``; the lines of causes outside the run say how
    to resume it."""
    if trainer.world_size == 1:
        return err
    secondary = is_secondary(err)
    if is_timeout(err):  # a rank stuck outside any collective (none failed): this one gave up on it
        err = UserError(f"{timeout_line(getattr(trainer.strategy, 'timeout_s', None))}; resume: {_resume_hint(folder)}")
    if trainer.global_rank > 0:
        if secondary:
            return SystemExit(1)
        record_failure(folder, trainer.global_rank, err)
        return err
    wait_s = OTHER_NODE_WAIT_S if trainer.num_nodes > 1 else 0  # on one node it is there before the error
    if secondary and (line := failed_rank(folder, wait_s=wait_s)) is not None:
        return UserError(line)
    if secondary:  # a rank killed (out of host memory, kill -9): nothing of the run's own to fix
        return UserError(f"{ended_rank_line(STARTED_RANK_WAIT_S)}; resume: {_resume_hint(folder)}")
    return err


def _record_stopped(record: RunRecord, trainer: L.Trainer, line: str) -> None:
    """run.json of a run whose rank 0 `RankWatch` stopped, waiting for a failed rank: failed, with that
    rank's recorded error, else `line`; its batches (a host counter), no device value (rank 0's main
    thread waits in a collective on the device)."""
    record.batches = trainer.fit_loop.epoch_loop.batch_progress.total.completed
    record.finish("failed", None, UserError(failed_rank(record.folder, wait_s=0) or line))


def _resume_hint(folder: Path) -> str | None:
    """How to resume a run cut short: in its own folder (``hydra.run.dir``), where it goes on with its
    run.json, metrics.csv, W&B run and best score; ``ckpt_path=<folder>`` alone would resume into a new
    timestamped folder, and ``ckpt_path=last`` alone start afresh there. A sweep's job: the sweep in its
    folder (``hydra.sweep.dir``), where its done jobs stay as they are (``ckpt_path=<job folder>`` made
    every job of a new sweep a branch of this one)."""
    if (sweep := _sweep_folder(folder)) is not None:
        return f"the same sweep with hydra.sweep.dir={sweep} ckpt_path=last (its done jobs stay as they are)"
    return f"the same command with hydra.run.dir={folder} ckpt_path=last"


def _sweep_folder(folder: Path) -> Path | None:
    """The folder of the sweep (``hydra.sweep.dir``) whose job runs in `folder`; None outside a sweep."""
    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return None
    return folder.parents[len(Path(str(HydraConfig.get().sweep.subdir)).parts) - 1]


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Lightning Trainer of ``cfg.trainer`` with sr-gan's callbacks and loggers; budgets, validation
    interval and the progress bar count optimizer iterations (x ``optim.accumulate_batches`` batches)."""
    batches = budget_batches(cfg)
    callbacks: list[L.Callback] = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    callbacks.append(BatchBudget(batches))
    if cfg.trainer.enable_progress_bar:
        callbacks.append(BudgetProgressBar(batches))
    loggers = [instantiate(lg) for lg in (cfg.logger or {}).values() if lg is not None]
    options: dict[str, Any] = {}
    processes = local_processes(cfg.trainer) * cfg.trainer.get("num_nodes", 1)
    strategy = cfg.trainer.get("strategy", "auto")
    if strategy == "ddp" or (strategy == "auto" and processes > 1):
        # Lightning's DDP, one wrapper around the module, cannot train a GAN stage (unused parameters)
        log.info("%d process(es): DDP with one wrapper per trained network, as trainer=ddp", processes)
        options["strategy"] = PlayerDDPStrategy()
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        max_steps=-1,
        max_epochs=-1,
        val_check_interval=cfg.trainer.val_check_interval * cfg.optim.accumulate_batches,
        **options,
    )
    start_ranks_as_this_job(trainer)
    return trainer


def _what_ran(module: SRGANModule, resolved: dict[str, Any]) -> list[str]:
    """Make the recorded config say what actually runs, and return the warnings the run carries: a
    perceptual loss whose ImageNet VGG could not be fetched runs a random VGG (allow_random)."""
    perceptual = module.perceptual_loss
    if perceptual is None or not getattr(perceptual, "random_weights", False):
        return []
    resolved["loss"]["perceptual"]["pretrained"] = False
    if isinstance(resolved.get("module", {}).get("perceptual_loss"), dict):  # its resolved copy says so too
        resolved["module"]["perceptual_loss"]["pretrained"] = False
    resolved["warnings"] = [RANDOM_VGG_WARNING]
    return resolved["warnings"]


def _choices() -> dict[str, str]:
    """The config group options of this run (``loss: ragan``), logged beside the resolved config so
    that W&B can group and filter runs by them."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return {group: str(option) for group, option in choices.items() if not group.startswith("hydra")}


def _finish_wandb() -> None:
    """Close a W&B run if one was started, also on failure (template slip: it leaked runs)."""
    wandb = sys.modules.get("wandb")  # not imported: no run (importing it only to ask took 0.4 s)
    if wandb is not None and wandb.run is not None:
        wandb.finish()


@hydra_command("train")
def main(cfg: DictConfig) -> float | None:
    quiet_third_party_noise()  # process-wide logging and warning settings: the command line's only
    try:
        with ranks_of_this_job():  # a sweep's next job starts DDP ranks of its own
            return exit_on_user_error(train)(cfg)
    except SystemExit as stop:
        folder = Path(cfg.paths.output_dir)
        _remove_if_unused(folder, Path(cfg.paths.log_dir))
        if stop.code == USER_ERROR_EXIT_CODE and (sweep := _sweep_folder(folder)) is not None:
            raise SweepJobFailed(
                f"job {HydraConfig.get().job.num} of the sweep failed (its error above, {folder}); the sweep "
                f"runs its other jobs regardless: python -m sr_gan.compare {sweep} shows each job's status"
            ) from None
        raise
    finally:
        if HydraConfig.get().mode == RunMode.MULTIRUN:  # the next job runs in this process
            _release_job_memory()


def _release_job_memory() -> None:
    """Free what an ended job of a sweep held before the next job starts in this process. Its trainer,
    networks and optimizer states are reference cycles, which only the collector frees, and a full
    collection can wait thousands of batches: at the start of a sweep's 4th job the three before it
    were all still in memory (measured: 4 trainers), on a GPU with their weights, gradients and Adam
    states. The GPU's cached blocks go back to the driver and its peak counter restarts, so that each
    job's ``memory/gpu_peak_gib`` is its own (it was the largest of the sweep's jobs so far)."""
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _remove_if_unused(folder: Path, log_dir: Path) -> None:
    """A run refused at start-up leaves no run folder: Hydra makes one (.hydra/, train.log) before the
    config is checked; it goes if nothing else was written, with the folders Hydra made for it below
    `log_dir` (``train/runs/``) that are left empty."""
    if not folder.is_dir() or not {p.name for p in folder.iterdir()} <= {".hydra", "train.log"}:
        return
    shutil.rmtree(folder, ignore_errors=True)
    for parent in folder.resolve().parents:
        if not parent.is_relative_to(log_dir.resolve()) or parent == log_dir.resolve():
            break
        try:
            parent.rmdir()  # only an empty one
        except OSError:
            break


if __name__ == "__main__":
    main()
