"""experiments/: each study is a runnable script with its README, and a wrong scale is refused in one line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.parent.name for p in (ROOT / "experiments").glob("*/run.sh"))


def test_the_three_studies_are_there() -> None:
    assert STUDIES == ["esrgan_fig7", "network_interpolation", "srgan_content_loss"]


@pytest.mark.parametrize("study", STUDIES)
def test_a_study_parses_has_its_readme_and_refuses_an_unknown_scale(study: str) -> None:
    script = ROOT / "experiments" / study / "run.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    assert (script.parent / "README.md").is_file()
    done = subprocess.run(
        ["bash", str(script)], env={"SCALE": "huge", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "SCALE=huge: use SCALE=demo (CPU, minutes) or SCALE=paper (DIV2K on GPUs, days)"
    ]
    assert not (script.parent / "results" / "huge").exists()  # refused before anything is made


@pytest.mark.parametrize(("scale", "threads"), [("demo", "2"), ("paper", "1")])
def test_demo_scale_trains_with_two_torch_threads_whatever_the_shell_exports(
    tmp_path: Path, scale: str, threads: str
) -> None:
    """A CPU run's weights depend on torch's thread count: the committed demo results come out again
    only with the count they were made with (2); the paper scale keeps the shell's."""
    study = tmp_path / "experiments" / "probe"
    study.mkdir(parents=True)
    (study / "run.sh").write_text(f"source {ROOT / 'experiments' / 'lib.sh'}\ntrain first loss=ragan\n")
    python = tmp_path / "python"  # stands in for the interpreter: says what train() ran it with
    python.write_text('#!/bin/sh\necho "OMP_NUM_THREADS=$OMP_NUM_THREADS $*"\n')
    python.chmod(0o755)
    env = {"SCALE": scale, "PYTHON": str(python), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["bash", str(study / "run.sh")], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == (
        f"OMP_NUM_THREADS={threads} -m sr_gan.train loss=ragan hydra.run.dir=logs/experiments/probe/{scale}/first"
        " ckpt_path=last"
    )
