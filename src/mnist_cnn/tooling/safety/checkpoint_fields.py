"""Checking a checkpoint's fields hold what this version writes, before anything uses them: the model's, then the record's.

The model's fields (format version, architecture, options, input scaling, a dict of tensors) are checked here by
type; :mod:`mnist_cnn.tooling.safety.weights` then checks the weights against the model they name. The record's
(config, curves, metrics) are those passed on to ``metrics.json``, plots and tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mnist_cnn import CHECKPOINT_FORMAT
from mnist_cnn.checkpoint import model_fields
from mnist_cnn.checks import shown
from mnist_cnn.errors import CheckpointError
from mnist_cnn.mnist import INPUT_SCALINGS
from mnist_cnn.text import display_name, escape_text

#: The record's fields that hold only what JSON can hold, each a dict.
PLAIN_FIELDS = ("config", "history", "metrics", "step_history")
#: Largest epoch count a training state may claim.
MAX_EPOCHS = 100_000


def _short(value: Any) -> str:
    """A value for an error message: a tensor's shape and dtype, or a repr cut to a readable length, with its type."""
    if isinstance(value, torch.Tensor):
        return f"tensor {list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    return f"{shown(value)} ({type(value).__name__})"


def _invalid(source: Path, field_name: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{display_name(source)} has an invalid {escape_text(field_name)}: {problem}")


def _quoted(name: str) -> str:
    """A name from a file, quoted as ``repr`` does, cut to a readable length and escaped."""
    return escape_text(repr(name if len(name) <= 40 else name[:37] + "..."))


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_model_fields(payload: dict[str, Any], source: Path) -> None:
    """Check the type of each field that names the model: this project's checkpoint, or a flat dict of tensors.

    Raises:
        CheckpointError: A field is missing, of the wrong type, or from a newer format version; the message names it.
    """
    if payload.get("format") != CHECKPOINT_FORMAT:
        if not payload or not all(isinstance(v, torch.Tensor) for v in payload.values()):
            raise CheckpointError(f"{display_name(source)} is not an mnist-cnn checkpoint nor a model state_dict")
        if not all(isinstance(key, str) for key in payload):
            raise CheckpointError(
                f"{display_name(source)} is not a model state_dict: some of its weights are named by something other than text"
            )
        return
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _invalid(source, "format_version", f"expected a whole number, got {_short(version)}")
    arch, options, scaling, state_dict = model_fields(payload, source)  # a missing field or a newer version: one line
    if not isinstance(arch, str):
        raise _invalid(source, "arch", f"expected a name such as 'vgg', got {_short(arch)}")
    if not isinstance(options, dict) or not all(isinstance(key, str) for key in options):
        raise _invalid(source, "model_options", f"expected a dict of named options, got {_short(options)}")
    if not isinstance(scaling, str) or scaling not in INPUT_SCALINGS:
        raise _invalid(source, "input_scaling", f"expected one of {', '.join(INPUT_SCALINGS)}, got {_short(scaling)}")
    if not isinstance(state_dict, dict) or not state_dict:
        raise _invalid(source, "state_dict", f"expected a dict of weight tensors, got {_short(state_dict)}")
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise _invalid(source, "state_dict", f"entry {_short(key)} holds {_short(value)}, not a tensor")


def validate_record(payload: dict[str, Any], source: Path) -> None:
    """Check the record fields of an mnist-cnn checkpoint's payload (a bare ``state_dict`` has none).

    Args:
        payload: What a reader returned.
        source: The file, for messages.

    Raises:
        CheckpointError: ``config``, ``history``, ``metrics`` or ``step_history`` is not a dict of what JSON holds,
            or the per-epoch curves disagree in length; the message names the field.
    """
    if payload.get("format") != CHECKPOINT_FORMAT:
        return
    for key in PLAIN_FIELDS:
        value = payload.get(key)
        if value is not None and not isinstance(value, dict):
            raise _invalid(source, key, f"expected a dict, got {_short(value)}")
        if value is not None and not _is_plain(value):
            # these are written to metrics.json and plotted: only what JSON can hold
            raise _invalid(source, key, "it holds values other than text, numbers, lists and dicts (or whole numbers past 64 bits)")
    _check_history_lists(payload.get("history") or {}, source)


def _is_plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is made only of what JSON can hold (and is not absurdly nested)."""
    if depth > 20:
        return False
    if isinstance(value, int) and not isinstance(value, bool):
        return -(1 << 63) <= value < (1 << 63)  # JSON readers and plots take 64-bit integers; a 600-digit one breaks them
    if value is None or isinstance(value, (str, float, bool)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item, depth + 1) for key, item in value.items())
    return False


def _check_history_lists(history: dict[str, Any], source: Path) -> None:
    """Per-epoch lists of numbers, all as long as ``history['epoch']`` (lists of dicts, such as step records, aside)."""
    epochs = history.get("epoch")
    for key, values in history.items():
        if not isinstance(values, list) or not all(isinstance(v, dict) or _is_real(v) for v in values):
            raise _invalid(source, f"history[{_quoted(key)}]", f"expected a list of numbers, got {_short(values)}")
        if isinstance(epochs, list) and values and not isinstance(values[0], dict) and len(values) != len(epochs):
            raise _invalid(source, f"history[{_quoted(key)}]", f"it has {len(values)} entries for {len(epochs)} epoch(s)")
