"""Opening the notebooks in Colab: every badge points at the repository of pyproject.toml, and the install cell runs only there.

A fork changes ``[project.urls] Repository`` in pyproject.toml; these tests then name every badge and cell to follow.
"""

from __future__ import annotations

import json
import os
import re
import site
import subprocess
import sys
import types
from pathlib import Path

import pytest

from mnist_cnn import NOTEBOOKS_DIR, PROJECT_ROOT

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
BRANCH = "main"
REPOSITORY = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
BADGE = re.compile(r"\[!\[Open in Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]\((?P<target>[^)\s]+)\)")


def colab_url(notebook: Path) -> str:
    """Where Colab opens ``notebook`` from: the repository's main branch."""
    return (
        f"https://colab.research.google.com/github/{REPOSITORY.removeprefix('https://github.com/')}/blob/{BRANCH}/notebooks/{notebook.name}"
    )


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def colab_cell(path: Path) -> str:
    """The install cell: the first code cell, right after the opening markdown cell."""
    first, second = cells(path)[:2]
    assert (first["cell_type"], second["cell_type"]) == ("markdown", "code"), f"{path.name}: the Colab cell follows the first markdown cell"
    assert '"google.colab" in sys.modules' in source(second), f"{path.name}: its first code cell is not the Colab install cell"
    return source(second)


def test_repository_is_a_github_url() -> None:
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPOSITORY), REPOSITORY


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_badge_opens_this_notebook(path: Path) -> None:
    opening = source(cells(path)[0])
    targets = [m["target"] for m in BADGE.finditer(opening)]
    assert targets == [colab_url(path)], f"{path.name}: its first cell needs one badge pointing at {colab_url(path)}, has {targets}"


def test_readme_badges_open_each_notebook() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    targets = [m["target"] for m in BADGE.finditer(readme)]
    assert targets == [colab_url(path) for path in NOTEBOOKS], "README.md: one badge per notebook, in order, on the main branch"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_cell_is_the_same_everywhere(path: Path) -> None:
    assert colab_cell(path) == colab_cell(NOTEBOOKS[0]), f"{path.name}: the Colab cell differs from {NOTEBOOKS[0].name}'s"
    assert REPOSITORY in colab_cell(path), f"{path.name}: the Colab cell must clone {REPOSITORY}"


class Recorder:
    """Stands in for what the cell could change: the commands it would run, the folder it would enter, the paths it would read."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, existing: set[str]) -> None:
        self.runs: list[tuple[list[str], dict]] = []
        self.chdirs: list[str] = []
        self.sitedirs: list[str] = []
        monkeypatch.setattr(subprocess, "run", lambda args, **kwargs: self.runs.append((list(args), kwargs)))
        monkeypatch.setattr(os, "chdir", self.chdirs.append)
        monkeypatch.setattr(site, "addsitedir", self.sitedirs.append)
        monkeypatch.setattr(os.path, "isdir", lambda folder: str(folder) in existing)


def run_cell(path: Path) -> dict:
    namespace: dict = {}
    exec(compile(colab_cell(path), f"{path.name}: Colab cell", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_in_colab_it_clones_installs_and_enters_notebooks(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    fresh = Recorder(monkeypatch, existing=set())
    run_cell(path)
    (clone, clone_options), (install, install_options) = fresh.runs
    folder = clone[-1]
    assert clone == ["git", "clone", "--depth", "1", "--branch", BRANCH, REPOSITORY, folder], clone
    assert install[:4] == [sys.executable, "-m", "pip", "install"] and install[-2:] == ["-r", "requirements.txt"], install
    assert install_options == {"cwd": folder, "check": True} and clone_options == {"check": True}
    assert fresh.chdirs == [f"{folder}/notebooks"] and fresh.sitedirs == site.getsitepackages()

    again = Recorder(monkeypatch, existing={folder})  # run a second time: the clone is there, the install is checked again
    run_cell(path)
    assert [args for args, _ in again.runs] == [install] and again.chdirs == [f"{folder}/notebooks"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_elsewhere_it_does_nothing(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    recorder = Recorder(monkeypatch, existing=set())
    namespace = run_cell(path)
    assert recorder.runs == [] and recorder.chdirs == [] and recorder.sitedirs == []
    assert set(namespace) == {"__builtins__", "sys"}, "outside Colab the cell defines nothing but imports sys"


def test_requirements_install_the_pinned_set_and_this_package() -> None:
    """What the cell's ``pip install -r requirements.txt`` installs: exact pins, then this project (so ``data/`` is the clone's)."""
    lines = [line.strip() for line in (PROJECT_ROOT / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line and not line.startswith("#")]
    assert requirements[-1] == "-e ." and all("==" in line for line in requirements[:-1]), requirements
    assert any(line.startswith("torch==") for line in requirements)
