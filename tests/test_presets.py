"""Every preset builds and trains a few steps; overrides and bad values are handled."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from mnist_cnn.config import TrainConfig
from mnist_cnn.errors import ConfigError
from mnist_cnn.model import build_model
from mnist_cnn.presets import PRESETS, get_preset
from mnist_cnn.reproducibility import seed_everything
from mnist_cnn.runs import RunOptions, fit


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_trains_a_few_steps(name: str, data_dir: Path) -> None:
    overrides = {"epochs": 1, "train_size": 2_048, "val_size": 500, "test_size": 500}
    if PRESETS[name].pipeline == "torchvision":
        overrides["pipeline"] = "memory"  # the slicing options need the in-memory pipeline
    config = get_preset(name, **overrides)
    result = fit(config, RunOptions(data_dir=data_dir, device="cpu", quiet=True))
    assert result.history["epoch"] == [0, 1]
    assert result.metrics["preset"] == name and result.metrics["train_seconds"] > 0
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0 and 0.0 <= result.metrics["val_accuracy"] <= 1.0
    assert all(math.isfinite(v) for v in result.history["train_loss"])
    seed_everything(config.seed)
    initial = build_model(config.arch, **config.model_options).state_dict()
    trained = result.model.state_dict()
    changed = [k for k in initial if initial[k].is_floating_point() and not torch.equal(initial[k], trained[k].cpu())]
    assert len(changed) == len([k for k in initial if initial[k].is_floating_point()]), "every weight should move"


def test_seed_preset_is_the_original_recipe() -> None:
    seed = PRESETS["seed"]
    assert (seed.epochs, seed.batch_size, seed.optimizer, seed.lr, seed.momentum) == (5, 32, "sgd", 0.01, 0.0)
    assert (seed.schedule, seed.input_scaling, seed.pipeline, seed.label_smoothing) == ("constant", "unit", "torchvision", 0.0)
    assert seed.model_options == {"hidden_units": 16} and not seed.bf16 and seed.augment is None
    assert not seed.flush_denormal, "PyTorch's default, as the original ran"


def test_overrides_and_validation() -> None:
    config = get_preset("default", epochs=7, lr=None)
    assert config.epochs == 7 and config.lr == PRESETS["default"].lr
    assert PRESETS["default"].epochs != 7, "the preset itself is never modified"
    config.model_options["hidden_units"] = 99
    assert PRESETS["default"].model_options["hidden_units"] != 99
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("nope")
    with pytest.raises(ConfigError, match="epochs must be at least 1"):
        get_preset("default", epochs=0)
    with pytest.raises(ConfigError, match="unknown optimizer"):
        TrainConfig(optimizer="lion").validate()


def test_config_round_trips_through_a_dict() -> None:
    config = get_preset("fast", seed=5)
    assert TrainConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"betas": (0.9, 1.0)}, "betas[1] must be below 1, got 1.0"),
        ({"betas": [0.9]}, "betas must be two numbers"),
        ({"betas": 0.9}, "betas must be two numbers"),
        ({"augment": {"max_shift": math.inf}}, "augment.max_shift must be a finite number from 0 to 14, got inf"),
        ({"augment": {"max_rotation": -1.0}}, "augment.max_rotation must be a finite number at least 0"),
        ({"augment": {"shear": 1.0}}, "augment must be null or a dict of max_shift, max_rotation, max_scale"),
        ({"augment": [2.0]}, "augment must be null or a dict"),
        ({"flush_denormal": 1}, "flush_denormal must be true or false, got 1"),
        ({"nesterov": "yes"}, "nesterov must be true or false"),
        ({"cycle_momentum": None}, "cycle_momentum must be true or false"),
        ({"norm_lr_scale": 1e-9}, "norm_lr_scale must be a finite number at least 0.001"),
        ({"train_size": 1.5}, "train_size must be a whole number at least 1, got 1.5"),
        ({"val_size": True}, "val_size must be a whole number at least 1, got True"),
        ({"test_size": "10"}, "test_size must be a whole number at least 1"),
        ({"onecycle_pct_start": 2.0}, "onecycle_pct_start must be at most 1"),
        ({"model_options": [16]}, "model options must be a dict"),
        ({"preset": 3}, "preset must be text, got 3"),
    ],
)
def test_every_field_is_checked_by_type_and_range(change: dict, message: str) -> None:
    # from the Python API and from a recorded config alike: the same one line, naming the field
    config = get_preset("default")
    for key, value in change.items():
        setattr(config, key, value)
    with pytest.raises(ConfigError) as raised:
        config.validate()
    assert message in str(raised.value) and "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        TrainConfig.from_dict({**get_preset("default").to_dict(), **change}).validate()
