"""A mistyped override is one line and exit status 2 in every tool (`sr_gan.cli.hydra_command`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from sr_gan.cli import _unknown_key, describe, unresolvable
from tests.helpers import CONF_DIR, child_env


@pytest.mark.parametrize(
    ("tool", "override", "line"),
    [
        ("train", "trainer.max_step=4", "trainer.max_step is not a key of the config: did you mean trainer.max_steps?"),
        ("train", "hydra.run.dirr=/x", "hydra.run.dirr is not a key of the config: did you mean hydra.run.dir?"),
        (
            "train",
            "trainer.detect_anomaly=true",
            "trainer.detect_anomaly is not a key of the config: a Lightning Trainer argument the config leaves out "
            "is added with +trainer.detect_anomaly=true",
        ),
        (  # trainer=gpu's strategy is Lightning's name (auto): its keys are trainer=ddp's (was: add it with +)
            "train",
            "trainer.strategy.timeout_s=60",
            "trainer.strategy.timeout_s is not a key of the config: the strategy's keys (find_unused_parameters, "
            "broadcast_buffers, timeout_s: conf/trainer/ddp.yaml's) come with trainer=ddp, sr-gan's DDP, which "
            "trainer.devices > 1 trains with too: trainer=ddp trainer.strategy.timeout_s=60",
        ),
        (  # the first missing level is named, with where the keys are listed
            "train",
            "loss.perceptual.no_such_group.conv5_4=1",
            "loss.perceptual.no_such_group is not a key of the config: python -m sr_gan.train --help lists the keys",
        ),
        ("evaluate", "ckptt=x", "ckptt is not a key of the config: did you mean ckpt?"),
        (  # no close match (a short key): the keys beside it, when they are few
            "interpolate",
            "psi=0.5",
            "psi is not a key of the config: the keys are psnr, gan, alpha, out, ema",
        ),
        (
            "train",
            "model.zzz=1",
            "model.zzz is not a key of the config: the keys of model are compile, compile_mode, channels_last, ",
        ),
        (
            "train",
            "model=rrbd",
            "model=rrbd is not an option of model: did you mean model=rrdb? options: rrdb, srresnet, srresnet_nobn",
        ),
        ("train", "discriminator=vgg", "discriminator=vgg is not an option of discriminator: did you mean"),
        (  # the closest option, not the first
            "train",
            "model=srresnet_nbn",
            "model=srresnet_nbn is not an option of model: did you mean model=srresnet_nobn? "
            "options: rrdb, srresnet, srresnet_nobn",
        ),
        ("train", "model=zzz", "model=zzz is not an option of model: options: rrdb, srresnet, srresnet_nobn"),
        (  # letters swapped: the key of those letters, not difflib's first (module)
            "train",
            "modle.generator.num_blocks=2",
            "modle is not a key of the config: did you mean model?",
        ),
        (  # a nested group is named whole
            "train",
            "hydra/launcher=nosuch",
            "hydra/launcher=nosuch is not an option of hydra/launcher: options: basic, ",
        ),
        (  # a top-level key that only starts like trainer is no Trainer argument
            "train",
            "trainer_precision=16",
            "trainer_precision is not a key of the config: python -m sr_gan.train --help lists the keys",
        ),
        (
            "train",
            "trainer.max_steps=[1",
            "cannot parse the override 'trainer.max_steps=[1': no viable alternative at input '[1'; quote a value",
        ),
        (
            "train",
            "hydra.job.chdir=abc",
            "Error merging override hydra.job.chdir=abc Value 'abc' is not a valid bool (type str)",
        ),
        ("train", "+trainer.max_steps=3", "Could not append to config. An item is already at 'trainer.max_steps'."),
    ],
)
def test_each_composition_error_is_one_line_naming_the_override_and_the_fix(tool, override, line) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"), pytest.raises(Exception) as raised:
        compose(tool, overrides=[override], return_hydra_config=True)
    message = describe(raised.value, tool=tool)
    assert message.startswith(line)
    assert "\n" not in message and "search path" not in message


def test_a_strategy_key_trainer_ddp_lacks_is_added_with_a_plus() -> None:
    """Under trainer=ddp the strategy is sr-gan's DDP config: a DDP argument it leaves out is added with
    ``+`` (PlayerDDPStrategy passes it on), not with trainer=ddp, which the command already has."""
    overrides = ["trainer=ddp", "trainer.strategy.gradient_as_bucket_view=true"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"), pytest.raises(Exception) as raised:
        compose("train", overrides=overrides, return_hydra_config=True)
    assert describe(raised.value, tool="train") == (
        "trainer.strategy.gradient_as_bucket_view is not a key of the config: a Lightning Trainer argument the "
        "config leaves out is added with +trainer.strategy.gradient_as_bucket_view=true"
    )


def test_the_trainer_ddp_hint_is_for_strategy_keys_alone() -> None:
    """A key under another trainer node without keys is a Lightning Trainer argument, not trainer=ddp's."""
    line = _unknown_key("trainer.plugins.x", "x", OmegaConf.create({}), added="+trainer.plugins.x=1", tool="train")
    assert line.endswith("a Lightning Trainer argument the config leaves out is added with +trainer.plugins.x=1")


def test_a_missing_primary_config_is_one_line_without_the_search_path() -> None:
    """``--config-name=nosuch``: Hydra's message, without the config search path it lists below it."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"), pytest.raises(Exception) as raised:
        compose("nosuch")
    message = describe(raised.value, tool="train")
    assert message == "Cannot find primary config 'nosuch'. Check that it's in your config search path."


TOOL = """
import os, sys
from hydra.errors import ConfigCompositionException
from sr_gan.cli import hydra_command

@hydra_command("{config}")
def main(cfg):
    print("task sees HYDRA_FULL_ERROR=" + str(os.environ.get("HYDRA_FULL_ERROR")))
    if cfg.get("ckpt") == "raise":  # a composition error of the tool's own: not the command line's
        raise ConfigCompositionException("raised by the tool")

main()
"""


def _tool(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    conf: bool = True,
    config: str = "evaluate",
    stdout_lines: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """A stand-in tool on `hydra_command(config)` (Hydra finds conf/ beside it, as sr_gan's tools
    find sr_gan/conf, if `conf`): the wrapper alone, without the seconds torch takes to import.
    `stdout_lines`: read that many lines of its output, then close the pipe (its stdout is not returned)."""
    (tmp_path / "a" / "b").mkdir(parents=True, exist_ok=True)
    if conf:
        (tmp_path / "a" / "b" / "conf").symlink_to(CONF_DIR)
    (tmp_path / "a" / "b" / "tool.py").write_text(TOOL.format(config=config))
    environ = child_env(env, drop=("HYDRA_FULL_ERROR",))
    command = [sys.executable, str(tmp_path / "a" / "b" / "tool.py"), *args, f"hydra.run.dir={tmp_path / 'run'}"]
    if stdout_lines is None:
        return subprocess.run(command, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120)
    with subprocess.Popen(command, cwd=tmp_path, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        for _ in range(stdout_lines):  # then the reader leaves, as `head` does
            proc.stdout.readline()
        proc.stdout.close()
        stderr = proc.stderr.read().decode()
    return subprocess.CompletedProcess(command, proc.returncode, "", stderr)


def test_a_typo_is_refused_in_one_line_before_the_tool_runs(tmp_path: Path) -> None:
    proc = _tool(tmp_path, "ckptt=x")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: ckptt is not a key of the config: did you mean ckpt?\n"


def test_an_interpolation_that_cannot_be_resolved_is_refused_before_the_tool_runs(tmp_path: Path) -> None:
    """It composes (Hydra does not resolve), and used to fail wherever the tool first read the key."""
    proc = _tool(tmp_path, "ckpt=${qqq}/best.ckpt")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "error: ckpt=${qqq}/best.ckpt cannot be resolved: the config has no key qqq; "
        "python -m sr_gan.evaluate --cfg job lists the keys\n"
    )
    (tmp_path / "full").mkdir()
    proc = _tool(tmp_path / "full", "ckpt=${qqq}/best.ckpt", env={"HYDRA_FULL_ERROR": "1"})
    assert "task sees" in proc.stdout  # the user's HYDRA_FULL_ERROR: the tool runs into OmegaConf's error itself


def test_cfg_resolved_with_an_interpolation_that_cannot_be_resolved_is_the_same_one_line(tmp_path: Path) -> None:
    """Printing the resolved config (``--cfg job|all --resolve``, the task never runs) was OmegaConf's
    stack trace, exit 1. In ``--cfg all`` Hydra's ``hydra.overrides.task`` repeats the override's
    text, which cannot be resolved either: the line names the tool's key."""
    line = (
        "error: ckpt=${qqq}/best.ckpt cannot be resolved: the config has no key qqq; "
        "python -m sr_gan.evaluate --cfg job lists the keys\n"
    )
    for shown in ("job", "all"):
        (tmp_path / shown).mkdir()
        proc = _tool(tmp_path / shown, "--cfg", shown, "--resolve", "ckpt=${qqq}/best.ckpt")
        assert (proc.returncode, proc.stderr) == (2, line), shown
    (tmp_path / "raw").mkdir()
    proc = _tool(tmp_path / "raw", "--cfg", "job", "ckpt=${qqq}/best.ckpt")  # not resolved: printed as it is
    assert proc.returncode == 0 and "ckpt: ${qqq}/best.ckpt" in proc.stdout


def test_an_unparsable_override_is_refused_in_one_line_too(tmp_path: Path) -> None:
    """Hydra raises a parse error as an OverrideParseException, not a ConfigCompositionException."""
    proc = _tool(tmp_path, "ckpt=[1")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: cannot parse the override 'ckpt=[1': ") and len(proc.stderr.splitlines()) == 1


def test_a_config_group_set_to_null_names_the_tilde_that_drops_it(tmp_path: Path) -> None:
    """`experiment=null` (to train a network of one's own without the demo's sizes) was Hydra's ValueError
    traceback, "Config group override must be a string or a list. Got NoneType", naming no override."""
    proc = _tool(tmp_path, "experiment=null", config="train")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "error: experiment=null: a config group is dropped with ~experiment, not set to null "
        "(quote it in zsh: '~experiment')\n"
    )


def test_a_sweep_refused_so_leaves_no_sweep_folder_and_keeps_a_folder_it_did_not_make(tmp_path: Path) -> None:
    """Hydra's sweeper makes the sweep folder and writes multirun.yaml there before it composes the
    jobs' configs (`SweepFolder`): a job it cannot compose leaves nothing behind, but a folder
    that held anything else before is the user's and stays."""
    sweep = ["-m", "model=rrdb,rrbd", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    proc = _tool(tmp_path, *sweep, config="train")
    assert proc.returncode == 2 and proc.stderr.startswith("error: model=rrbd is not an option of model: ")
    assert not (tmp_path / "sweep").exists()

    from sr_gan.cli import SweepFolder, _remove_empty_sweep_folder

    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "notes.txt").write_text("mine")
    (tmp_path / "held" / "multirun.yaml").write_text("{}")
    SweepFolder().on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "held")}}}))
    try:
        _remove_empty_sweep_folder()
    finally:
        SweepFolder.made = None
    assert (tmp_path / "held" / "notes.txt").read_text() == "mine"


def test_a_sweep_job_composed_after_others_ran_is_refused_in_one_line_too(tmp_path: Path) -> None:
    """A sweep may compose a job's config only after the jobs before it ran: an Optuna trial is drawn
    then, and Hydra's sweeper composes batch by batch (max_batch_size=1 here). The tool's code runs
    without HYDRA_FULL_ERROR, which is set again for the next composition (it was not: Hydra's
    message in 20 lines, exit 1). The jobs that ran keep their folders."""
    sweep = ["-m", "degradation=bicubic,bicubc", "hydra.sweeper.max_batch_size=1"]
    proc = _tool(tmp_path, *sweep, f"hydra.sweep.dir={tmp_path / 'sweep'}", config="degrade")
    assert proc.stdout.count("task sees HYDRA_FULL_ERROR=None") == 1
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: degradation=bicubc is not an option of degradation: ")
    assert len(proc.stderr.splitlines()) == 1 and (tmp_path / "sweep" / "0").is_dir()


def test_cfg_hydra_resolved_says_to_show_it_from_the_whole_config(tmp_path: Path) -> None:
    """train's ``hydra.sweep.dir`` reads ``paths.log_dir``: Hydra resolves ``--cfg hydra`` without the
    tool's keys (OmegaConf's stack trace, exit 1). One line naming the command that works; that
    command prints the resolved value."""
    proc = _tool(tmp_path, "--cfg", "hydra", "--resolve", config="train")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: --cfg hydra --resolve: a key of hydra reads the tool's config (")
    assert "paths.log_dir" in proc.stderr and proc.stderr.rstrip().endswith(
        "use --cfg all --resolve -p hydra (or -p hydra.<key>)"
    )
    (tmp_path / "all").mkdir()
    proc = _tool(
        tmp_path / "all", "--cfg", "all", "--resolve", "-p", "hydra.sweep.dir", "paths.log_dir=/x", config="train"
    )
    assert proc.returncode == 0 and proc.stdout.startswith("/x/train/multiruns/"), proc.stderr


def test_the_tool_runs_without_hydra_full_error_and_its_own_errors_stay_hydras(tmp_path: Path) -> None:
    """The variable that makes Hydra raise is set for the composition only: the tool's code (and
    every process it starts) runs without it, and an error of its own is reported by Hydra as
    before (exit 1, Hydra's note on HYDRA_FULL_ERROR), not taken for a mistyped override."""
    proc = _tool(tmp_path, "ckpt=raise")
    assert "task sees HYDRA_FULL_ERROR=None" in proc.stdout
    assert proc.returncode == 1 and "raised by the tool" in proc.stderr
    assert "Set the environment variable HYDRA_FULL_ERROR=1" in proc.stderr


def test_a_users_hydra_full_error_keeps_hydras_stack_trace(tmp_path: Path) -> None:
    proc = _tool(tmp_path, "ckptt=x", env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ConfigCompositionException: Could not override 'ckptt'" in proc.stderr


def test_the_package_without_its_conf_folder_says_how_to_install_it(tmp_path: Path) -> None:
    """sr_gan/conf is a link to conf/: a copy of the package that did not follow it has no configs."""
    proc = _tool(tmp_path, conf=False)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith(
        f"error: Primary config directory not found. Check that the config directory '{tmp_path / 'a' / 'b' / 'conf'}'"
    )
    assert proc.stderr.strip().endswith("is missing: install sr-gan from a clone (make install)")


def test_a_clone_without_symbolic_links_says_how_to_clone(tmp_path: Path) -> None:
    """git without symbolic links (Windows' default) writes sr_gan/conf as a file holding '../../conf'."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "conf").write_text("../../conf")
    proc = _tool(tmp_path, conf=False)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert proc.stderr.strip().endswith(
        "it is a file, not the link to conf/: the clone was made without symbolic links (Windows: "
        "git clone -c core.symlinks=true with Developer Mode on, or use WSL)"
    )


def test_help_into_a_pipe_closed_early_ends_quietly(tmp_path: Path) -> None:
    """`python -m sr_gan.<tool> --help | head -3`: the reader closes the pipe; no traceback."""
    proc = _tool(tmp_path, "--help", stdout_lines=0)  # closed before the tool writes (its start takes ~1 s)
    assert proc.returncode == 1 and proc.stderr == ""


@pytest.mark.parametrize(
    ("values", "line"),
    [
        (
            {"a": {"x": "${nope}"}},
            "a.x=${nope} cannot be resolved: the config has no key nope; python -m sr_gan.t --cfg",
        ),
        (  # the closest key, never the key itself (a cycle)
            {"loss": {"pixel_weight": "${loss.pixel_weigth}", "perceptual_weight": 1}},
            "loss.pixel_weight=${loss.pixel_weigth} cannot be resolved: the config has no key loss.pixel_weigth; "
            "did you mean ${loss.perceptual_weight}?",
        ),
        (  # the one the others lead to, wherever it is
            {"module": {"w": "${loss.w}", "v": "x_${loss.w}"}, "loss": {"w": "${nope}"}},
            "loss.w=${nope} cannot be resolved: the config has no key nope",
        ),
        ({"a": [1, "${b}"]}, "a[1]=${b} cannot be resolved: the config has no key b"),
        (
            {"a": "${oc.evn:HOME}"},
            "a=${oc.evn:HOME} cannot be resolved: no resolver is named oc.evn; did you mean oc.env?",
        ),
        ({"a": "${zzzz:1}"}, "a=${zzzz:1} cannot be resolved: no resolver is named zzzz; text that starts like one is"),
        (
            {"a": "${oc.env:SR_GAN_TEST_UNSET}"},
            "a=${oc.env:SR_GAN_TEST_UNSET} cannot be resolved: Environment variable 'SR_GAN_TEST_UNSET' not found; "
            "set it, or give a default: ${oc.env:NAME,default}",
        ),
    ],
)
def test_an_interpolation_that_cannot_be_resolved_is_one_line_naming_key_value_and_fix(values, line) -> None:
    message = unresolvable(OmegaConf.create(values), tool="t")
    assert message is not None and message.startswith(line) and "\n" not in message


def test_resolvable_interpolations_and_missing_values_are_left_alone() -> None:
    """A ``???`` value, and an interpolation of one, are the tools' to name (their missing-key checks)."""
    cfg = OmegaConf.create({"a": {"b": 1, "c": "${a.b}", "d": "???", "e": "${a.d}", "f": ["${a.b}"]}, "g": "${a}"})
    assert unresolvable(cfg, tool="t") is None


@pytest.mark.parametrize(
    ("tool", "overrides"),
    [(tool, []) for tool in ("train", "evaluate", "upscale", "export", "interpolate", "compare", "degrade")]
    + [("train", [f"experiment={p.stem}"]) for p in sorted((CONF_DIR / "experiment").glob("*.yaml"))]
    + [("train", ["logger=wandb"]), ("train", ["trainer=ddp"])],
)
def test_every_shipped_config_resolves(tool: str, overrides: list[str], tmp_path: Path) -> None:
    """What the tools check before they run: no interpolation of the shipped configs is broken."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(tool, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    assert unresolvable(cfg, tool=tool) is None


@pytest.mark.parametrize("full_error", [False, True])
def test_a_tools_process_ends_with_its_heap_frozen(full_error: bool) -> None:
    """The interpreter's shutdown collection traverses the whole heap more than once (over a second of
    every tool's exit on a 2-core CPU: benchmarks/bench_exit.py): a tool freezes the heap as the process
    ends, after its failure as after its work, also with HYDRA_FULL_ERROR set (a DDP rank > 0 inherits
    it from rank 0). An exit handler registered before the tool runs (so run after the tool's) finds it
    frozen, with the objects the tool made (frozen as the tool started, they were left to collect)."""
    probe = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('unfrozen, frozen at exit:', len(gc.get_objects()), gc.get_freeze_count()))\n"
        "import runpy\n"
        "sys.argv = ['degrade', 'no_such_key=1']\n"
        "runpy.run_module('sr_gan.degrade', run_name='__main__', alter_sys=True)\n"  # python -m sr_gan.degrade
    )
    env = child_env({"HYDRA_FULL_ERROR": "1"} if full_error else {}, drop=("HYDRA_FULL_ERROR",))
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == (1 if full_error else 2) and "no_such_key" in done.stderr, done.stderr[-2000:]
    unfrozen, frozen = map(int, done.stdout.rsplit(":", 1)[1].split())
    assert frozen > 100_000  # torch's objects among them
    assert unfrozen < 1_000, unfrozen  # frozen as the process ends: what the tool made too, not only its imports
