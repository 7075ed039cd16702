"""SIGTERM and SIGHUP stop training like Ctrl-C: finish the batch, keep the last epoch, print the resume command once,
exit with 128 + the signal's number. Two quick Ctrl-C presses still print it."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_process import environment
from training_process import start_training as start_fast_training

from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.tooling.runctl.signals import StopRequest


def start_training(out: Path, epochs: int) -> subprocess.Popen:
    """Start a run on the smoke slice and return once epoch 1 is saved (the run is then well inside epoch 2)."""
    return start_fast_training(out, "--preset", "fast", "--smoke", "--epochs", str(epochs))


def stopped_message(process: subprocess.Popen, *signals: int) -> str:
    """Send ``signals`` in quick succession and return the one line the run prints."""
    for index, signum in enumerate(signals):
        if index:
            time.sleep(0.1)  # apart enough that Python sees two signals, not one
        process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].count("resume with: ") == 1
    return lines[0]


@pytest.mark.slow  # end-to-end: make unit leaves it out
@pytest.mark.parametrize(("signum", "status"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)], ids=["SIGTERM", "SIGHUP"])
def test_signal_stops_like_ctrl_c(tmp_path: Path, data_dir: Path, signum: int, status: int) -> None:
    out = tmp_path / "run"
    # a three-epoch run is resumed to its end below; the others run long enough never to finish first
    process = start_training(out, 3 if signum == signal.SIGTERM else 20)
    message = stopped_message(process, signum)
    assert process.returncode == status
    assert f"{out / 'last.pt'} holds the state after epoch" in message
    saved = load_checkpoint(out / "last.pt").payload["training_state"]["epoch"]
    assert saved >= 1 and not (out / "model.pt").exists()
    if signum == signal.SIGTERM:  # the printed command continues the run to the end
        resume = shlex.split(message.split("resume with: ", 1)[1])
        resumed = subprocess.run([sys.executable, *resume[1:]], capture_output=True, text=True, timeout=300, env=environment())
        assert resumed.returncode == 0, resumed.stderr
        assert f"resuming {out / 'last.pt'} after epoch {saved} of 3" in resumed.stdout
        assert load_checkpoint(out / "model.pt").payload["training_state"]["epoch"] == 3


@pytest.mark.slow  # end-to-end: make unit leaves it out
def test_two_quick_ctrl_c_still_print_the_resume_hint(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "run"
    process = start_training(out, 20)
    message = stopped_message(process, signal.SIGINT, signal.SIGINT)
    assert process.returncode == 130
    assert message.startswith("interrupted in epoch") and f"--resume {out / 'last.pt'}" in message


def test_stop_request_counts_signals_and_restores_handlers() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    with StopRequest() as stop:
        assert not stop() and stop.exit_status == 130
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop() and stop.signum == signal.SIGTERM and stop.exit_status == 143 and stop.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # the second signal is forgiven: the save and the hint still happen
        assert stop.exit_status == 143, "the first signal decides the status"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGHUP)  # the third insists
    assert {s: signal.getsignal(s) for s in before} == before
    with StopRequest(repeat_interrupts=False) as stop:  # under torchrun: never abort the save
        for _ in range(4):
            os.kill(os.getpid(), signal.SIGHUP)
        assert stop() and stop.exit_status == 129
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_command_line_keeps_counting_after_a_stop() -> None:
    """A late second Ctrl-C, arriving while the command prints how to resume, must not kill it."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        with StopRequest(linger=True) as stop:
            os.kill(os.getpid(), signal.SIGINT)
        assert all(signal.getsignal(s) == signal.SIG_IGN for s in before), "ignored until the process exits"
        os.kill(os.getpid(), signal.SIGINT)  # after the block: harmless
        assert stop.count == 1 and stop.exit_status == 130
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
    with StopRequest(linger=True):  # no stop requested: handlers restored as usual
        pass
    assert {s: signal.getsignal(s) for s in before} == before
