"""Property-based tests: any value in any field of a resumable checkpoint, and any message from the drawing pad,
ends in an answer or in one of the project's one-line errors, never in another exception."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_checkpoints import resumable_payload

from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.digits.drawpad import DrawingPad
from mnist_cnn.errors import MnistCnnError
from mnist_cnn.results import save_checkpoint
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
