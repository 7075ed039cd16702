"""A run's output folder under hostile conditions: a lock file that is a link, and an --overwrite cut short."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mnist_cnn.errors import ConfigError
from mnist_cnn.model import SmallCNN
from mnist_cnn.results import build_payload, save_checkpoint
from mnist_cnn.tooling.cli import train
from mnist_cnn.tooling.cli.args import run_cli
from mnist_cnn.tooling.cli.catalog import read_run
from mnist_cnn.tooling.runctl.rundir import ASIDE_PREFIX, LOCK_NAME, RunLock, claim_run_folder

SHORT_RUN = ("--preset", "fast", "--smoke", "--epochs", "1", "--quiet")


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file() and not p.is_symlink()}


def one_line_error(capsys: pytest.CaptureFixture, status: int) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


@pytest.fixture
def finished_run(tmp_path: Path) -> Path:
    out = tmp_path / "finished"
    out.mkdir()
    save_checkpoint(out / "model.pt", build_payload(SmallCNN(), arch="small_cnn", model_options={}, input_scaling="standard"))
    (out / "metrics.json").write_text('{"test_accuracy": 0.99, "config": {"epochs": 9}}\n')
    return out


# --- The lock file is never followed through a link ---


@pytest.mark.parametrize("with_run", [False, True], ids=["empty folder", "folder refused for its run"])
def test_a_lock_file_linking_elsewhere_is_refused_and_its_target_untouched(
    tmp_path: Path, finished_run: Path, capsys: pytest.CaptureFixture, with_run: bool
) -> None:
    """Before, train truncated the link's target and wrote its pid there, even when it then refused the folder."""
    precious = tmp_path / "precious.txt"
    precious.write_text("a user's file\n")
    out = finished_run if with_run else tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / LOCK_NAME).symlink_to(precious)
    before = snapshot(out)
    message = one_line_error(capsys, run_cli(train.main, [*SHORT_RUN, "--out", str(out)]))
    assert f"{out / LOCK_NAME} is not a plain lock file" in message
    assert precious.read_text() == "a user's file\n" and snapshot(out) == before
    assert os.readlink(out / LOCK_NAME) == str(precious)


def test_a_dangling_link_is_not_created_through(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).symlink_to(tmp_path / "would-be-created")
    with pytest.raises(ConfigError, match="is not a plain lock file"):
        RunLock(tmp_path).acquire()
    assert not (tmp_path / "would-be-created").exists()


def test_a_lock_file_with_a_second_name_is_refused(tmp_path: Path) -> None:
    """A hard link: the same file under another name, which truncating would change."""
    precious = tmp_path / "precious.txt"
    precious.write_text("keep\n")
    out = tmp_path / "out"
    out.mkdir()
    os.link(precious, out / LOCK_NAME)
    with pytest.raises(ConfigError, match="is not a plain lock file"):
        RunLock(out).acquire()
    assert precious.read_text() == "keep\n"


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_lock_path_that_is_not_a_file_is_refused_at_once(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(tmp_path / LOCK_NAME)
    else:
        (tmp_path / LOCK_NAME).mkdir()
    with pytest.raises(ConfigError, match="is not a plain lock file"):
        RunLock(tmp_path).acquire()


def test_lock_messages_escape_the_folder_name(tmp_path: Path) -> None:
    out = tmp_path / "run\x1b]0;x\x07\n"
    out.mkdir()
    (out / LOCK_NAME).mkdir()
    with pytest.raises(ConfigError) as caught:
        RunLock(out).acquire()
    assert "run\\x1b]0;x\\x07\\x0a" in str(caught.value) and "\x1b" not in str(caught.value)


# --- --overwrite: the folder never shows two runs at once ---


def test_overwrite_moves_the_old_results_aside_while_the_new_run_lives(finished_run: Path) -> None:
    before = snapshot(finished_run)
    lock = claim_run_folder(finished_run, resume=None, overwrite=True)
    try:
        assert not (finished_run / "model.pt").exists() and not (finished_run / "metrics.json").exists()
        assert (finished_run / f"{ASIDE_PREFIX}model.pt").read_bytes() == before["model.pt"]
    finally:
        lock.release()
    assert snapshot(finished_run) == before, "a run that wrote nothing puts the old results back"


def test_old_results_go_once_the_new_run_has_written_a_checkpoint(finished_run: Path) -> None:
    """Interrupted after its first checkpoint: before, the old model.pt and metrics.json stayed beside the new
    last.pt and compare reported the old results as this folder's."""
    with claim_run_folder(finished_run, resume=None, overwrite=True):
        save_checkpoint(finished_run / "last.pt", build_payload(SmallCNN(), arch="small_cnn", model_options={}, input_scaling="standard"))
    assert sorted(p.name for p in finished_run.iterdir()) == ["last.pt"]
    recorded, notes = read_run(finished_run)
    assert "test_accuracy" not in recorded and "no metrics.json" in notes


def test_results_set_aside_by_a_killed_run_come_back_when_it_wrote_nothing(finished_run: Path) -> None:
    """kill -9 before the first checkpoint: the next claim puts them back, and refuses to start over them."""
    before = snapshot(finished_run)
    for name in ("model.pt", "metrics.json"):
        (finished_run / name).rename(finished_run / f"{ASIDE_PREFIX}{name}")
    with pytest.raises(ConfigError, match="already holds another run's model.pt"):
        claim_run_folder(finished_run, resume=None, overwrite=False)
    assert snapshot(finished_run) == before


def test_an_overwrite_that_fails_on_its_data_keeps_the_old_run(finished_run: Path, tmp_path: Path, offline: None) -> None:
    before = snapshot(finished_run)
    status = run_cli(train.main, [*SHORT_RUN, "--data-dir", str(tmp_path / "none"), "--out", str(finished_run), "--overwrite"])
    assert status == 1 and snapshot(finished_run) == before
