"""``make study`` and ``make docs`` (tooling/cli/build): values checked first, one build at a time, whole folders only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnist_cnn.errors import ConfigError
from mnist_cnn.tooling.cli import build
from mnist_cnn.tooling.cli.args import run_cli


@pytest.fixture
def build_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(build, "BUILD_DIR", tmp_path / "build")
    return tmp_path / "build"


def notebook(path: Path, *cells: str) -> Path:
    """A notebook with a ``parameters`` cell (PRESET, SEED) and then ``cells``."""

    def code(source: str, tags: list[str]) -> dict:
        return {"cell_type": "code", "execution_count": None, "metadata": {"tags": tags}, "outputs": [], "source": source}

    content = {
        "cells": [code('PRESET = "default"\nSEED = 0', ["parameters"]), *(code(c, []) for c in cells)],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(content))
    return path


@pytest.mark.parametrize("preset", ["no_such", "fast; touch pwned", "fast ", ""])
def test_an_unknown_preset_is_refused_before_anything_runs(build_dir: Path, capsys: pytest.CaptureFixture[str], preset: str) -> None:
    assert run_cli(build.main, ["study", "--preset", preset]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown preset") and err.count("\n") == 1, err
    assert not build_dir.exists()


@pytest.mark.parametrize("seed", ["1 2", "x", "1.5", "-1"])
def test_a_seed_that_is_not_a_whole_number_is_refused(build_dir: Path, capsys: pytest.CaptureFixture[str], seed: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build.main(["study", "--preset", "fast", "--seed", seed])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not build_dir.exists()


def test_a_failed_build_leaves_the_previous_folder_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "site"
    target.mkdir()
    (target / "index.html").write_text("old")
    with pytest.raises(RuntimeError), build.built_into(target) as staging:
        (staging / "index.html").write_text("half")
        raise RuntimeError("a step failed")
    assert (target / "index.html").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"], "no staging folder is left behind"
    with build.built_into(target) as staging:
        (staging / "index.html").write_text("new")
    assert (target / "index.html").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


@pytest.mark.parametrize("kind", ["file", "link"])
def test_a_target_that_is_not_a_folder_is_refused_untouched(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "site"
    if kind == "file":
        target.write_text("mine")
    else:
        (tmp_path / "elsewhere").mkdir()
        target.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="is not a folder"), build.built_into(target):
        pass
    assert target.is_symlink() if kind == "link" else target.read_text() == "mine"


def test_a_second_build_at_once_fails_in_one_line(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    with build.exclusive(lock, "make docs"):
        with pytest.raises(ConfigError, match="another make docs is running"), build.exclusive(lock, "make docs"):
            pass
    with build.exclusive(lock, "make docs"):  # released: the next build goes ahead
        pass


def test_the_study_writes_its_models_into_its_own_folder(build_dir: Path, tmp_path: Path) -> None:
    """The notebooks run with the preset and seed given, and MNIST_CNN_ARTIFACTS points into the study's folder."""
    source = notebook(
        tmp_path / "03_train.ipynb",
        "import os, pathlib\nfolder = pathlib.Path(os.environ['MNIST_CNN_ARTIFACTS'], 'models', PRESET)\n"
        "folder.mkdir(parents=True)\n(folder / 'seed.txt').write_text(str(SEED))",
    )
    folder = build.study("fast", 3, [source])
    assert folder == build_dir / "study" / "fast"
    assert (folder / "models" / "fast" / "seed.txt").read_text() == "3"
    assert (folder / "03_train.ipynb").exists()


def test_a_failing_notebook_fails_the_study_in_one_line_and_replaces_nothing(build_dir: Path, tmp_path: Path) -> None:
    previous = build_dir / "study" / "fast"
    previous.mkdir(parents=True)
    (previous / "kept.txt").write_text("an earlier study")
    source = notebook(tmp_path / "01_fails.ipynb", "raise ValueError('no')")
    with pytest.raises(build.BuildFailed, match=r"^papermill on 01_fails.ipynb failed \(its messages are above\); nothing was replaced$"):
        build.study("fast", None, [source])
    assert sorted(p.name for p in previous.iterdir()) == ["kept.txt"]
    assert sorted(p.name for p in previous.parent.iterdir()) == [".lock", "fast"]
