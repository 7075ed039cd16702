"""The Makefile's choice of environment, read from ``make -n`` (what it would run) in a scratch copy.

A full install is proved by ``.ci/fresh-setup-check``; these check the decisions cheaply: which Python
every target uses, when requirements.txt is installed again, and what ``clean``/``distclean`` remove.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mnist_cnn import PROJECT_ROOT

STAMP = ".mnist-cnn-requirements.stamp"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The Makefile and the files its rules depend on, in a scratch folder."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    for name in ("Makefile", "requirements.txt", "pyproject.toml"):
        shutil.copyfile(PROJECT_ROOT / name, tmp_path / name)
    return tmp_path


def clean_env() -> dict[str, str]:
    """This process's environment without an active environment or an outer make's settings (``make test`` runs us)."""
    outer = ("VIRTUAL_ENV", "CONDA_PREFIX", "USE_UV", "USE_VENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")
    return {k: v for k, v in os.environ.items() if k not in outer}


def dry_run(project: Path, *args: str, **env: str) -> list[str]:
    """The commands ``make -n ARGS`` would run, with no environment active unless ``env`` sets one."""
    result = subprocess.run(["make", "-n", *args], cwd=project, capture_output=True, text=True, timeout=60, env={**clean_env(), **env})
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def fake_venv(project: Path) -> None:
    """A .venv that looks installed: its python and a stamp newer than requirements.txt."""
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / ".venv" / "bin" / "python").write_text("")
    time.sleep(0.01)
    (project / ".venv" / STAMP).write_text("")
    later = time.time() + 5
    os.utime(project / ".venv" / STAMP, (later, later))


def test_without_an_environment_make_creates_and_uses_dot_venv(project: Path) -> None:
    lines = dry_run(project, "unit", USE_UV="0")
    assert any(line.startswith("python3 -m venv .venv") for line in lines), lines
    assert ".venv/bin/python -m pip install -q -r requirements.txt" in lines
    assert lines[-1] == '.venv/bin/python -m pytest -n 2 --dist loadgroup -m "not slow" tests'


def test_uv_is_used_when_asked(project: Path) -> None:
    lines = dry_run(project, "venv", USE_UV="1")
    assert "uv venv --python python3 .venv" in lines
    assert "uv pip install --python .venv/bin/python -r requirements.txt" in lines


def test_installed_venv_is_reused_until_requirements_change(project: Path) -> None:
    fake_venv(project)
    lines = dry_run(project, "unit", USE_UV="0")
    assert lines == ['.venv/bin/python -m pytest -n 2 --dist loadgroup -m "not slow" tests'], "nothing to install"
    later = time.time() + 10
    os.utime(project / "requirements.txt", (later, later))
    lines = dry_run(project, "unit", USE_UV="0")
    assert ".venv/bin/python -m pip install -q -r requirements.txt" in lines
    assert not any("-m venv" in line for line in lines), "the environment itself is kept"


@pytest.mark.parametrize("variable", ["VIRTUAL_ENV", "CONDA_PREFIX"])
def test_an_active_environment_is_respected(project: Path, tmp_path: Path, variable: str) -> None:
    env_dir = tmp_path / "active-env"
    lines = dry_run(project, "unit", **{variable: str(env_dir), "USE_UV": "0"})
    assert not any(".venv" in line for line in lines), lines
    assert "python -m pip install -q -r requirements.txt" in lines
    assert f"touch {env_dir}/{STAMP}" in lines
    assert lines[-1] == 'python -m pytest -n 2 --dist loadgroup -m "not slow" tests'


def test_clean_keeps_the_venv_and_distclean_removes_it(project: Path) -> None:
    fake_venv(project)
    assert not any(".venv" in line for line in dry_run(project, "clean"))
    assert "rm -rf .venv" in dry_run(project, "distclean")
    subprocess.run(["make", "clean"], cwd=project, check=True, capture_output=True, timeout=60, env=clean_env())
    assert (project / ".venv" / "bin" / "python").exists()
    subprocess.run(["make", "distclean"], cwd=project, check=True, capture_output=True, timeout=60, env=clean_env())
    assert not (project / ".venv").exists()


def test_help_names_every_target(project: Path) -> None:
    result = subprocess.run(
        ["make", "help"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ") and "environment:" not in line}
    assert {"run", "test", "venv", "lint", "format", "setup-git", "data", "docs", "clean", "distclean"} <= listed
    assert ".venv/ (created on first use)" in result.stdout


def test_docs_builds_the_site_through_the_build_command(project: Path) -> None:
    """``make docs`` hands over to the build command, from the same environment as every other target."""
    fake_venv(project)
    lines = dry_run(project, "docs", USE_UV="0")
    assert lines[-1] == ".venv/bin/python -m mnist_cnn.tooling.cli.build docs", lines


def recording_python(project: Path) -> Path:
    """A fake installed .venv whose python writes the arguments it was given to ``argv.txt``, one per line."""
    fake_venv(project)
    python = project / ".venv" / "bin" / "python"
    python.write_text('#!/bin/sh\nfor a in "$@"; do printf \'%s\\n\' "$a"; done > argv.txt\n')
    python.chmod(0o755)
    later = time.time() + 5
    os.utime(project / ".venv" / STAMP, (later, later))
    return project / "argv.txt"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["PRESET=fast", "SEED=3"], ["--preset", "fast", "--seed", "3"]),
        ([], ["--preset", "default"]),
        # a value is data, never shell text: these reach the program whole, where they are refused
        (["PRESET=x; touch pwned", "SEED=1 2"], ["--preset", "x; touch pwned", "--seed", "1 2"]),
        (["PRESET=$(shell touch pwned)"], ["--preset", "$(shell touch pwned)"]),
    ],
)
def test_study_passes_its_values_as_data(project: Path, values: list[str], expected: list[str]) -> None:
    """``make study PRESET=... SEED=...`` gives the build command each value as one argument, whatever it holds."""
    argv = recording_python(project)
    result = subprocess.run(
        ["make", "study", *values], cwd=project, capture_output=True, text=True, timeout=60, env={**clean_env(), "USE_UV": "0"}
    )
    assert result.returncode == 0, result.stderr
    assert argv.read_text().splitlines() == ["-m", "mnist_cnn.tooling.cli.build", "study", *expected]
    assert not (project / "pwned").exists()


def test_the_design_page_names_every_module() -> None:
    """docs/design.md is the map of the package: a module it does not name is one a reader cannot find."""
    import re

    from mnist_cnn import PROJECT_ROOT

    page = (PROJECT_ROOT / "docs" / "design.md").read_text()
    named = set(re.findall(r"`([a-z_]+)`", page))
    modules = {p.stem for p in (PROJECT_ROOT / "src" / "mnist_cnn").rglob("*.py") if p.stem != "__init__"}
    assert modules - named == set(), f"docs/design.md does not name {sorted(modules - named)}"
