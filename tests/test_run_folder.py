"""A run's output folder under hostile conditions: a lock file that is a link, and an --overwrite cut short."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mnist_cnn.errors import ConfigError
from mnist_cnn.model import SmallCNN
from mnist_cnn.results import build_payload, save_checkpoint
from mnist_cnn.tooling.cli import evaluate, train
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


def killed_overwrite(folder: Path) -> dict[str, bytes]:
    """The folder as a ``train --overwrite`` killed after its first checkpoint leaves it: the old run aside, a new last.pt."""
    before = snapshot(folder)
    for name in ("model.pt", "metrics.json"):
        (folder / name).rename(folder / f"{ASIDE_PREFIX}{name}")
    save_checkpoint(folder / "last.pt", build_payload(SmallCNN(), arch="small_cnn", model_options={}, input_scaling="standard"))
    return before


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_run_set_aside_beside_newer_files_is_refused_into_until_the_user_decides(finished_run: Path, overwrite: bool) -> None:
    """Before, a fresh start was not stopped and a later --overwrite replaced the set-aside run for good."""
    killed_overwrite(finished_run)
    kept = snapshot(finished_run)
    with pytest.raises(ConfigError) as caught:
        claim_run_folder(finished_run, resume=None, overwrite=overwrite)
    assert str(caught.value) == (
        f"{finished_run} holds a run set aside by an --overwrite that did not finish (.replaced.model.pt) beside newer files; "
        "nothing was changed: rename it back (without '.replaced.') to keep it, or delete it; "
        f"or continue the run that replaced it with --resume {finished_run / 'last.pt'}"
    )
    assert snapshot(finished_run) == kept and not (finished_run / LOCK_NAME).exists()


def test_continuing_the_killed_overwrite_completes_it(finished_run: Path) -> None:
    killed_overwrite(finished_run)
    with claim_run_folder(finished_run, resume=finished_run / "last.pt", overwrite=False):
        pass  # refused or failed before writing: the set-aside run stays aside, not back beside the new last.pt
    assert {p.name for p in finished_run.iterdir()} == {"last.pt", ".replaced.model.pt", ".replaced.metrics.json"}
    with claim_run_folder(finished_run, resume=finished_run / "last.pt", overwrite=False):
        save_checkpoint(finished_run / "last.pt", build_payload(SmallCNN(), arch="small_cnn", model_options={}, input_scaling="standard"))
    assert sorted(p.name for p in finished_run.iterdir()) == ["last.pt"], "the overwrite the user asked for is done"


def test_an_overwrite_that_fails_on_its_data_keeps_the_old_run(finished_run: Path, tmp_path: Path, offline: None) -> None:
    before = snapshot(finished_run)
    status = run_cli(train.main, [*SHORT_RUN, "--data-dir", str(tmp_path / "none"), "--out", str(finished_run), "--overwrite"])
    assert status == 1 and snapshot(finished_run) == before


# --- evaluate --out never writes into a run's folder ---


def test_evaluate_refuses_a_folder_holding_a_run_set_aside(finished_run: Path, capsys: pytest.CaptureFixture) -> None:
    killed_overwrite(finished_run)
    (finished_run / "last.pt").unlink()
    (finished_run / "metrics.json").write_text('{"test_accuracy": 0.5}\n')  # a report there already: not restored over
    kept = snapshot(finished_run)
    message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", "missing.pt", "--out", str(finished_run)]))
    assert f"{finished_run} holds a training run (.replaced.model.pt, set aside by an --overwrite that did not finish)" in message
    assert snapshot(finished_run) == kept


def test_evaluate_refuses_a_folder_a_live_run_holds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Before, a report was written into a folder whose lock a live training run held (it had not written a file yet)."""
    with RunLock(tmp_path):
        message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", "missing.pt", "--out", str(tmp_path)]))
    assert message.startswith(f"error: another training run (process {os.getpid()}) is writing to {tmp_path}")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
