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
