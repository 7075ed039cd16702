"""Say when the answer is garbage: broken weights are refused at load, and metrics.json is always strict JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.errors import CheckpointError
from mnist_cnn.files import strict_json_value, write_json
from mnist_cnn.model import VGG
from mnist_cnn.presets import get_preset
from mnist_cnn.results import TrainResult, build_payload, save_checkpoint, save_run
from mnist_cnn.tooling.cli import evaluate
from mnist_cnn.tooling.cli.args import run_cli
from mnist_cnn.tooling.safety.safe_load import read_checkpoint_file


def refuse_constants(name: str) -> float:
    raise ValueError(f"not strict JSON: {name}")


def strict_load(path: Path) -> object:
    """Parse as a strict parser would: NaN, Infinity and -Infinity are errors."""
    return json.loads(path.read_text(), parse_constant=refuse_constants)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_weights_are_refused_at_load(tmp_path: Path, capsys: pytest.CaptureFixture, value: float) -> None:
    model = VGG(hidden_units=2)
    with torch.no_grad():
        model.fully_connected_linear[1].weight[3, 5] = value
    path = tmp_path / "broken.pt"
    save_checkpoint(path, build_payload(model, arch="vgg", model_options={"hidden_units": 2}, input_scaling="unit"))
    with pytest.raises(CheckpointError, match="holds NaN or infinite values in fully_connected_linear.1.weight"):
        load_checkpoint(path)
    status = run_cli(evaluate.main, ["--checkpoint", str(path), "--out", str(tmp_path / "report")])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and "the model is broken and was not loaded" in lines[0]
    assert not (tmp_path / "report" / "metrics.json").exists()


def test_non_finite_seed_format_weights_are_refused(tmp_path: Path) -> None:
    state_dict = VGG(hidden_units=2).state_dict()
    state_dict["conv_block_2.4.bias"][0] = math.nan
    torch.save(state_dict, tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="NaN or infinite values in conv_block_2.4.bias"):
        load_checkpoint(tmp_path / "bare.pth", reader=read_checkpoint_file)  # a torch pickle: read as the commands read it


def test_write_json_is_strict(tmp_path: Path) -> None:
    payload = {"test_loss": math.nan, "history": {"val_loss": [1.5, math.inf, -math.inf]}, "pair": (math.nan, 2), "ok": 0.25}
    write_json(tmp_path / "metrics.json", payload)
    assert strict_load(tmp_path / "metrics.json") == {
        "test_loss": None,
        "history": {"val_loss": [1.5, None, None]},
        "pair": [None, 2],
        "ok": 0.25,
    }
    assert strict_json_value(payload)["ok"] == 0.25 and payload["test_loss"] != payload["test_loss"], "the input is not changed"


def test_a_run_with_a_nan_loss_writes_strict_metrics(tmp_path: Path) -> None:
    config = get_preset("seed", epochs=1, model_options={"hidden_units": 2})
    model = VGG(hidden_units=2)
    history = {
        "epoch": [0, 1],
        "train_loss": [2.3, math.nan],
        "train_acc": [0.1, 0.1],
        "test_loss": [2.3, math.nan],
        "test_acc": [0.1, 0.1],
        "seconds": [0.0, 1.0],
    }
    metrics = {"test_accuracy": 0.098, "test_loss": math.nan, "train_seconds": 1.0}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = {"epoch": 1, "step": 1, "history": history, "step_history": {}, "optimizer": optimizer.state_dict(), "scheduler": None}
    result = TrainResult(model, config, metrics, state)
    _, metrics_path = save_run(result, tmp_path)
    written = strict_load(metrics_path)
    assert written["test_loss"] is None and written["history"]["test_loss"] == [2.3, None]
