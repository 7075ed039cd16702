"""No run lost: train never starts over another run's checkpoint without --overwrite, and one live run per folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from training_process import environment, start_training

from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.errors import ConfigError
from mnist_cnn.model import SmallCNN
from mnist_cnn.results import build_payload, save_checkpoint
from mnist_cnn.tooling.cli import train
from mnist_cnn.tooling.cli.args import run_cli
from mnist_cnn.tooling.runctl.rundir import LOCK_NAME, RunLock, check_not_another_run

SHORT_RUN = ("--preset", "fast", "--smoke", "--epochs", "3")


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


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
    (out / "metrics.json").write_text('{"test_accuracy": 0.99}\n')
    return out


def test_refuses_to_start_over_a_finished_run(finished_run: Path, capsys: pytest.CaptureFixture) -> None:
    before = snapshot(finished_run)
    message = one_line_error(capsys, run_cli(train.main, [*SHORT_RUN, "--quiet", "--out", str(finished_run)]))
    assert message == (
        f"error: {finished_run} already holds another run's model.pt (it is a finished run: train it further with "
        f"--resume {finished_run / 'model.pt'} --epochs N); pass --overwrite to replace it, or choose another --out"
    )
    assert snapshot(finished_run) == before


def test_overwrite_replaces_a_finished_run(finished_run: Path, data_dir: Path) -> None:
    old = (finished_run / "model.pt").read_bytes()
    assert run_cli(train.main, ["--preset", "fast", "--smoke", "--quiet", "--out", str(finished_run), "--overwrite"]) == 0
    assert (finished_run / "model.pt").read_bytes() != old
    assert sorted(p.name for p in finished_run.iterdir()) == ["metrics.json", "model.pt"], "lock released and removed"


def test_resume_into_another_folder_is_checked_too(finished_run: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.pt"
    elsewhere.write_bytes(b"")
    with pytest.raises(ConfigError, match="already holds another run's model.pt"):
        check_not_another_run(finished_run, resume=elsewhere, overwrite=False)
    check_not_another_run(finished_run, resume=finished_run / "model.pt", overwrite=False)  # its own folder: fine
    check_not_another_run(finished_run, resume=None, overwrite=True)
    check_not_another_run(tmp_path / "empty", resume=None, overwrite=False)


@pytest.mark.slow  # end-to-end: make unit leaves it out
def test_interrupted_run_is_kept_and_two_runs_never_share_a_folder(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    first = start_training(out, "--preset", "fast", "--smoke", "--epochs", "20")  # long enough to be live throughout
    try:
        # a second run in the same folder, while the first is live: refused by the lock, even with --overwrite
        message = one_line_error(capsys, run_cli(train.main, [*SHORT_RUN, "--quiet", "--overwrite", "--out", str(out)]))
        assert message == (
            f"error: another training run (process {first.pid}) is writing to {out} (it holds {out / LOCK_NAME}); "
            "wait for it to finish or choose another --out"
        )
    finally:
        first.send_signal(signal.SIGINT)
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130 and "resume with:" in stderr, stderr
    kept = (out / "last.pt").read_bytes()

    # the interrupted run's last.pt is not replaced by a fresh start; the message says how to continue it
    message = one_line_error(capsys, run_cli(train.main, [*SHORT_RUN, "--quiet", "--out", str(out)]))
    assert f"already holds another run's last.pt (it is an interrupted run: continue it with --resume {out / 'last.pt'})" in message
    assert (out / "last.pt").read_bytes() == kept and not (out / LOCK_NAME).exists()
    assert load_checkpoint(out / "last.pt").payload["training_state"]["epoch"] >= 1


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    with RunLock(tmp_path) as lock:
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
        with pytest.raises(ConfigError, match=f"another training run \\(process {os.getpid()}\\)"):
            RunLock(tmp_path).acquire()
        assert lock.stale_pid is None
        (tmp_path / LOCK_NAME).write_text("1\n")  # a pid written by anyone: the kernel's table names the real holder
        with pytest.raises(ConfigError, match=f"another training run \\(process {os.getpid()}\\)"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path):  # free again
        pass


def test_stale_lock_of_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom mnist_cnn.tooling.runctl.rundir import RunLock\n"
            f"RunLock({str(tmp_path)!r}).acquire()\nprint('locked', flush=True)\ntime.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError, match=f"process {holder.pid}"):
        RunLock(tmp_path).acquire()
    holder.kill()
    holder.wait(timeout=60)
    assert (tmp_path / LOCK_NAME).exists(), "kill -9 leaves the file behind"
    with RunLock(tmp_path) as lock:
        assert lock.stale_pid == holder.pid
        assert (tmp_path / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert not (tmp_path / LOCK_NAME).exists()
