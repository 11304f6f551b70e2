"""The versions pyproject.toml admits are the versions tested: its lower bounds are pinned in
tests/lowest-versions.txt, which `make test-lowest` installs and runs the suite on."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


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
