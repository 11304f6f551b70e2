"""Config helpers shared by the Hydra apps: resolvers and start-up checks that name the keys (device too)."""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch
from hydra._internal.utils import _locate
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from sr_gan.atomic import atomic_path, link_outside, probe_folder
from sr_gan.errors import UserError, closest
from sr_gan.imageio import IMAGE_EXTENSIONS, list_images
from sr_gan.run_folders import read_yaml
from sr_gan.schema import TRAIN, validate
from sr_gan.weights.remote import cached_download, is_url

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent / "conf"  # the link to conf/ (in a wheel: its copy)
BICUBIC = "sr_gan.ops.BicubicDegradation"  # conf/degradation/bicubic.yaml: the papers' LR, what LR files hold


def _if_pixel_loss(pixel_only: Any, otherwise: Any, *, _root_: DictConfig) -> Any:
    """``${if_pixel_loss:a,b}``: ``a`` when the objective has only a pixel term, else ``b``.

    The CPU demo sizes itself with it: VGG19 and discriminator passes cost about ten times a
    small generator's, so perceptual and GAN objectives get smaller patches and fewer batches.
    """
    loss = _root_.loss
    value = pixel_only if loss.get("perceptual") is None and loss.get("adversarial") is None else otherwise
    return OmegaConf.create(value) if isinstance(value, list | dict) else value  # a node, to resolve in place


def _run_group(*, _root_: DictConfig) -> str:
    """``${run_group:}``: the W&B group, the ablation family a run belongs to: in a sweep (-m) the
    sweep, ``<experiment>-<sweep folder>``, so its jobs line up; otherwise the experiment."""
    hydra = HydraConfig.get()
    experiment = hydra.runtime.choices.get("experiment", "run")
    if hydra.mode == RunMode.MULTIRUN:
        return f"{experiment}-{Path(hydra.sweep.dir).name}"
    return experiment


def _run_name() -> str:
    """``${run_name:}``: the overrides that make this run what it is: in a sweep the swept ones
    (``loss=ragan``, the values its jobs differ in), else every command-line override, or the
    experiment's name when there is none."""
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN and (swept := _swept_keys(Path(hydra.sweep.dir) / "multirun.yaml")):
        return ",".join(sorted(o for o in hydra.overrides.task if o.split("=")[0].lstrip("+~") in swept))
    return hydra.job.override_dirname or hydra.runtime.choices.get("experiment", "run")


def _swept_keys(multirun_yaml: Path) -> set[str]:
    """The keys a sweep varies (``loss=l1,mse``, ``range(...)``), read from the multirun.yaml that
    Hydra's sweeper writes into the sweep folder before its jobs start."""
    if not multirun_yaml.is_file():
        return set()
    task = OmegaConf.load(multirun_yaml).hydra.overrides.task
    return {o.key_or_group for o in OverridesParser.create().parse_overrides(list(task)) if o.is_sweep_override()}


def is_gan(cfg: DictConfig) -> bool:
    """Whether the objective has an adversarial term (a discriminator is trained)."""
    return cfg.get("loss") is not None and cfg.loss.get("adversarial") is not None


def _job_type(*, _root_: DictConfig) -> str:
    """``${job_type:}``: the W&B job type: the training stage, ``gan`` with an adversarial term,
    else ``psnr``; the tool's task name (evaluate, compare) outside training."""
    if _root_.get("task_name") != "train":
        return str(_root_.get("task_name"))
    return "gan" if is_gan(_root_) else "psnr"


def register_resolvers() -> None:
    """``${wandb_offline:}`` (true unless ``WANDB_MODE=online``: no account needed) and ``${wandb_online:}``,
    ``${if_pixel_loss:a,b}``,
    ``${run_group:}``, ``${run_name:}`` and ``${job_type:}`` (how W&B files a run), and
    ``${max:a,b}`` (the SLURM preset's CPUs per task: ``${max:1,${data.num_workers}}``)."""
    resolvers = {
        "max": max,
        "wandb_offline": lambda: os.environ.get("WANDB_MODE", "offline") != "online",
        "wandb_online": lambda: os.environ.get("WANDB_MODE", "offline") == "online",
        "if_pixel_loss": _if_pixel_loss,
        "run_group": _run_group,
        "run_name": _run_name,
        "job_type": _job_type,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def check_train_config(cfg: DictConfig) -> None:
    """Fail at start-up, in one line, on settings that would break deep inside training."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        example = " ".join(f"{key}=..." for key in missing)
        them = "it" if len(missing) == 1 else "them"
        raise UserError(f"{', '.join(missing)} must be set (the config leaves {them} '???'): add {example}")
    validate(cfg, TRAIN)
    check_trainer_keys(cfg.trainer)
    check_built_keys(cfg)
    made = OmegaConf.select(cfg, "degradation._target_", default=BICUBIC)
    if made != BICUBIC and cfg.data.get("train_lr_dir"):  # the LR files win: the degradation would never run
        raise UserError(
            f"degradation={made.rsplit('.', 1)[-1]} makes the training LR from the HR, but data.train_lr_dir="
            f"{cfg.data.train_lr_dir} gives LR files, which would be used instead: set data.train_lr_dir=null "
            "(and data.val_lr_dir=null to validate on the degradation too)"
        )
    every, interval = OmegaConf.select(cfg, "callbacks.snapshots.every"), cfg.trainer.val_check_interval
    if every is not None and every % interval:
        raise UserError(
            f"callbacks.snapshots.every={every} is not a multiple of trainer.val_check_interval={interval}: "
            f"snapshots are kept at validations; e.g. callbacks.snapshots.every={max(1, every // interval) * interval}"
        )
    accelerator = cfg.trainer.get("accelerator")
    mps = accelerator == "gpu" and torch.backends.mps.is_available()  # Lightning's "gpu" on Apple silicon
    if accelerator in ("gpu", "cuda") and not (torch.cuda.is_available() or mps):
        raise UserError(
            f"trainer.accelerator={accelerator} but this machine has no usable GPU (CUDA, or MPS for gpu): "
            "use trainer=cpu, or trainer=default (a GPU when there is one)"
        )
    on_cpu = accelerator == "cpu" or (
        accelerator == "auto" and not (torch.cuda.is_available() or torch.backends.mps.is_available())
    )
    if cfg.trainer.get("sync_batchnorm") and on_cpu:
        raise UserError(  # else torch's DDP raises "SyncBatchNorm layers only work with GPU modules" from deep inside
            "trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm does not run on CPUs): "
            "set trainer.sync_batchnorm=false on this machine"
        )
    if cfg.data.patch_size % cfg.data.scale:  # (the datasets check it too, for code that builds them)
        raise UserError(
            f"data.patch_size={cfg.data.patch_size} is not a multiple of data.scale={cfg.data.scale}: "
            "patches are cut on the scale grid"
        )
    _check_discriminator_patch(cfg)


def _check_discriminator_patch(cfg: DictConfig) -> None:
    """The discriminator takes the HR patches: of its `input_size`, with sides a multiple of its
    class's `size_multiple` (it refused others when built or at the first GAN batch: after the run
    folder, and in the demo after minutes of its PSNR stage)."""
    disc, patch = cfg.get("discriminator"), cfg.data.patch_size
    if disc is None:
        return
    if disc.get("input_size") is not None and disc.input_size != patch:
        raise UserError(
            f"discriminator.input_size={disc.input_size} differs from data.patch_size={patch}: the "
            "discriminator sees HR patches, make them equal"
        )
    target = disc.get("_target_")
    multiple = getattr(_import_target(target, "discriminator"), "size_multiple", 1) if isinstance(target, str) else 1
    if patch % multiple:
        grid = math.lcm(multiple, cfg.data.scale)  # the patch stays on the scale grid too
        raise UserError(
            f"data.patch_size={patch} is not a multiple of {multiple}, which {target.rsplit('.', 1)[-1]} needs: "
            f"e.g. data.patch_size={max(grid, patch // grid * grid)}"
        )


def check_trainer_keys(trainer: DictConfig) -> None:
    """Every ``trainer.*`` key must be an argument of the Trainer class: Hydra's answer to a typo'd key
    (``trainer.max_step=4``) is to add it with ``+``, which Lightning would refuse after Hydra made the run
    folder, with a stack trace."""
    unknown, takes = unknown_arguments(trainer, "trainer")
    if unknown:
        close = closest(unknown[0], takes)
        hint = f"did you mean trainer.{close}?" if close else "see conf/trainer/default.yaml"
        raise UserError(f"trainer.{unknown[0]} is not an argument of Lightning's Trainer: {hint}")


# The nodes a user swaps for classes of their own (model=mynet, discriminator=..., loss=...).
BUILT_KEYS = ("model.generator", "discriminator", "loss.pixel", "loss.perceptual", "loss.adversarial")


def check_built_keys(cfg: DictConfig) -> None:
    """Each network and loss term of `cfg` names a class that imports and takes every key given it:
    Hydra's report of a key it does not take came after the run folder was made, in several lines from
    deep inside the module's construction, and did not say that the key came from the experiment
    (experiment=demo, the default, sizes sr_gan's generators; a network of the user's own takes others)."""
    for key in BUILT_KEYS:
        node = OmegaConf.select(cfg, key)
        if not (isinstance(node, DictConfig) and isinstance(node.get("_target_"), str)):
            continue
        unknown, takes = unknown_arguments(node, key)
        if not unknown:
            continue
        name, close = unknown[0], closest(unknown[0], takes)
        hint = f"did you mean {key}.{close}?" if close else f"remove it with ~{key}.{name}"
        if experiment := _experiment_setting(f"{key}.{name}"):
            dropped = " ".join(f"~{key}.{other}" for other in unknown if _experiment_setting(f"{key}.{other}"))
            keep = f"or {dropped} to keep its budgets"
            hint = f"experiment={experiment} sets it for sr_gan's networks: add ~experiment, {keep}"
        raise UserError(f"{key}.{name} is not an argument of {node._target_}: {hint}")


def unknown_arguments(node: DictConfig, key: str) -> tuple[list[str], list[str]]:
    """The keys of `node` (but Hydra's `_..._`) that the class or function its `_target_` names does
    not take (none when it takes ``**kwargs`` or has no signature to read, as a builtin), and the
    arguments it takes."""
    target = _import_target(node._target_, key)
    try:
        params = inspect.signature(target).parameters
    except ValueError:  # no signature: Hydra's call is the check
        return [], []
    takes = [name for name in params if name != "self"]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return [], takes
    return [str(name) for name in node if name not in params and not str(name).startswith("_")], takes


def _experiment_setting(key: str) -> str | None:
    """The run's packaged experiment (``demo``) when its file sets `key`, else None."""
    if not HydraConfig.initialized() or (choice := HydraConfig.get().runtime.choices.get("experiment")) is None:
        return None
    path = CONF_DIR / "experiment" / f"{choice}.yaml"
    return choice if path.is_file() and OmegaConf.select(OmegaConf.load(path), key) is not None else None


def _import_target(target: str, key: str) -> Any:
    """The class or function `target` names; a one-line UserError naming `key` when its module is not
    found (a package of the user's own left off PYTHONPATH). A module that fails while it is imported
    keeps Hydra's report: its traceback is the user's to read."""
    try:
        return _locate(target)  # what Hydra's instantiate calls (get_object would also log the failure)
    except ImportError as err:
        if not isinstance(err.__cause__, ModuleNotFoundError):
            raise
        raise UserError(
            f"{key}._target_={target} cannot be imported ({err.__cause__}): put the folder holding its "
            "package on PYTHONPATH, or correct the name"
        ) from None


def precision_advice(cfg: DictConfig) -> str | None:
    """A warning for ``trainer.precision=bf16-mixed`` (the ``trainer=gpu`` default) on a CUDA GPU
    older than compute capability 8.0 (V100, T4, RTX 20xx): they have fp16 tensor cores but none
    for bf16, so such a run is slower than it need be."""
    if cfg.trainer.get("precision") != "bf16-mixed" or cfg.trainer.get("accelerator") == "cpu":
        return None
    if not torch.cuda.is_available() or (capability := torch.cuda.get_device_capability()) >= (8, 0):
        return None
    major, minor = capability
    return (
        f"trainer.precision=bf16-mixed on {torch.cuda.get_device_name()} (compute capability {major}.{minor}): "
        "GPUs before 8.0 have no bf16 tensor cores; trainer.precision=16-mixed (fp16 with a loss scale) uses "
        "their fp16 ones"
    )


DATA_FOLDER_KEYS = ("train_hr_dir", "train_lr_dir", "val_hr_dir", "val_lr_dir")


def check_data_folders(cfg: DictConfig) -> None:
    """Refuse at start-up, in one line, a data folder that does not exist, holds no image or holds
    two images of one name (`x.png`, `x.jpg`), or a training folder whose ``<folder>.prepared`` is
    half-prepared or out of date (not after the run folder, the loggers and the networks are made);
    a data set that makes its folders (`data.prepare`, the demo photos) is skipped."""
    if cfg.data.get("prepare") is not None:
        return
    from sr_gan.data.datasets import images_by_stem  # here: sr_gan.data's tools import this module

    for key in DATA_FOLDER_KEYS:
        if (folder := cfg.data.get(key)) is None:
            continue
        if not Path(folder).is_dir():
            raise UserError(f"data.{key}={folder} does not exist: {_data_fix(cfg, str(folder))}")
        try:
            images_by_stem(list_images(folder))  # a listing: the images are read later
        except FileNotFoundError:  # it holds no image files
            raise UserError(
                f"data.{key}={folder} holds no image files ({'/'.join(IMAGE_EXTENSIONS)}): "
                f"{_data_fix(cfg, str(folder))}"
            ) from None
    if cfg.data.get("use_prepared"):
        from sr_gan.data.prepared import open_prepared  # numpy memory maps: only for training runs

        for key in ("train_hr_dir", "train_lr_dir"):
            if (folder := cfg.data.get(key)) is not None:
                open_prepared(folder)  # None when never prepared; a UserError naming the rerun command


def _data_fix(cfg: DictConfig, folder: str) -> str:
    if "DIV2K" in folder:
        return (
            f"fetch DIV2K once with `python -m sr_gan.data.download div2k --root {cfg.paths.data_dir}`, "
            "or set paths.data_dir (env SR_GAN_DATA) to the folder holding DIV2K/"
        )
    return "pass a folder of images (data=folder data.train_hr_dir=... data.val_hr_dir=...)"


def path_arg(
    cfg: DictConfig,
    key: str,
    *,
    example: str,
    must_exist: bool = False,
    suffix: str = "",
    output: bool = False,
    url: bool = False,
) -> Path:
    """``cfg[key]`` as a Path, checked: set, with the given suffix, existing if ``must_exist``, and
    for an ``output`` not a folder and in a folder that can be made and written to. With `url`
    (weight files) an http(s) URL is fetched once into torch.hub's cache and its file returned.
    `key` may be dotted (``model.init_from``): the messages name it whole."""
    value = OmegaConf.select(cfg, key, throw_on_missing=False)  # None when missing ('???')
    if value in (None, ""):
        raise UserError(f"'{key}' is not set: add {key}={example}")
    if url and is_url(value):
        return cached_download(str(value), key=key)
    path = Path(str(value))
    if suffix and path.suffix != suffix:
        raise UserError(f"{key}={path} must end in {suffix}: e.g. {key}={example}")
    if must_exist and not path.is_file():
        what = "a folder, not a file" if path.is_dir() else "no such file"
        raise UserError(f"{key}={path}: {what}; pass an existing file, e.g. {key}={example}")
    if output:
        if path.is_dir():
            raise UserError(f"{key}={path} is a folder: pass a file name, e.g. {key}={example}")
        try:
            probe_folder(path.parent)
        except OSError as err:
            raise UserError(
                f"{key}={path}: cannot write in {path.parent} ({err.strerror or err}): pass a path you can write to"
            ) from None
    return path


class WritableOutput(Callback):
    """Hydra callback: before Hydra makes the run (or sweep) folder, check that it can, and stop in
    one line naming ``paths.log_dir`` when it cannot (Hydra's own error is a traceback)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_unless_writable(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_unless_writable(Path(config.hydra.sweep.dir))


class UnusedRunFolder(Callback):
    """Hydra callback: before Hydra writes into the run folder (or a sweep's), stop in one line when
    the folder already holds a run and this one would start afresh: its checkpoints, metrics and
    record would be overwritten or mixed with the new run's (a fixed ``hydra.run.dir`` relaunched
    without ``ckpt_path``). Resuming (``ckpt_path``, a requeued SLURM job) writes there on purpose."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _exit_if_holding_runs(config, Path(config.hydra.run.dir), "hydra.run.dir", jobs="")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.sweep.dir)
        _exit_if_holding_runs(config, folder, "hydra.sweep.dir", jobs="*/")
        if config.get("ckpt_path") == "last" and _held_run(folder, jobs="*/") is None:  # a relaunch without its folder
            log.info(
                "ckpt_path=last: hydra.sweep.dir=%s holds no job yet, every job starts from scratch (a sweep "
                "resumes its jobs when relaunched into its own folder: hydra.sweep.dir=<that folder>)",
                folder,
            )


RUN_FILES = ("run.json", "checkpoints/*.ckpt")  # what a started run leaves (sr_gan.run_summary, callbacks)


RUN_SUBFOLDERS = ("checkpoints", "csv", "samples", "wandb")  # what a run writes below its folder


def check_run_subfolders(folder: Path) -> None:
    """Refuse a run folder (resumed, or reused) whose own subfolder is a link pointing outside it: the
    run would write its checkpoints, logs or samples where it points, and Lightning and
    ``snapshots.keep`` would delete the checkpoints they replace there."""
    for name in RUN_SUBFOLDERS:
        if (target := link_outside(link := folder / name, folder)) is not None:
            raise UserError(
                f"{link} is a link to {target}, outside the run folder, where the run would write (and "
                f"delete) its {name}: replace the link by a folder holding its files, or move the whole run "
                "folder there and pass that folder as hydra.run.dir"
            )


def check_init_from(cfg: DictConfig, *, resuming: bool) -> None:
    """Refuse a GAN recipe (``require_init_from``) that would start from noise. A resume is not
    refused: its checkpoint holds the generator, and the run's config.yaml keeps its model.init_from
    (`keep_recorded_start`), which the relaunch need not repeat."""
    if cfg.get("require_init_from") and not cfg.model.init_from and not resuming:
        raise UserError(
            "this recipe starts from a PSNR-oriented generator: set model.init_from=<last.ckpt of the "
            "PSNR stage> (experiment=srresnet_x4 for SRGAN, experiment=rrdb_psnr_x4 for ESRGAN, "
            "experiment=realesrnet_x4 for Real-ESRGAN)"
        )


def slurm_requeued() -> bool:
    """Whether this is a SLURM job started again after a requeue (it continues its run folder)."""
    return int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0


def _not_the_first_process() -> bool:
    """A DDP rank other than 0 (Lightning's own launcher, torchrun, SLURM): it joins the run that rank
    0 has started (and written to) in the same folder."""
    return any(int(os.environ.get(name) or 0) > 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def _exit_if_holding_runs(config: DictConfig, folder: Path, key: str, *, jobs: str) -> None:
    """`jobs`: the glob of the run folders inside `folder` ("" for a run, "*/" for a sweep's jobs)."""
    if config.get("ckpt_path") or slurm_requeued() or not folder.is_dir() or _not_the_first_process():
        return
    if (found := _held_run(folder, jobs=jobs)) is not None:
        print(
            f"error: {key}={folder} already holds a run ({found.relative_to(folder)}), which a new run would "
            "overwrite: resume it with ckpt_path=last, or choose another folder",
            file=sys.stderr,
        )
        raise SystemExit(2)


def _held_run(folder: Path, *, jobs: str) -> Path | None:
    """The first file of a run that `folder` holds (`jobs`: as `_exit_if_holding_runs`), else None."""
    return next((p for pattern in RUN_FILES for p in sorted(folder.glob(jobs + pattern))), None)


def _exit_unless_writable(folder: Path) -> None:
    try:
        probe_folder(folder)
    except OSError as err:
        print(
            f"error: cannot make the output folder {folder} ({err.strerror or err}): set paths.log_dir to a "
            "folder you can write to",
            file=sys.stderr,
        )
        raise SystemExit(2) from None


def keep_recorded_start(resolved: dict[str, Any], previous: Path) -> list[str]:
    """A resumed run's record keeps how the run started, from its earlier ``config.yaml``: the
    generator it started from (``model.init_from``: a relaunch with ``ckpt_path`` takes the weights
    from the checkpoint and may leave it out; the demo's GAN stage sets it on the first start only),
    and its seeds (``seed``, ``data.seed``: the run goes on with its checkpoint's random states and
    patch stream whatever the relaunch says, and the README's relaunch leaves ``seed=`` out), and the
    environments its earlier segments ran with where they differ from this one's (``environment.earlier``,
    oldest first: a week-long run resumed after an upgrade or on another machine). Returns the seed
    keys the relaunch gave other values, as ``key=<relaunch's> (the run's <recorded>)``."""
    if not previous.is_file():
        return []
    try:  # bounded: a run folder someone else made may hold nested aliases ("billion laughs")
        recorded = read_yaml(previous, dict) or {}
    except ValueError as err:
        raise UserError(
            f"ckpt_path: the run's {previous} {err}: restore it, or delete it to record this command's "
            "seed and model.init_from"
        ) from None
    if resolved["model"].get("init_from") is None and (started := _section(recorded, "model").get("init_from")):
        resolved["model"]["init_from"] = started
    _keep_earlier_environments(resolved, _section(recorded, "environment"))
    ignored = []
    for key, now, run in (("seed", resolved, recorded), ("data.seed", resolved["data"], _section(recorded, "data"))):
        if run.get("seed") is not None and now.get("seed") != run["seed"]:
            ignored.append(f"{key}={now.get('seed')} (the run's {run['seed']})")
            now["seed"] = run["seed"]
    return ignored


def _keep_earlier_environments(resolved: dict[str, Any], recorded: dict[str, Any]) -> None:
    """Add to `resolved`'s environment the `recorded` one's earlier ones and itself, each where it
    differs from the one after it (a run resumed ten times on one machine keeps none). Of a damaged
    ``earlier`` (no list, entries that are no mappings), what is readable is kept."""
    if not recorded or "environment" not in resolved:  # a run recorded before environments were
        return
    listed = recorded.pop("earlier", None)
    earlier = [e for e in listed if isinstance(e, dict)] if isinstance(listed, list) else []
    segments: list[dict[str, Any]] = []
    for segment in [*earlier, recorded, resolved["environment"]]:
        if not segments or segment != segments[-1]:
            segments.append(segment)
    if len(segments) > 1:
        resolved["environment"] = {**segments[-1], "earlier": segments[:-1]}


def _section(recorded: dict[str, Any], key: str) -> dict[str, Any]:
    """`recorded[key]` where it is a mapping, else empty (a config.yaml that is not sr-gan's)."""
    section = recorded.get(key)
    return section if isinstance(section, dict) else {}


def save_resolved_config(resolved: dict[str, Any], path: Path) -> None:
    """Write the run's fully resolved config (every interpolation replaced by its value), atomically."""
    with atomic_path(path) as tmp:
        OmegaConf.save(OmegaConf.create(resolved), tmp)


def resolve_device(name: str) -> torch.device:
    """`auto` → CUDA when available, else CPU; anything else is passed to `torch.device`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"device={name!r} is not a device: use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} but CUDA is not available here: use device=cpu or device=auto")
    return device
