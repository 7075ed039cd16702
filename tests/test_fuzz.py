"""Property-based tests: any value in any field of a resumable checkpoint or of a recipe given to fit, and any message from the drawing pad,
ends in an answer or in one of the project's one-line errors, never in another exception."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_hostile_checkpoints import resumable_payload

from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.config import TrainConfig
from mnist_cnn.digits.drawpad import DrawingPad
from mnist_cnn.engine import Callback, Run
from mnist_cnn.errors import MnistCnnError, TrainingInterrupted
from mnist_cnn.presets import get_preset
from mnist_cnn.results import save_checkpoint
from mnist_cnn.runs import RunOptions, fit
from mnist_cnn.tooling.runctl.resume import resume_config
from mnist_cnn.tooling.safety.safe_load import read_checkpoint_file

#: Values a checkpoint's record can hold where a field belongs: numbers at their edges, text, nesting, tensors, int keys.
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False)
    | st.text(max_size=20)
    | st.builds(torch.zeros, st.integers(min_value=0, max_value=6)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(0, 3), inner, max_size=4),
    max_leaves=12,
)


def field_paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside the payload's record (not the weights), e.g. ``("training_state", "epoch")``."""
    paths = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            paths += field_paths(item, (*prefix, key))
    elif isinstance(value, list) and len(value) <= 8:
        for index, item in enumerate(value):
            paths += field_paths(item, (*prefix, index))
    return paths


BASE = resumable_payload()
PATHS = [p for name in ("config", "history", "metrics", "training_state") for p in field_paths(BASE[name], (name,))]


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(PATHS), value=VALUES)
def test_any_value_in_any_field_is_resumed_or_refused_in_one_line(tmp_path: Path, where: tuple, value: Any) -> None:
    payload = copy.deepcopy(BASE)
    target = payload
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    path = tmp_path / "last.pt"
    save_checkpoint(path, payload)
    try:
        checkpoint = load_checkpoint(path, reader=read_checkpoint_file)  # as train --resume reads it
        before = torch.get_rng_state()
        try:
            resume_config(checkpoint)
        finally:
            assert torch.equal(torch.get_rng_state(), before), "checking a state leaves the random generators as they were"
    except MnistCnnError as error:
        assert "\n" not in str(error) and "\x1b" not in str(error), str(error)


MESSAGES = st.one_of(
    VALUES,
    st.fixed_dictionaries({"seq": VALUES, "png": VALUES}),
    st.fixed_dictionaries({"seq": st.integers(0, 10), "png": st.text(max_size=40).map(lambda s: "data:image/png;base64," + s)}),
)


@pytest.fixture(scope="module")
def pad(seed_weights: Path) -> DrawingPad:
    checkpoint = load_checkpoint(seed_weights, reader=read_checkpoint_file)  # a torch pickle: read as the commands read it
    return DrawingPad(checkpoint.model, checkpoint.input_scaling)


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=MESSAGES)
def test_any_pad_message_is_answered_in_the_pad(pad: DrawingPad, message: Any) -> None:
    pad.error, pad.result = "", {}
    pad.drawing = message  # the trait observer runs here, as when the front end sends it
    pad.drawing = None
    answered = pad.error or pad.result
    assert answered or message is None or message == {}, f"no answer to {message!r}"
    assert "could not be classified" not in pad.error, pad.error  # that line is kept for bugs


#: A recipe small enough to train for a moment: 64 training images, a two-channel VGG.
TINY = {"train_size": 64, "val_size": 32, "test_size": 32, "epochs": 1, "batch_size": 32, "eval_batch_size": 64}
#: Values that mean something to some field, so the draws reach training and not only the checks.
MEANINGFUL = st.sampled_from(
    [0, 1, 2, 3, 0.5, 1e-3, 0.999, 1000, 10**6, -1, "", "sgd", "adam", "adamw", "onecycle", "constant", "memory", "torchvision"]
    + ["unit", "standard", "vgg", "small_cnn", (0.9, 0.99), [0.5, 0.5], {"hidden_units": 2}, {"max_shift": 2}, {"max_scale": 0.5}]
)


class StopAfterFiveSteps(Callback):
    """Cuts a drawn run short (epochs or sizes can be large) with the project's own interruption."""

    def after_step(self, run: Run) -> None:
        if run.state.step >= 5:
            raise TrainingInterrupted("stopped by the test", epoch=run.state.epoch)


def near(value: Any) -> st.SearchStrategy:
    """Values close to a field's own: the other switch position, a number halved, doubled or zeroed."""
    if isinstance(value, bool):
        return st.just(not value)
    if isinstance(value, (int, float)):
        return st.sampled_from([value * 2, value / 2, type(value)(0), value + 1])
    return MEANINGFUL


def field_and_value(name: str) -> st.SearchStrategy:
    own = getattr(get_preset("fast", **TINY), name)
    return st.tuples(st.just(name), near(own) | MEANINGFUL | VALUES)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(drawn=st.sampled_from([f.name for f in dataclasses.fields(TrainConfig)]).flatmap(field_and_value))
def test_any_value_in_any_recipe_field_trains_or_is_refused_in_one_line(data_dir: Path, drawn: tuple[str, Any]) -> None:
    """Through fit itself, as the Python API is used: the checks must catch what training would fail on later."""
    config = get_preset("fast", **TINY)
    object.__setattr__(config, *drawn)  # as a user's assignment does: unchecked until fit checks it
    try:
        result = fit(config, RunOptions(data_dir=str(data_dir), device="cpu", quiet=True), [StopAfterFiveSteps()])
    except MnistCnnError as error:
        event(type(error).__name__)  # --hypothesis-show-statistics: how many draws were refused, and how
        assert "\n" not in str(error) and "\x1b" not in str(error), str(error)
    else:
        event("trained")
        assert all(math.isfinite(result.metrics[key]) for key in ("val_loss", "test_loss")), result.metrics
