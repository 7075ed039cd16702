"""A run as fit() wires it: which images train, validate and test; what a finished run records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnist_cnn import data, engine
from mnist_cnn.checkpoint import load_checkpoint, read_payload
from mnist_cnn.errors import TrainingDiverged
from mnist_cnn.model import VGG
from mnist_cnn.presets import get_preset
from mnist_cnn.results import TrainResult, keep_previous_run, result_from, save_run
from mnist_cnn.run_data import load_data
from mnist_cnn.runs import RunOptions, fit
from mnist_cnn.tooling.runctl.controls import SaveCheckpoint


def test_in_memory_presets_train_on_55000_and_validate_on_the_held_out_5000(data_dir: Path) -> None:
    run = load_data(get_preset("default"), str(data_dir), torch.Generator().manual_seed(0))
    assert run.train.num_examples == 55_000 and run.val.num_examples == 5_000 and run.test.num_examples == 10_000
    held_out = data.validation_indices(data.load_split("train", data_dir).labels)
    assert torch.equal(run.val.labels, data.load_split("train", data_dir).labels[held_out])
    assert run.validation["held_out"] and run.validation["size"] == 5_000


def test_seed_preset_keeps_its_pipeline_over_all_60000(data_dir: Path) -> None:
    run = load_data(get_preset("seed"), str(data_dir), torch.Generator().manual_seed(0))
    assert isinstance(run.train, torch.utils.data.DataLoader) and len(run.train.dataset) == 60_000
    assert run.val.num_examples == 5_000 and not run.validation["held_out"], "its validation images are in its training data"


def test_a_finished_run_records_validation_curves_and_one_test_measurement(tmp_path: Path, data_dir: Path) -> None:
    config = get_preset("fast", epochs=2, train_size=1_024, val_size=500, test_size=300, seed=1)
    result = fit(config, RunOptions(data_dir=str(data_dir), device="cpu", quiet=True))
    assert set(result.history) == set(engine.HISTORY_KEYS) and result.history["epoch"] == [0, 1, 2]
    assert result.metrics["val_accuracy"] == result.history["val_acc"][-1]
    assert 0 <= result.metrics["test_accuracy"] <= 1 and "test_acc" not in result.history
    assert result.step_history["step"] == [4, 8] and result.step_history["epoch"] == [1, 2], "4 batches of 256 per epoch"
    save_run(result, tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["validation"]["indices_sha256"] == result.metrics["validation"]["indices_sha256"]
    assert written["step_history"] == result.step_history and written["config"]["val_size"] == 500


def trained_outside_fit() -> TrainResult:
    """A one-epoch run of a tiny VGG as a notebook builds it: its own loop, no test measurement."""
    model = VGG(hidden_units=4)
    parts = engine.TrainParts(torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1))
    state = engine.TrainingState(epoch=1, step=3)
    for key, value in zip(engine.HISTORY_KEYS, (1, 0.5, 0.8, 0.4, 0.85, 2.0), strict=True):
        state.history[key].append(value)
    return result_from(engine.Run(model, parts, epochs=1, state=state, config=get_preset("default")))


def test_a_model_trained_outside_fit_is_saved_without_a_test_measurement(tmp_path: Path) -> None:
    result = trained_outside_fit()
    assert result.metrics["val_accuracy"] == 0.85 and "test_accuracy" not in result.metrics
    model_path, _ = save_run(result, tmp_path)
    assert read_payload(model_path)["training_state"]["step"] == 3


def test_a_notebook_keeps_the_run_it_would_save_over(tmp_path: Path) -> None:
    """Before, notebook 3 replaced models/<preset>/ silently, a run trained from the command line included."""
    result = trained_outside_fit()
    assert keep_previous_run(tmp_path / "none") is None and keep_previous_run(tmp_path) is None
    save_run(result, tmp_path)
    (tmp_path / "last.pt").write_bytes(b"an interrupted run's checkpoint")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    kept = keep_previous_run(tmp_path)
    assert kept is not None and kept.parent == tmp_path and kept.name.startswith("previous-")
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == before and [p.name for p in tmp_path.iterdir()] == [kept.name]


def test_fit_reports_the_last_good_checkpoint_when_validation_diverges(data_dir: Path, tmp_path: Path) -> None:
    """The run breaks on the last step of epoch 2: the checkpoint fit names is epoch 1's, and it loads (finite weights)."""
    config = get_preset("fast", epochs=3, train_size=256, val_size=128, test_size=128)

    class BreakAfterEpochTwo(engine.Callback):
        def after_step(self, run: engine.Run) -> None:
            if run.state.step == 2 * run.steps_per_epoch:
                with torch.no_grad():
                    for parameter in run.model.parameters():
                        parameter.fill_(float("nan"))

    options = RunOptions(data_dir=str(data_dir), device="cpu", quiet=True)
    with pytest.raises(TrainingDiverged) as caught:
        fit(config, options, [BreakAfterEpochTwo(), SaveCheckpoint(tmp_path / "last.pt")])
    assert caught.value.epoch == 2 and caught.value.checkpoint_epoch == 1
    assert caught.value.checkpoint_path == tmp_path / "last.pt"
    assert load_checkpoint(tmp_path / "last.pt").payload["training_state"]["epoch"] == 1
