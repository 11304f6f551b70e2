"""The command line of every tool: Hydra's ``main``, with a mistyped override refused in one line.

Hydra reports an override it cannot apply (a key or a group option that does not exist, a value
it cannot parse) in several lines with its config search path, and exits 1. `hydra_command` makes
that one line naming the override and the fix (the closest name, or the options), exit status 2,
as every other input error. Hydra only raises these instead of printing them when
``HYDRA_FULL_ERROR=1``: the variable is set while Hydra composes the config and removed before the
tool's own code runs, whose failures Hydra keeps reporting as before, and set again when it
returns: an Optuna sweep composes each trial's config after the trials before it ran. A user's own
``HYDRA_FULL_ERROR=1`` (for the whole stack trace) is left alone.

An interpolation that cannot be resolved (``loss.pixel_weight='${nope}'``, a resolver or an
environment variable that does not exist) composes fine and failed later, wherever a tool first read
the key, with OmegaConf's stack trace: `unresolvable` finds it before the tool's code runs, and it is
refused the same way.
"""

from __future__ import annotations

import atexit
import gc
import os
import re
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import hydra
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.basecontainer import BaseContainer
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationKeyError,
    InterpolationResolutionError,
    InterpolationToMissingValueError,
    OmegaConfBaseException,
    UnsupportedInterpolationType,
)

from sr_gan.errors import USER_ERROR_EXIT_CODE, SweepJobFailed, closest, one_line

T = TypeVar("T")
FULL_ERROR = "HYDRA_FULL_ERROR"
GRAMMAR = "https://hydra.cc/docs/advanced/override_grammar/basic/"
MAX_LISTED_KEYS = 16  # an unknown key's neighbours are listed up to this many (train's top has more)


def hydra_command(config_name: str) -> Callable[[Callable[[DictConfig], T]], Callable[..., T | None]]:
    """``hydra.main`` of ``conf/<config_name>.yaml`` (the tool ``python -m sr_gan.<config_name>``)
    whose composition errors are one line on stderr and exit status 2 (module docstring)."""

    def decorate(task: Callable[[DictConfig], T]) -> Callable[..., T | None]:
        ours = False  # whether HYDRA_FULL_ERROR is set by us, for the composition only

        @wraps(task)  # keeps the task's module: Hydra finds conf/ relative to its file
        def in_task(cfg: DictConfig) -> T:
            nonlocal ours
            lent = ours
            if ours:
                os.environ.pop(FULL_ERROR, None)
                ours = False
            if FULL_ERROR not in os.environ and (line := unresolvable(cfg, tool=config_name)) is not None:
                print(f"error: {line}", file=sys.stderr)
                raise SystemExit(2)
            try:
                result: T | SweepJobFailed = task(cfg)
            except SweepJobFailed as failed:  # the sweep runs its next jobs, and ends on it (`entry`)
                result = failed
            if lent:  # a sweep's next job may compose only now (an Optuna trial is drawn after the last)
                os.environ[FULL_ERROR], ours = "1", True
            if isinstance(result, SweepJobFailed):
                raise result
            return result

        hydra_main = hydra.main(version_base="1.3", config_path="conf", config_name=config_name)(in_task)

        @wraps(task)
        def entry(cfg_passthrough: DictConfig | None = None) -> T | None:
            nonlocal ours
            freeze_heap_at_exit()
            if cfg_passthrough is not None or FULL_ERROR in os.environ:
                return hydra_main(cfg_passthrough)
            os.environ[FULL_ERROR], ours = "1", True
            try:
                return hydra_main()
            except SweepJobFailed as err:  # the first failed job, once the sweep has run the others
                print(f"error: {err}", file=sys.stderr)
                raise SystemExit(USER_ERROR_EXIT_CODE) from None
            except (ConfigCompositionException, OverrideParseException) as err:  # while composing only
                _remove_empty_sweep_folder()
                print(f"error: {describe(err, tool=config_name)}", file=sys.stderr)
                raise SystemExit(2) from None
            except InterpolationResolutionError as err:  # printing `--cfg ... --resolve` (a run: `in_task`)
                if (line := _hydra_alone(err) or _printed_unresolvable(err, tool=config_name)) is None:
                    raise  # a fault of ours
                print(f"error: {line}", file=sys.stderr)
                raise SystemExit(2) from None
            except ValueError as err:  # Hydra's own, before composing: `experiment=null` is no option
                if (line := _null_group(err)) is None:
                    raise
                print(f"error: {line}", file=sys.stderr)
                raise SystemExit(2) from None
            except BrokenPipeError:  # `--help | head`: the reader has gone (Python's advice: no traceback)
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise SystemExit(1) from None
            finally:
                SweepFolder.made = None
                if ours:
                    os.environ.pop(FULL_ERROR, None)
                    ours = False

        return entry

    return decorate


def freeze_heap_at_exit() -> None:
    """Skip the interpreter's shutdown collection, which traverses the whole heap (torch's and
    Lightning's included) more than once: over a second of every tool's exit on a 2-core CPU, paid
    by each process of a sweep or a DDP run (``make bench``: benchmarks/bench_exit.py). `gc.freeze`
    runs as the last exit handler, after Lightning's, W&B's and logging's own: what they close and
    flush is done. Objects in reference cycles are then not finalized, as the objects a process
    ends with are never freed: the tools close their files and write their outputs atomically."""
    atexit.unregister(gc.freeze)  # registered once however often a tool runs in one process
    atexit.register(gc.freeze)


def _null_group(err: ValueError) -> str | None:
    """One line for a config group set to null on the command line (``experiment=null``, to train without
    the demo), which Hydra refuses with a ValueError traceback naming no override; None for another error."""
    if not str(err).startswith("Config group override must be a string or a list. Got NoneType"):
        return None
    groups = [arg.partition("=")[0] for arg in sys.argv[1:] if re.fullmatch(r"[\w/]+=null", arg)]
    group = groups[0] if groups else "<group>"
    return f"{group}=null: a config group is dropped with ~{group}, not set to null (quote it in zsh: '~{group}')"


def _hydra_alone(err: InterpolationResolutionError) -> str | None:
    """One line for `--cfg hydra --resolve` failing on a Hydra key that reads the tool's config (train's
    ``hydra.run.dir`` reads ``paths.log_dir``): Hydra resolves its own node with the tool's keys left
    out. None when the command line does not ask for that."""
    args = sys.argv[1:]
    shown = {value for flag, value in zip(args, args[1:], strict=False) if flag in ("--cfg", "-c")}
    if "hydra" not in shown or "--resolve" not in args:
        return None
    return (
        f"--cfg hydra --resolve: a key of hydra reads the tool's config ({one_line(err)}), which Hydra leaves "
        "out of --cfg hydra; use --cfg all --resolve -p hydra (or -p hydra.<key>)"
    )


def _printed_unresolvable(err: InterpolationResolutionError, *, tool: str) -> str | None:
    """One line for ``--cfg job|all --resolve`` printing a config with an interpolation that cannot be
    resolved, which Hydra let out as OmegaConf's stack trace (a run of the tool is refused in
    `in_task`): `unresolvable`'s line. ``OmegaConf.resolve`` names no node in its error; the config
    is the one its frames were resolving. None when the command line prints no resolved config."""
    if "--resolve" not in sys.argv[1:]:
        return None
    nodes = [
        value
        for frame, _ in traceback.walk_tb(err.__traceback__)
        for value in frame.f_locals.values()
        if isinstance(value, DictConfig | ListConfig)
    ]
    return unresolvable(nodes[-1]._get_root(), tool=tool) if nodes else None  # type: ignore[arg-type]


class SweepFolder(Callback):
    """Hydra callback: notes the folder a sweep (``-m``) makes before it composes its jobs' configs,
    so that `hydra_command` can remove it when one of them cannot be composed."""

    made: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepFolder.made = Path(config.hydra.sweep.dir)


def _remove_empty_sweep_folder() -> None:
    """A sweep whose job cannot be composed leaves its folder with Hydra's multirun.yaml alone: it goes."""
    folder = SweepFolder.made
    if folder is not None and folder.is_dir() and {path.name for path in folder.iterdir()} <= {"multirun.yaml"}:
        shutil.rmtree(folder, ignore_errors=True)


def describe(err: Exception, *, tool: str) -> str:
    """One line for Hydra's error `err` about an override: what is wrong and how to fix it."""
    cause = err.__cause__
    if isinstance(err, OverrideParseException):
        reason = err.message.splitlines()[0]
        fix = f"quote a value with spaces, brackets or commas, or see {GRAMMAR}"
        return f"cannot parse the override '{err.override}': {reason}; {fix}"
    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, option = err.missing_cfg_file.rpartition("/")
        guess = closest(option, err.options)
        fix = f"did you mean {group}={guess}? " if guess else ""
        return f"{group}={option} is not an option of {group}: {fix}options: {', '.join(err.options)}"
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and cause.full_key and cause.key is not None:
        append = re.search(r"use (\+\S+)", str(err))  # Hydra's "To append to your config use +key=value"
        added = append.group(1) if append else f"+{cause.full_key}=..."
        return _unknown_key(str(cause.full_key), str(cause.key), cause.parent_node, added=added, tool=tool)
    if str(err).startswith("Primary config directory not found"):  # a package whose conf link was not followed
        named = re.search(r"config directory '([^']+)'", str(err))
        if named and Path(named.group(1)).is_file():  # git wrote the link as a file holding its target
            fix = (
                "it is a file, not the link to conf/: the clone was made without symbolic links (Windows: "
                "git clone -c core.symlinks=true with Developer Mode on, or use WSL)"
            )
        else:
            fix = "sr_gan/conf (a link to the clone's conf/) is missing: install sr-gan from a clone (make install)"
        return f"{one_line(err)}; {fix}"
    message = str(err).split("Config search path:")[0]  # a missing primary config lists the search path
    if isinstance(cause, OmegaConfBaseException):  # what Hydra prints below its own line
        message += " " + str(cause).splitlines()[0]
    return one_line(Exception(message))


def _unknown_key(full_key: str, key: str, parent: Any, *, added: str, tool: str) -> str:
    """`full_key` is not in the config: the closest key beside it, else the keys beside it when they
    are few (a short typo, psi for psnr, has no close match), else where the keys are listed."""
    prefix = full_key[: -len(key)]
    names = [str(name) for name in parent.keys()] if isinstance(parent, DictConfig) else []
    listed = [name for name in names if prefix or name != "hydra"]  # Hydra's own settings are not the tool's
    if guess := closest(key, names):
        fix = f"did you mean {prefix}{guess}?"
    elif full_key.startswith("trainer.strategy.") and not names:  # a name of Lightning's (auto), not trainer=ddp's
        # keys: `+` made it a dict, which Lightning refused
        fix = (
            f"the strategy's keys{_ddp_strategy_keys()} come with trainer=ddp, sr-gan's DDP, which "
            f"trainer.devices > 1 trains with too: trainer=ddp {added.lstrip('+')}"
        )
    elif full_key.startswith("trainer."):  # Lightning Trainer arguments the config leaves out
        fix = f"a Lightning Trainer argument the config leaves out is added with {added}"
    elif 0 < len(listed) <= MAX_LISTED_KEYS:
        owner = f" of {prefix.rstrip('.')}" if prefix else ""
        fix = f"the keys{owner} are {', '.join(listed)}"
    else:
        fix = f"python -m sr_gan.{tool} --help lists the keys"
    return f"{full_key} is not a key of the config: {fix}"


def _ddp_strategy_keys() -> str:
    """`` (<key>, ...: conf/trainer/ddp.yaml's)``: the strategy keys that file sets, in its order (a
    key added there is named here); empty where it cannot be read."""
    try:
        strategy = OmegaConf.load(Path(__file__).parent / "conf" / "trainer" / "ddp.yaml").strategy
    except Exception:  # noqa: BLE001 - a hint, never a second error
        return ""
    return f" ({', '.join(str(key) for key in strategy if key != '_target_')}: conf/trainer/ddp.yaml's)"


def unresolvable(cfg: DictConfig, *, tool: str) -> str | None:
    """One line for an interpolation of `cfg` that cannot be resolved (None: all can): the key, its
    value and the fix. Of several, the one the others lead to (``a: ${b}``, ``b: ${nope}`` names
    ``b``); a key of the tool's before Hydra's (``hydra.overrides.task`` repeats an override's text).
    An interpolation of a ``???`` value is left to the tools, which name the missing key."""
    failures = dict(_unresolved(cfg, prefix=""))
    if not failures:
        return None
    cause = [key for key, (raw, _) in failures.items() if not any(f"${{{other}}}" in raw for other in failures)]
    key = min(cause or failures, key=lambda name: name.startswith("hydra."))  # `--cfg all`: the override's own key
    raw, err = failures[key]
    head = f"{key}={raw} cannot be resolved"
    if isinstance(err, InterpolationKeyError) and (named := re.search(r"key '([^']+)'", str(err))):
        others = [name for name in _full_keys(cfg, prefix="") if name != key]  # not itself: a cycle
        guess = closest(named.group(1), others)
        fix = f"did you mean ${{{guess}}}?" if guess else f"python -m sr_gan.{tool} --cfg job lists the keys"
        return f"{head}: the config has no key {named.group(1)}; {fix}"
    if isinstance(err, UnsupportedInterpolationType) and (named := re.search(r"type (\S+)", str(err))):
        guess = closest(named.group(1), getattr(BaseContainer, "_resolvers", {}))  # OmegaConf lists none publicly
        fix = f"did you mean {guess}?" if guess else "text that starts like one is written \\${...}"
        return f"{head}: no resolver is named {named.group(1)}; {fix}"
    reason = re.sub(r"^\w+ raised while resolving interpolation: ", "", str(err).splitlines()[0]).strip('"')
    fix = "; set it, or give a default: ${oc.env:NAME,default}" if "oc.env:" in raw else ""
    return f"{head}: {reason}{fix}"


def _unresolved(node: DictConfig | ListConfig, *, prefix: str) -> Iterator[tuple[str, tuple[str, Exception]]]:
    """``(full key, (raw value, error))`` of every interpolation below `node` that fails to resolve."""
    for key in node.keys() if isinstance(node, DictConfig) else range(len(node)):
        name = f"{prefix}[{key}]" if isinstance(node, ListConfig) else f"{prefix}.{key}".lstrip(".")
        child = node._get_node(key)  # its raw `${...}` text (`_value`): OmegaConf's public reads resolve it
        if OmegaConf.is_interpolation(node, key):
            try:
                node[key]
            except InterpolationToMissingValueError:
                continue
            except InterpolationResolutionError as err:
                yield name, (str(child._value()), err)
        elif isinstance(child, DictConfig | ListConfig):
            yield from _unresolved(child, prefix=name)


def _full_keys(node: DictConfig, *, prefix: str) -> Iterator[str]:
    """Every key of `node`, dotted from its top (lists' items are not named)."""
    for key in node.keys():
        name = f"{prefix}.{key}".lstrip(".")
        yield name
        if not OmegaConf.is_interpolation(node, key) and isinstance(child := node._get_node(key), DictConfig):
            yield from _full_keys(child, prefix=name)
