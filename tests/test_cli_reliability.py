"""The train command under stress, run as a user runs it: Ctrl-C and resume, kill -9, divergence, bad input, torchrun.

Every failure must be one line on stderr with a non-zero status, no traceback, and leave the files
already in the output directory byte-for-byte as they were (an --overwrite run that has written its first
checkpoint has replaced them, as asked).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.model import SmallCNN
from mnist_cnn.results import build_payload, save_checkpoint
from mnist_cnn.tooling.cli import train
from mnist_cnn.tooling.cli.args import run_cli
from mnist_cnn.tooling.runctl.rundir import ASIDE_PREFIX

#: A three-epoch run of a few seconds: the fast preset on the smoke slice (2,000 / 1,000 images).
SHORT_RUN = ("--preset", "fast", "--smoke", "--epochs", "3")
TIMING_KEYS = ("train_seconds", "load_seconds", "total_seconds")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mnist_cnn.train", *args]


def environment() -> dict[str, str]:
    # children inherit PYTHONPATH and MNIST_DATA_DIR; unbuffered so epoch lines arrive as they are printed
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout, env=environment())


def assert_one_line_error(stderr: str, status: int, fragment: str) -> str:
    assert status != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


@pytest.fixture
def previous_run(tmp_path: Path) -> Path:
    """An output directory that already holds a model and metrics from an earlier run."""
    out = tmp_path / "out"
    out.mkdir()
    save_checkpoint(out / "model.pt", build_payload(SmallCNN(), arch="small_cnn", model_options={}, input_scaling="standard"))
    (out / "metrics.json").write_text('{"test_accuracy": 0.99}\n')
    return out


def comparable_metrics(path: Path) -> dict:
    metrics = json.loads(path.read_text())
    metrics["history"].pop("seconds")
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def start_and_wait_for_epoch(out: Path, epoch: int, *args: str) -> subprocess.Popen:
    process = subprocess.Popen(
        command(*args, "--out", str(out)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment()
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(f"epoch {epoch:>2} |"):
            return process
    process.wait()
    pytest.fail(f"training ended (status {process.returncode}) before epoch {epoch}: {process.stderr.read()}")


@pytest.mark.slow  # end-to-end: make unit leaves it out
def test_ctrl_c_then_resume_equals_an_uninterrupted_run(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "interrupted"
    process = start_and_wait_for_epoch(out, 1, *SHORT_RUN)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    message = assert_one_line_error(stderr, process.returncode, "resume with: python -m mnist_cnn.train --resume")
    assert f"{out / 'last.pt'} holds the state after epoch" in message
    assert not (out / "model.pt").exists(), "an interrupted run must not look finished"

    resume = shlex.split(message.split("resume with: ", 1)[1])
    assert resume[:3] == ["python", "-m", "mnist_cnn.train"]
    resumed = subprocess.run([sys.executable, *resume[1:]], capture_output=True, text=True, timeout=300, env=environment())
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.pt"]

    reference = tmp_path / "reference"
    assert run_cli(train.main, [*SHORT_RUN, "--quiet", "--out", str(reference)]) == 0
    assert comparable_metrics(out / "metrics.json") == comparable_metrics(reference / "metrics.json")
    for (name, a), b in zip(
        load_checkpoint(out / "model.pt").model.state_dict().items(),
        load_checkpoint(reference / "model.pt").model.state_dict().values(),
        strict=False,
    ):
        assert torch.equal(a, b), name


@pytest.mark.slow  # end-to-end: make unit leaves it out
def test_kill_9_leaves_a_loadable_checkpoint_and_earlier_files(previous_run: Path, data_dir: Path) -> None:
    before = snapshot(previous_run)
    process = start_and_wait_for_epoch(previous_run, 1, "--preset", "fast", "--smoke", "--epochs", "6", "--overwrite")
    time.sleep(0.3)  # somewhere in epoch 2
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    checkpoint = load_checkpoint(previous_run / "last.pt")
    assert checkpoint.payload["training_state"]["epoch"] >= 1
    after = snapshot(previous_run)
    # --overwrite asked to replace the earlier run: its results are out of view, so the folder never shows them as
    # this run's, but kept aside (hidden) until a run that finishes writing replaces them
    assert "model.pt" not in after and "metrics.json" not in after
    assert {name: after[f"{ASIDE_PREFIX}{name}"] for name in before} == before
    # at most a temporary file from a write in progress, and the dead run's lock (stale, taken over by the next run)
    assert all(name.startswith(ASIDE_PREFIX) or name in ("last.pt", ".train.lock") or name.endswith(".tmp") for name in after)


@pytest.mark.slow  # end-to-end: make unit leaves it out
def test_divergence_keeps_the_last_good_checkpoint(previous_run: Path, data_dir: Path) -> None:
    before = snapshot(previous_run)
    result = run("--preset", "seed", "--smoke", "--batch-size", "250", "--lr", "1e6", "--quiet", "--out", str(previous_run), "--overwrite")
    message = assert_one_line_error(result.stderr, result.returncode, "training diverged in epoch 1")
    assert "learning rate is probably too high" in message
    assert f"the last good checkpoint is {previous_run / 'last.pt'} (after epoch 0)" in message
    # the new run wrote its checkpoint, so the earlier run's results it was asked to replace are gone
    assert sorted(snapshot(previous_run)) == ["last.pt"] and before
    weights = load_checkpoint(previous_run / "last.pt").model.state_dict().values()
    assert all(torch.isfinite(w).all() for w in weights)


def test_truncated_data_file_overwrites_nothing(data_copy: Path, previous_run: Path) -> None:
    path = data_copy / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:30_000])
    before = snapshot(previous_run)
    result = run("--smoke", "--quiet", "--data-dir", str(data_copy), "--out", str(previous_run), "--overwrite")
    assert_one_line_error(result.stderr, result.returncode, "train-labels-idx1-ubyte is truncated")
    assert snapshot(previous_run) == before


def test_corrupt_checkpoint_to_resume(previous_run: Path) -> None:
    data = (previous_run / "model.pt").read_bytes()
    (previous_run / "last.pt").write_bytes(data[: len(data) // 3])
    before = snapshot(previous_run)
    result = run("--resume", str(previous_run / "last.pt"))
    assert_one_line_error(result.stderr, result.returncode, "is not a readable PyTorch checkpoint")
    assert snapshot(previous_run) == before


def test_unwritable_output_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    result = run("--smoke", "--quiet", "--out", str(blocker / "out"))
    assert_one_line_error(result.stderr, result.returncode, f"cannot write to output directory {blocker / 'out'}")
    assert blocker.read_text() == "not a directory\n"


# The same checks in-process (one interpreter start is seconds): run_cli is what `python -m` runs.
def run_in_process(capsys: pytest.CaptureFixture, *args: str) -> str:
    status = run_cli(train.main, list(args))
    return assert_one_line_error(capsys.readouterr().err, status, "")


def test_wrong_magic_overwrites_nothing(data_copy: Path, previous_run: Path, capsys: pytest.CaptureFixture) -> None:
    path = data_copy / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[0:4] = (2049).to_bytes(4, "big")
    path.write_bytes(bytes(raw))
    before = snapshot(previous_run)
    message = run_in_process(capsys, "--smoke", "--quiet", "--data-dir", str(data_copy), "--out", str(previous_run), "--overwrite")
    assert "t10k-images-idx3-ubyte is corrupt or not an IDX image file (magic number 2049" in message
    assert snapshot(previous_run) == before


def test_image_label_count_mismatch(data_copy: Path, previous_run: Path, capsys: pytest.CaptureFixture) -> None:
    path = data_copy / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[4:8] = (59_999).to_bytes(4, "big")
    path.write_bytes(bytes(raw[:-1]))  # a consistent file with one label fewer than there are images
    before = snapshot(previous_run)
    message = run_in_process(capsys, "--smoke", "--quiet", "--data-dir", str(data_copy), "--out", str(previous_run), "--overwrite")
    assert "train-labels-idx1-ubyte says it holds 59999 items, expected 60000" in message
    assert snapshot(previous_run) == before


def test_missing_data_offline(tmp_path: Path, previous_run: Path, offline: None, capsys: pytest.CaptureFixture) -> None:
    before = snapshot(previous_run)
    message = run_in_process(capsys, "--smoke", "--quiet", "--data-dir", str(tmp_path / "none"), "--out", str(previous_run), "--overwrite")
    assert "MNIST files not found" in message and "downloading them failed" in message
    assert snapshot(previous_run) == before and not (tmp_path / "none").exists()


def test_resume_from_things_that_are_not_resumable(tmp_path: Path, previous_run: Path, capsys: pytest.CaptureFixture) -> None:
    notes = tmp_path / "notes.pt"
    notes.write_text("not a checkpoint\n")
    other = tmp_path / "other.pt"
    payload = build_payload(SmallCNN(), arch="small_cnn", model_options={}, input_scaling="standard")
    payload["model_options"] = {"channels1": 8}
    save_checkpoint(other, payload)
    before = snapshot(previous_run)
    cases = [
        ([str(notes)], "is not a readable PyTorch checkpoint"),
        ([str(other)], "does not fit architecture small_cnn(channels1=8): shapes differ"),
        ([str(previous_run / "model.pt")], "holds a model but no training state"),
        ([str(notes), "--smoke"], "--smoke cannot be combined with --resume"),
    ]
    for args, fragment in cases:
        message = run_in_process(capsys, "--resume", *args, "--out", str(previous_run))
        assert fragment in message
    assert snapshot(previous_run) == before


def test_resume_refuses_a_different_preset(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert run_cli(train.main, ["--preset", "fast", "--smoke", "--quiet", "--out", str(out)]) == 0
    before = snapshot(out)
    message = run_in_process(capsys, "--resume", str(out / "model.pt"), "--preset", "default", "--epochs", "2")
    assert "--preset default contradicts" in message and "trained with preset 'fast'" in message
    assert snapshot(out) == before
