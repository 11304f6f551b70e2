"""Training run folders as ``sr_gan.train`` leaves them, read back offline (README "What a run leaves").

A run folder holds `run.json` (its status and headline numbers, `sr_gan.run_summary`), `config.yaml`
(the resolved config), `.hydra/hydra.yaml` (with the config group
choices, e.g. `loss: ragan`) and `.hydra/overrides.yaml`, `csv/metrics.csv`, `checkpoints/best.ckpt`
and `last.ckpt`, and `samples/val_<batches>/<image>.png`. Nothing here needs W&B or a checkpoint
load. What differs between runs is found here too (`differing_keys`): the comparison's columns.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from sr_gan.errors import UserError
from sr_gan.run_summary import ENDED, read_record

# Config groups and keys that say how a run is logged or where it writes, not what it trains.
IGNORED_GROUPS = ("hydra", "logger", "paths", "environment")  # environment: the code and libraries it ran with
# Keys that say how a run was started, ended or grouped in W&B, not what it trains: never a column of their own.
IGNORED_KEYS = ("ckpt_path", "test", "demo_psnr_init", "group")
_SAMPLES = re.compile(r"val_(\d+)")


def budget_batches(config: Mapping[str, Any]) -> int | None:
    """A run's budget in loader batches: trainer.max_steps iterations of optim.accumulate_batches
    batches each, what `sr_gan.train` gives its `BatchBudget`; None where `config` (a run's resolved
    config, or the one it starts with) sets no max_steps."""
    iterations = (config.get("trainer") or {}).get("max_steps")
    accumulate = (config.get("optim") or {}).get("accumulate_batches") or 1
    return None if iterations is None else iterations * accumulate


@dataclass
class Run:
    """What one run folder says about its training; `metrics` rows carry `batch` (batches done)."""

    path: Path
    name: str = ""  # the shortest path suffix that tells it from the other runs compared
    config: dict[str, Any] | None = None  # None: the run stopped before writing config.yaml
    choices: dict[str, str] = field(default_factory=dict)  # config group → option (Hydra runtime.choices)
    overrides: list[str] = field(default_factory=list)
    metrics: list[dict[str, float]] = field(default_factory=list)  # `batch` is an int
    samples: dict[int, Path] = field(default_factory=dict)  # batches done → samples/val_<batches>
    has_best: bool = False
    has_last: bool = False
    record: dict[str, Any] | None = None  # run.json (sr_gan.run_summary), written at start and end
    started: float = 0.0  # file times (s since the epoch): .hydra/ written at start ...
    updated: float = 0.0  # ... and the newest metrics, checkpoint or sample file

    @property
    def budget(self) -> int | None:
        """The run's budget in batches (`budget_batches`), the unit of `batches`."""
        return budget_batches(self.config or {})

    @property
    def batches(self) -> int:
        """Batches done: what run.json recorded as the run ended, else the last metrics row or sample
        folder (metrics are logged every `trainer.log_every_n_steps` batches, so this can lag the truth
        by fewer than that). The test row after training is left out: Lightning logs it one step past
        the last batch."""
        record = self.record or {}
        if record.get("status") in ENDED and isinstance(record.get("batches"), int):
            return record["batches"]
        trained = (row.get("batch", 0) for row in self.metrics if not any(k.startswith("test/") for k in row))
        return int(max([0, *trained, *self.samples]))

    @property
    def wall_s(self) -> float | None:
        """Wall time of the run: what its run.json recorded as it ended (training, validation and
        test, summed over resumed segments), else the span of its file times (a running run)."""
        if (self.record or {}).get("status") in ENDED:
            return float(self.record["wall_s"])  # type: ignore[index]
        return self.updated - self.started if self.started and self.updated else None  # none: wrote nothing after

    @property
    def has_discriminator(self) -> bool:
        return (self.config or {}).get("discriminator") is not None

    def val_rows(self) -> list[dict[str, float]]:
        return [row for row in self.metrics if "val/psnr" in row]

    def status(self, *, stale_s: float, now: float | None = None) -> str:
        """done | running (...) | crashed (...): a run short of its budget that wrote nothing for
        `stale_s` seconds counts as crashed, a more recent one as still running."""
        if self.config is None:
            return "crashed (before training: no config.yaml)"
        ended = (self.record or {}).get("status")
        if ended in ENDED:  # what the run itself recorded as it ended
            error = (self.record or {}).get("error")
            return ended if not error else f"{ended} ({error[:80]})"
        budget = self.budget
        if budget is not None and self.batches >= budget and self.has_last:
            return "done"
        detail = [f"{self.batches}/{budget} batches" if self.metrics else "no metrics"]
        if not self.has_last:
            detail.append("no last.ckpt")
        recent = (now if now is not None else time.time()) - self.updated < stale_s
        return f"{'running' if recent else 'crashed'} ({', '.join(detail)})"


# --- finding and reading runs ---------------------------------------------------------------------


def is_run(path: Path) -> bool:
    return path.is_dir() and ((path / "config.yaml").is_file() or (path / ".hydra").is_dir())


def _natural(path: Path) -> list[Any]:
    """Sort key: multirun jobs 2 before 10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def _runs_below(folder: Path) -> list[Path]:
    found = []
    for root, dirs, _ in os.walk(folder):
        if is_run(Path(root)):
            found.append(Path(root))
            dirs.clear()  # a run's own sub-folders hold no runs
        else:
            dirs[:] = [d for d in dirs if d != "wandb" and not d.startswith(".")]
    return sorted(found, key=_natural)


def find_runs(entries: Sequence[str]) -> list[Path]:
    """Run folders from run folders, folders holding runs (a multirun) and glob patterns, in order."""
    if not entries:
        raise UserError("no runs given: python -m sr_gan.compare logs/train/multiruns/<time> (or run folders, a glob)")
    runs: dict[Path, None] = {}
    for entry in entries:
        pattern = glob.has_magic(entry)
        matches = sorted((Path(m) for m in glob.glob(entry)), key=_natural) if pattern else [Path(entry)]
        if not matches or not (pattern or matches[0].exists()):
            raise UserError(f"runs: {entry} {'matches nothing' if pattern else 'does not exist'}: pass a run folder")
        for match in matches:
            found = [match] if is_run(match) else _runs_below(match) if match.is_dir() else []
            if not found and not pattern:
                raise UserError(
                    f"runs: {entry} is no run folder (no config.yaml or .hydra/) and holds none: pass a "
                    "training run (logs/train/runs/<time>) or a sweep (logs/train/multiruns/<time>)"
                )
            runs |= dict.fromkeys(found)
    if not runs:
        raise UserError(f"runs: {' '.join(entries)} holds no run folder (config.yaml or .hydra/)")
    return list(runs)


# How many values a run folder's YAML file may expand to (a run's config.yaml holds about 500).
MAX_YAML_VALUES = 100_000


class _BoundedLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a document whose aliases expand it past `MAX_YAML_VALUES`
    values or make it hold itself: a few KB of nested aliases (`b: [*a, *a, ...]`, "billion laughs")
    are 10**9 values once compare flattens them (a hang), and a loop a RecursionError."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}, set()) > MAX_YAML_VALUES:
            raise yaml.composer.ComposerError(
                None, None, f"its aliases expand it past {MAX_YAML_VALUES:,} values", node.start_mark
            )
        return node


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values `node` holds with every alias expanded (each shared node counted once, memoized)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in open_nodes:
        raise yaml.composer.ComposerError(None, None, "an alias makes it hold itself", node.start_mark)
    open_nodes.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        children = node.value
    elif isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        children = []
    sizes[id(node)] = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    open_nodes.discard(id(node))
    return sizes[id(node)]


def read_yaml(path: Path, shape: type) -> Any:
    """`path` parsed with `_BoundedLoader`; None when empty. A file that cannot be read, is not YAML
    or not of `shape` (dict, list) raises ValueError saying so ("is not valid YAML (line 3: ...)")."""
    try:
        content = yaml.load(path.read_text(encoding="utf-8"), Loader=_BoundedLoader)
    except OSError as err:
        raise ValueError(f"cannot be read ({err.strerror or err})") from None
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError) as err:  # RecursionError: nested 10**5 deep
        mark = getattr(err, "problem_mark", None)
        problem = getattr(err, "problem", None) or err
        raise ValueError(f"is not valid YAML ({f'line {mark.line + 1}: ' if mark else ''}{problem})") from None
    if content is not None and not isinstance(content, shape):
        raise ValueError(f"holds a {type(content).__name__}, not a {'mapping' if shape is dict else 'list'}")
    return content


def _yaml(run: Path, name: str, shape: type) -> Any:
    """`run`/`name` read by `read_yaml`; a damaged file is a one-line UserError naming it: the run
    folder is damaged, or not one of ours."""
    try:
        return read_yaml(run / name, shape)
    except ValueError as err:
        _damaged(run, name, str(err))


def _damaged(run: Path, name: str, problem: str) -> NoReturn:
    raise UserError(
        f"runs: {run / name} {problem}: {run} is not a complete sr-gan run; "
        f"remove it from the runs or restore its {name}"
    )


def read_metrics(path: Path) -> list[dict[str, float]]:
    """The rows of a Lightning CSVLogger file as floats (empty cells left out), each with `batch`:
    the batches done when it was logged (the file's `step` + 1, as the sample folders count)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            try:
                row = {key: float(value) for key, value in raw.items() if key and value not in (None, "")}
            except (TypeError, ValueError):  # a line cut short by a crash mid-write
                continue
            if "step" in row:
                rows.append(row | {"batch": int(row["step"]) + 1})
    return rows


def _mtime(paths: Iterable[Path]) -> float:
    return max([p.stat().st_mtime for p in paths if p.exists()], default=0.0)


def read_run(path: Path) -> Run:
    """Everything `compare` uses from one run folder; absent files leave their fields empty."""
    run = Run(path=path)
    if (path / "config.yaml").is_file():
        run.config = _yaml(path, "config.yaml", dict)
        if not run.config:
            _damaged(path, "config.yaml", "is empty")
        if not isinstance(run.config.get("data"), dict) or run.config["data"].get("scale") is None:
            _damaged(path, "config.yaml", "has no data.scale")  # (not written by sr_gan.train)
    hydra = path / ".hydra"
    if (hydra / "hydra.yaml").is_file():
        hydra_config = _yaml(path, ".hydra/hydra.yaml", dict) or {}
        choices = ((hydra_config.get("hydra") or {}).get("runtime") or {}).get("choices") or {}
        run.choices = {g: str(o) for g, o in choices.items() if g.split("/")[0] not in IGNORED_GROUPS}
    if (hydra / "overrides.yaml").is_file():
        run.overrides = [str(o) for o in _yaml(path, ".hydra/overrides.yaml", list) or []]
    metrics = path / "csv" / "metrics.csv"
    if metrics.is_file():
        run.metrics = read_metrics(metrics)
    for folder in (path / "samples").glob("val_*"):
        if (match := _SAMPLES.fullmatch(folder.name)) and folder.is_dir():
            run.samples[int(match.group(1))] = folder
    run.record = read_record(path)
    checkpoints = path / "checkpoints"
    run.has_best, run.has_last = (checkpoints / "best.ckpt").is_file(), (checkpoints / "last.ckpt").is_file()
    run.started = _mtime([hydra / "hydra.yaml"]) or _mtime([path / "config.yaml"])  # Hydra writes it at start
    run.updated = _mtime([metrics, path / "config.yaml", *checkpoints.glob("*.ckpt"), *run.samples.values()])
    return run


def read_runs(paths: Sequence[Path]) -> list[Run]:
    """Read every run and name each by the shortest path suffix no other run shares."""
    runs = [read_run(path) for path in paths]
    for run, tail in zip(runs, shortest_tails([path.absolute().parts for path in paths])):
        run.name = "/".join(tail)
    return runs


def shortest_tails(names: Sequence[Sequence[str]]) -> list[Sequence[str]]:
    """For each name (a sequence of parts), its shortest tail that no other name ends with (the whole
    name where every tail is shared)."""
    tails = []
    for i, own in enumerate(names):
        others = [*names[:i], *names[i + 1 :]]
        k = 1
        while k < len(own) and any(other[-k:] == own[-k:] for other in others):
            k += 1
        tails.append(own[-k:])
    return tails


# --- what the runs share and where they differ ----------------------------------------------------


def check_comparable(runs: Sequence[Run]) -> None:
    """Refuse runs whose numbers cannot stand side by side: other scales or validation sets."""
    configured = [run for run in runs if run.config is not None]
    for key, fix in (
        ("scale", "compare one scale at a time"),
        ("val_hr_dir", "compare runs validated on the same images"),
        ("val_lr_dir", "compare runs validated on the same LR images"),
    ):
        values = {run.name: (run.config.get("data") or {}).get(key) for run in configured}  # type: ignore[union-attr]
        if len(set(map(str, values.values()))) > 1:
            listed = ", ".join(f"{name}: {value}" for name, value in values.items())
            raise UserError(f"the runs differ in data.{key} ({listed}): {fix}")


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` → `{"a.b": 1}`; lists and empty or null nodes are leaves."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def _fingerprint(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _overridden(run: Run) -> set[str]:
    """Config keys the run's command line set (`key=v`, `+key=v`, `++key=v`, `~key`), not groups."""
    keys = {override.lstrip("+~").split("=", 1)[0] for override in run.overrides}
    return {key for key in keys if key not in run.choices and "/" not in key}


def _own_paths(run: Run) -> tuple[str, ...]:
    output = ((run.config or {}).get("paths") or {}).get("output_dir")
    return tuple(str(p) for p in (output, run.path.absolute()) if p)


def _ignored(key: str, values: Sequence[Any], runs: Sequence[Run]) -> bool:
    """Keys that differ in every run by construction: the logger's, those naming the run's folder, and
    `IGNORED_KEYS` (a GAN run and the PSNR stage it resumed or started from differ there)."""
    if key.split(".")[0] in IGNORED_GROUPS or key in IGNORED_KEYS:
        return True
    return any(isinstance(v, str) and any(p in v for p in _own_paths(r)) for v, r in zip(values, runs))


def differing_keys(runs: Sequence[Run]) -> tuple[list[str], list[str]]:
    """(config groups, leaf keys) whose values differ across the runs.

    Groups first: `-m loss=srgan,ragan` gives the column `loss`, not the dozens of `loss.*` and
    `discriminator.*` values the choice brings. A differing leaf key is kept when a run's command
    line set it, or when it varies between runs that made the same group choices (then no group
    explains it); keys that follow from the choices are left out.
    """
    groups = list(dict.fromkeys(g for run in runs for g in run.choices))
    groups = [g for g in groups if len({run.choices.get(g) for run in runs}) > 1]
    configured = [run for run in runs if run.config is not None]
    flats = [flatten(run.config) for run in configured]  # type: ignore[arg-type]
    missing = object()
    overridden = set().union(*(_overridden(run) for run in configured))
    candidates: dict[str, tuple[str, ...]] = {}  # key → its value in each run
    for key in dict.fromkeys(k for flat in flats for k in flat):
        values = [flat.get(key, missing) for flat in flats]
        prints = tuple(_fingerprint(v) if v is not missing else "<missing>" for v in values)
        if len(set(prints)) < 2 or _ignored(key, values, configured):
            continue
        buckets: dict[tuple[str | None, ...], set[str]] = {}
        for run, value in zip(configured, prints):
            buckets.setdefault(tuple(run.choices.get(g) for g in groups), set()).add(value)
        set_by_user = key in overridden or any(key.startswith(f"{o}.") for o in overridden)
        if set_by_user or any(len(bucket) > 1 for bucket in buckets.values()):
            candidates[key] = prints
    return groups, _without_copies(candidates, overridden)


def _without_copies(candidates: dict[str, tuple[str, ...]], overridden: set[str]) -> list[str]:
    """Drop interpolated copies (`module.generator: ${model.generator}` repeats every generator
    key): a key with the same last part and the same values as one kept. Keys the command line
    set are kept first, then keys outside `module` (the wiring of the others), in config order."""

    def rank(key: str) -> tuple[bool, bool]:
        return key not in overridden, key.startswith("module.")

    kept: list[str] = []
    for key in sorted(candidates, key=rank):
        tail = key.rsplit(".", 1)[-1]
        if not any(k.rsplit(".", 1)[-1] == tail and candidates[k] == candidates[key] for k in kept):
            kept.append(key)
    return [key for key in candidates if key in kept]


def format_value(value: Any) -> str:
    """A config value as a short cell: lists in brackets, null, true/false, a float of more than 6
    significant digits (an Optuna trial's) to 4: 3.304e-05, not 3.304463634024566e-05, which a
    table column cuts to ``3.30446363402456…``, exponent lost."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, float) and float(f"{value:.6g}") != value:
        return f"{value:.4g}"
    return str(value)


def run_values(run: Run, groups: Sequence[str], leaves: Sequence[str]) -> dict[str, str | None]:
    """The run's cells for the differing keys (None where it has no such key); a run without
    config.yaml shows what its command line set."""
    values: dict[str, str | None] = {group: run.choices.get(group) for group in groups}
    if run.config is not None:
        flat = flatten(run.config)
        values |= {key: format_value(flat[key]) if key in flat else None for key in leaves}
    else:
        given = dict(override.lstrip("+").split("=", 1) for override in run.overrides if "=" in override)
        values |= {key: given.get(key) for key in leaves}
    return values


def short_labels(keys: Sequence[str]) -> dict[str, str]:
    """Legend names: the shortest tail of each dotted key that no other key ends with
    (`model.generator.num_features` → `num_features`, or `generator.num_features` beside
    `discriminator.num_features`)."""
    tails = shortest_tails([key.split(".") for key in keys])
    return {key: ".".join(tail) for key, tail in zip(keys, tails)}
