"""What pyproject.toml promises: the versions it admits are the versions tested (its lower bounds
are pinned in tests/lowest-versions.txt, which `make test-lowest` runs the suite on), and a wheel
is a working install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.helpers import CONF_DIR, SRC

ROOT = SRC.parent


def lower_bounds() -> dict[str, Version]:
    """Each dependency of pyproject.toml (extras included, sr-gan's own extras left out) and its `>=` bound."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    bounds = {}
    for requirement in map(Requirement, lines):
        if canonicalize_name(requirement.name) == canonicalize_name(project["name"]):
            continue
        (specifier,) = requirement.specifier  # one bound each: a range admits what the pin below tests
        assert specifier.operator == ">=", requirement
        bounds[canonicalize_name(requirement.name)] = Version(specifier.version)
    return bounds


def test_the_lowest_versions_file_pins_every_lower_bound_of_pyproject() -> None:
    pins = {}
    for line in (ROOT / "tests" / "lowest-versions.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            (specifier,) = (requirement := Requirement(line)).specifier
            assert specifier.operator == "==", line
            pins[canonicalize_name(requirement.name)] = Version(specifier.version)
    assert pins == lower_bounds()


@pytest.mark.slow
def test_a_wheel_carries_the_configs_and_its_tools_run_from_any_folder(tmp_path: Path) -> None:
    """`pip install .`, `pip install git+URL` or a wheel leave no clone beside the package: the wheel
    holds every file of conf/ (through the link src/sr_gan/conf) and its tools compose from them.
    (Hydra used to look for conf/ two folders above the package: in site-packages, nothing.)"""
    source = tmp_path / "clone"  # a copy: building in the checkout would write build/ into it
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "conf"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src", source / "src", symlinks=True, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist", source], check=True)
    (wheel,) = (tmp_path / "dist").glob("sr_gan-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {n.removeprefix("sr_gan/conf/") for n in archive.namelist() if n.startswith("sr_gan/conf/")}
        plugins = {n for n in archive.namelist() if n.startswith("hydra_plugins/")}
    assert plugins == {"hydra_plugins/sr_gan_sweeper/__init__.py"}  # hparams_search's sweeper (a namespace package)
    assert shipped == {p.relative_to(CONF_DIR).as_posix() for p in CONF_DIR.rglob("*.yaml")}
    subprocess.run([*pip, "install", "--no-deps", "--target", tmp_path / "site", wheel], check=True)
    run = tmp_path / "elsewhere"
    run.mkdir()
    env = os.environ | {"PYTHONPATH": str(tmp_path / "site")}  # the wheel's sr_gan, not this checkout's
    where = subprocess.run(
        [sys.executable, "-c", "import sr_gan; print(sr_gan.__file__)"],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "site")
    tool = [sys.executable, "-m", "sr_gan.train", "experiment=esrgan_x4", "--cfg", "job"]
    shown = subprocess.run(tool, cwd=run, env=env, capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr
    # conf/experiment/esrgan_x4.yaml composed: its generator and its adversarial loss
    assert "RRDBNet" in shown.stdout and "RelativisticGANLoss" in shown.stdout
