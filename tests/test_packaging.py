"""The wheel holds every package and data file of the source tree.

`[tool.setuptools] packages` is an explicit list (plugins/ is installed as
voiced_plugins), so a new package folder must be added there: a wheel built without it
imports fine from a checkout and fails once installed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setuptools() -> dict:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return project["tool"]["setuptools"]


def test_every_package_folder_is_in_the_wheel() -> None:
    setup = _setuptools()
    dirs = {name: Path(folder) for name, folder in setup["package-dir"].items()}
    found = set()
    for name, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join((name, *rel.parts)))
    listed = set(setup["packages"])
    assert found == listed, ("pyproject.toml [tool.setuptools] packages: missing "
                             f"{sorted(found - listed)}, not in the tree {sorted(listed - found)}")


def test_package_data_exists() -> None:
    setup = _setuptools()
    for package, patterns in setup["package-data"].items():
        base = ROOT / setup["package-dir"][package]
        for pattern in patterns:
            assert list(base.glob(pattern)), f"package-data {package}: {pattern} matches nothing"
