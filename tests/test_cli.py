"""The command-line tools, run as a user runs them: exit codes, one-line errors, files written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_cnn.tooling.cli import train
from mnist_cnn.tooling.cli.args import run_cli


def run(*args: str, env_extra: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, env=env)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--epochs", "0"], "--epochs: must be at least 1, got 0"),
        (["--batch-size", "-4"], "--batch-size: must be at least 1, got -4"),
        (["--lr", "abc"], "--lr: expected a number"),
        (["--preset", "turbo"], "invalid choice: 'turbo'"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_train_rejects_bad_arguments(args: list[str], fragment: str) -> None:
    assert_one_line_error(run("mnist_cnn.train", *args), fragment)


def test_evaluate_rejects_missing_checkpoint(tmp_path: Path) -> None:
    assert_one_line_error(run("mnist_cnn.evaluate", "--checkpoint", str(tmp_path / "none.pt")), "checkpoint not found")


def test_missing_data_directory_in_process(tmp_path: Path, offline: None, capsys: pytest.CaptureFixture) -> None:
    status = run_cli(train.main, ["--smoke", "--quiet", "--data-dir", str(tmp_path / "no-data"), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip()
    assert status == 1 and error.count("\n") == 0
    assert "MNIST_DATA_DIR" in error and "train-images-idx3-ubyte" in error


def test_corrupt_data_file_via_cli(data_copy: Path, tmp_path: Path) -> None:
    path = data_copy / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1_000])
    result = run("mnist_cnn.train", "--smoke", "--quiet", "--data-dir", str(data_copy), "--out", str(tmp_path / "out"))
    assert_one_line_error(result, "train-images-idx3-ubyte is truncated")
    assert not (tmp_path / "out" / "model.pt").exists()


@pytest.mark.slow  # end-to-end: make unit leaves it out
def test_smoke_train_then_evaluate(tmp_path: Path, data_dir: Path) -> None:
    out, reports = tmp_path / "model", tmp_path / "reports"
    result = run("mnist_cnn.train", "--preset", "default", "--smoke", "--quiet", "--seed", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "preset",
        "seed",
        "epochs",
        "val_accuracy",
        "val_loss",
        "test_accuracy",
        "test_loss",
        "train_seconds",
        "device",
        "precision",
        "config",
        "history",
        "step_history",
        "validation",
    ):
        assert key in metrics, key
    assert set(metrics["history"]) == {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}
    assert set(metrics["step_history"]) == {"step", "epoch", "train_loss", "lr"} and metrics["step_history"]["step"][-1] == 16
    assert metrics["preset"] == "default" and metrics["epochs"] == 1 and metrics["config"]["seed"] == 3
    assert metrics["history"]["epoch"] == [0, 1]

    result = run("mnist_cnn.evaluate", "--checkpoint", str(out / "model.pt"), "--out", str(reports))
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout
    report = json.loads((reports / "metrics.json").read_text())
    assert report["total"] == 10_000 and len(report["per_class"]) == 10
    for figure in ("confusion_matrix.png", "misclassified.png", "per_class_accuracy.png", "training_curves.png", "filters.png"):
        assert (reports / "figures" / figure).stat().st_size > 1_000


def test_evaluate_seed_weights_reports_published_accuracy(seed_weights: Path, tmp_path: Path) -> None:
    result = run("mnist_cnn.evaluate", "--checkpoint", str(seed_weights), "--out", str(tmp_path), "--no-figures")
    assert result.returncode == 0, result.stderr
    assert "test accuracy 0.9782 (9,782/10,000 correct)" in result.stdout
