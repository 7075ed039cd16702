"""The evaluation report is written whole or not at all, and never over a training run's own record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from mnist_cnn.data import load_split, memory_batches
from mnist_cnn.model import VGG
from mnist_cnn.results import build_payload, save_checkpoint
from mnist_cnn.tooling.cli import evaluate
from mnist_cnn.tooling.cli.args import run_cli
from mnist_cnn.tta import tta_accuracy

HISTORY = {"epoch": [0, 1], "train_loss": [2.3, 0.5], "train_acc": [0.1, 0.8], "val_loss": [2.3, 0.6], "val_acc": [0.1, 0.7]}
STEPS = {"step": [4, 8], "epoch": [1, 1], "train_loss": [1.0, 0.6], "lr": [0.01, 0.005]}


def one_line_error(capsys: pytest.CaptureFixture, status: int) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def tiny_checkpoint(path: Path, **recorded: Any) -> Path:
    """A one-channel VGG (evaluating it on the 10,000 test images takes a moment) recording ``recorded``."""
    fields = {"history": HISTORY, "step_history": STEPS, "config": {"label_smoothing": 0.1}, **recorded}
    save_checkpoint(path, build_payload(VGG(hidden_units=1), arch="vgg", model_options={"hidden_units": 1}, input_scaling="unit", **fields))
    return path


def run_evaluate(checkpoint: Path, out: Path, *extra: str) -> int:
    return run_cli(evaluate.main, ["--checkpoint", str(checkpoint), "--out", str(out), *extra])


@pytest.mark.parametrize(
    ("name", "recorded"),
    [
        ("step rows of unequal length", {"step_history": {**STEPS, "lr": [0.01]}}),
        ("step rows that are not numbers", {"step_history": {**STEPS, "step": ["a", "b"]}}),
        ("step rows missing", {"step_history": {"step": [4, 8]}}),
        ("label smoothing as text", {"config": {"label_smoothing": "a lot"}}),
        ("history without the held-out curves", {"history": {"epoch": [0, 1], "train_loss": [1.0, 0.5]}}),
    ],
)
def test_odd_recorded_curves_still_give_a_whole_report(tmp_path: Path, data_dir: Path, name: str, recorded: dict) -> None:
    """Before, evaluate wrote metrics.json and then died drawing the training curves."""
    out = tmp_path / "report"
    assert run_evaluate(tiny_checkpoint(tmp_path / "model.pt", **recorded), out) == 0
    written = snapshot(out)
    assert {"metrics.json", "per_class_metrics.csv", "figures/confusion_matrix.png", "figures/misclassified.png"} <= set(written)
    assert json.loads(written["metrics.json"])["total"] == 10_000
    assert not [p for p in out.rglob("*.tmp")]


def test_the_training_curves_are_drawn_when_recorded_whole(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "report"
    assert run_evaluate(tiny_checkpoint(tmp_path / "model.pt"), out) == 0
    assert (out / "figures" / "training_curves.png").stat().st_size > 1_000


def test_a_figure_that_fails_leaves_the_previous_report_whole(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Everything is rendered before anything is written: a failure while drawing writes nothing."""
    from mnist_cnn import errors, features

    out = tmp_path / "report"
    out.mkdir()
    (out / "metrics.json").write_text('{"test_accuracy": 0.99}\n')
    before = snapshot(out)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise errors.ImageError("the filters cannot be drawn")

    monkeypatch.setattr(features, "plot_filters", broken)
    message = one_line_error(capsys, run_evaluate(tiny_checkpoint(tmp_path / "model.pt"), out))
    assert "the filters cannot be drawn" in message
    assert snapshot(out) == before


@pytest.mark.parametrize("record", ["model.pt", "last.pt", "metrics.json"])
def test_a_training_run_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture, record: str) -> None:
    """Before, ``--out models/<run>`` silently replaced the run's metrics.json: its history and configuration were lost."""
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = tiny_checkpoint(run / ("model.pt" if record == "model.pt" else "elsewhere.pt"))
    if record == "last.pt":
        checkpoint.rename(run / "last.pt")
        checkpoint = run / "last.pt"
    if record == "metrics.json":
        (run / "metrics.json").write_text(json.dumps({"test_accuracy": 0.98, "config": {"epochs": 2}, "history": HISTORY}))
    before = snapshot(run)
    message = one_line_error(capsys, run_evaluate(checkpoint, run))
    assert f"{run} holds a training run" in message and "choose another --out" in message
    assert snapshot(run) == before


def test_a_previous_evaluation_report_is_replaced(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "report"
    checkpoint = tiny_checkpoint(tmp_path / "model.pt")
    assert run_evaluate(checkpoint, out, "--no-figures") == 0
    first = (out / "metrics.json").read_bytes()
    assert run_evaluate(checkpoint, out, "--no-figures") == 0
    assert json.loads((out / "metrics.json").read_bytes()) == json.loads(first)


def test_tta_is_measured_and_recorded_on_request(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from mnist_cnn.checkpoint import load_checkpoint
    from mnist_cnn.tta import tta_test_accuracy

    checkpoint = tiny_checkpoint(tmp_path / "model.pt")
    out = tmp_path / "report"
    assert run_evaluate(checkpoint, out, "--no-figures", "--tta") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    model, cpu = load_checkpoint(checkpoint).model, torch.device("cpu")
    assert metrics["test_accuracy_tta"] == tta_test_accuracy(model, "unit", None, cpu)
    # one view, the image itself, is the plain measurement: the views are what changes the number
    one_view = tta_accuracy(model, memory_batches(load_split("test"), 1000, "unit"), cpu, shifts=((0, 0),))
    assert one_view == pytest.approx(metrics["test_accuracy"])
    assert f"test-time augmentation (5 views): {metrics['test_accuracy_tta']:.4f}" in capsys.readouterr().out
    assert run_evaluate(checkpoint, out, "--no-figures") == 0
    assert "test_accuracy_tta" not in json.loads((out / "metrics.json").read_text())
