"""Resumable training in-process: what a checkpoint records, interrupted == uninterrupted, determinism, sharding."""

from __future__ import annotations

import dataclasses
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from mnist_cnn import files, reproducibility
from mnist_cnn.checkpoint import load_checkpoint, read_payload
from mnist_cnn.config import TrainConfig
from mnist_cnn.engine import TrainingState
from mnist_cnn.errors import CheckpointError, ConfigError, TrainingDiverged, TrainingInterrupted
from mnist_cnn.model import VGG
from mnist_cnn.results import TrainResult, build_payload, save_checkpoint, save_run
from mnist_cnn.runs import RunOptions
from mnist_cnn.tooling.runctl.controls import Controls, fit_controlled
from mnist_cnn.tooling.runctl.resume import resume_config, set_rng_state, training_state_from
from mnist_cnn.tooling.runctl.signals import StopOnRequest

TIMING_KEYS = ("train_seconds", "load_seconds", "total_seconds")


def small_config(**changes) -> TrainConfig:
    """A run of a few seconds that still exercises momentum, a one-cycle schedule, batch norm and augmentation."""
    values = dict(
        model_options={"hidden_units": 4, "batch_norm": True},
        input_scaling="standard",
        epochs=3,
        batch_size=64,
        lr=0.05,
        momentum=0.9,
        nesterov=True,
        schedule="onecycle",
        label_smoothing=0.1,
        seed=7,
        augment={"max_shift": 1.0, "max_rotation": 5.0, "max_scale": 0.05},
        train_size=512,
        val_size=256,
        test_size=256,
    )
    values.update(changes)
    return TrainConfig(**values)


def comparable(result: TrainResult) -> tuple[dict, dict, dict]:
    """History, per-step history and metrics without the wall-clock timings, which no two runs share."""
    history = {k: v for k, v in result.history.items() if k != "seconds"}
    metrics = {k: v for k, v in result.metrics.items() if k not in TIMING_KEYS}
    return history, metrics, result.step_history


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=False):
        assert torch.equal(x, y), name


def quiet_fit(config: TrainConfig, should_stop: Callable[[], bool] | None = None, **options: Any) -> TrainResult:
    callbacks = [StopOnRequest(should_stop)] if should_stop is not None else []
    controls = Controls(checkpoint=options.pop("checkpoint_path", None), resume=options.pop("resume", None))
    return fit_controlled(config, RunOptions(device="cpu", quiet=True, **options), controls, callbacks)


@pytest.fixture(scope="module")
def uninterrupted(data_dir: Path) -> TrainResult:
    return quiet_fit(small_config())


def test_two_seeded_runs_are_bit_identical(uninterrupted: TrainResult) -> None:
    again = quiet_fit(small_config())
    assert comparable(again) == comparable(uninterrupted)
    assert_same_weights(again.model, uninterrupted.model)
    assert uninterrupted.metrics["deterministic"] is True, "deterministic mode is the default on the CPU"
    assert not torch.are_deterministic_algorithms_enabled(), "fit() restores the global setting"


def test_interrupted_then_resumed_equals_uninterrupted(uninterrupted: TrainResult, tmp_path: Path) -> None:
    last = tmp_path / "last.pt"
    batches = {"seen": 0}

    def stop_in_epoch_two() -> bool:  # 8 batches per epoch: stop after the 3rd batch of epoch 2
        batches["seen"] += 1
        return batches["seen"] > 8 + 3

    with pytest.raises(TrainingInterrupted) as caught:
        quiet_fit(small_config(), checkpoint_path=last, should_stop=stop_in_epoch_two)
    assert caught.value.epoch == 2
    assert caught.value.checkpoint_path == last and caught.value.checkpoint_epoch == 1

    checkpoint = load_checkpoint(last)
    assert checkpoint.history["epoch"] == [0, 1]
    resumed = quiet_fit(resume_config(checkpoint), resume=checkpoint, checkpoint_path=last)
    assert comparable(resumed) == comparable(uninterrupted)
    assert_same_weights(resumed.model, uninterrupted.model)
    assert load_checkpoint(last).payload["training_state"]["epoch"] == 3


def test_checkpoint_records_everything_needed_to_resume(tmp_path: Path) -> None:
    result = quiet_fit(small_config(epochs=1), checkpoint_path=tmp_path / "last.pt")
    save_run(result, tmp_path)
    for name in ("last.pt", "model.pt"):
        payload = read_payload(tmp_path / name)  # safetensors and its JSON record: plain containers and tensors only
        assert payload["model_options"] == {"hidden_units": 4, "batch_norm": True}
        assert payload["input_scaling"] == "standard" and payload["config"]["seed"] == 7
        assert payload["history"]["epoch"] == [0, 1] and "val_accuracy" in payload["metrics"]
        assert ("test_accuracy" in payload["metrics"]) == (name == "model.pt"), "the test set is measured once, at the end"
        assert payload["metrics"]["validation"]["size"] == 5_000 and payload["metrics"]["validation"]["held_out"]
        assert payload["step_history"]["step"] == [8] and payload["step_history"]["epoch"] == [1]
        assert set(payload["versions"]) >= {"torch", "mnist_cnn", "python"}
        state = payload["training_state"]
        assert state["epoch"] == 1 and state["step"] == 8 and state["deterministic"] is True and state["world_size"] == 1
        assert state["optimizer"]["state"] and state["scheduler"]["total_steps"] == 8
        rng = state["rng"]
        assert isinstance(rng["torch"], torch.Tensor) and isinstance(rng["generator"], torch.Tensor)
        assert isinstance(rng["python"], list) and isinstance(rng["python"][1], list) and rng["cuda"] is None


def test_extending_a_constant_schedule_matches_a_longer_run(tmp_path: Path, data_dir: Path) -> None:
    constant = {"schedule": "constant", "augment": None, "train_size": 256}
    save_run(quiet_fit(small_config(epochs=1, **constant)), tmp_path)
    checkpoint = load_checkpoint(tmp_path / "model.pt")
    extended = quiet_fit(resume_config(checkpoint, epochs=2), resume=checkpoint)
    direct = quiet_fit(small_config(epochs=2, **constant))
    assert comparable(extended)[0] == comparable(direct)[0]
    assert_same_weights(extended.model, direct.model)


def test_resume_refuses_contradictions(tmp_path: Path, data_dir: Path) -> None:
    save_run(quiet_fit(small_config(epochs=1, train_size=256, val_size=64, test_size=64)), tmp_path)
    checkpoint = load_checkpoint(tmp_path / "model.pt")
    with pytest.raises(ConfigError, match="--preset best contradicts .* trained with preset 'custom'"):
        resume_config(checkpoint, preset="best")
    with pytest.raises(ConfigError, match="--lr 0.5 contradicts"):
        resume_config(checkpoint, lr=0.5, epochs=2)
    with pytest.raises(ConfigError, match="already trained all its 1 epoch"):
        resume_config(checkpoint, seed=7)  # the same value as recorded is fine
    with pytest.raises(ConfigError, match="one-cycle learning-rate schedule was planned for 1 epoch"):
        resume_config(checkpoint, epochs=4)
    old = read_payload(tmp_path / "model.pt")
    old["history"] = {k.replace("val_", "test_"): v for k, v in old["history"].items()}
    save_checkpoint(tmp_path / "old.pt", old)
    with pytest.raises(CheckpointError, match="trained before the validation split"):
        resume_config(load_checkpoint(tmp_path / "old.pt"), epochs=2)
    plain = tmp_path / "plain.pt"
    save_checkpoint(plain, build_payload(VGG(hidden_units=4), arch="vgg", model_options={"hidden_units": 4}, input_scaling="unit"))
    with pytest.raises(CheckpointError, match="no training state"):
        resume_config(load_checkpoint(plain))


def test_divergence_keeps_the_last_good_checkpoint(tmp_path: Path, data_dir: Path) -> None:
    last = tmp_path / "last.pt"
    with pytest.raises(TrainingDiverged) as caught:
        # without batch norm nothing rescales the exploding weights
        config = small_config(lr=1e6, schedule="constant", augment=None, model_options={"hidden_units": 4}, train_size=256)
        quiet_fit(config, checkpoint_path=last)
    assert caught.value.epoch == 1 and caught.value.checkpoint_epoch == 0
    weights = load_checkpoint(last).model.state_dict().values()
    assert all(torch.isfinite(w).all() for w in weights if w.is_floating_point())


def test_checkpoint_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, build_payload(VGG(hidden_units=4), arch="vgg", model_options={"hidden_units": 4}, input_scaling="unit"))
    before = path.read_bytes()

    def crash(fd: int) -> None:  # the process dies between writing the bytes and renaming the file
        raise OSError("disk pulled out")

    monkeypatch.setattr(files.os, "fsync", crash)
    with pytest.raises(OSError, match="disk pulled out"):
        save_checkpoint(path, build_payload(VGG(hidden_units=8), arch="vgg", model_options={"hidden_units": 8}, input_scaling="unit"))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert load_checkpoint(path).model_options == {"hidden_units": 4}


def test_rng_state_round_trips() -> None:
    generator = torch.Generator().manual_seed(3)
    state = reproducibility.rng_state(generator)
    expected = (random.random(), torch.rand(3), torch.rand(2, generator=generator))
    set_rng_state(state, generator)
    assert random.random() == expected[0]
    assert torch.equal(torch.rand(3), expected[1]) and torch.equal(torch.rand(2, generator=generator), expected[2])


def test_training_state_round_trips() -> None:
    state = TrainingState(epoch=2, step=20)
    state.history["epoch"] += [0, 1, 2]
    state.step_history["step"].append(10)
    assert training_state_from(dataclasses.asdict(state)) == state
    old_format = {"epoch": 1, "optimizer": {}, "scheduler": None, "rng": {}, "history": {"epoch": [0, 1]}}
    restored = training_state_from(old_format)
    assert restored.history == {"epoch": [0, 1]} and restored.step == 0 and restored.step_history["step"] == []


def test_deterministic_mode_restores_previous_settings() -> None:
    assert not torch.are_deterministic_algorithms_enabled()
    with reproducibility.deterministic_mode(True):
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_mode_does_not_load_inductor_and_sets_it_once_loaded() -> None:
    """Setting deterministic kernels costs a command no Inductor import, and keeps Inductor's flag in step with
    torch's where something has loaded it."""
    script = """
import sys, torch
from mnist_cnn.reproducibility import deterministic_mode
with deterministic_mode(True):
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
assert not torch.are_deterministic_algorithms_enabled()
assert "torch._inductor.config" not in sys.modules, "Inductor was loaded"
import torch._inductor.config as inductor
with deterministic_mode(True):
    assert torch.are_deterministic_algorithms_enabled() and inductor.deterministic
assert not torch.are_deterministic_algorithms_enabled() and not inductor.deterministic
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
