"""Checking a checkpoint's fields against what this version writes, before any model is built from them."""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_cnn.config import INPUT_SCALINGS
from mnist_cnn.errors import CheckpointError
from mnist_cnn.model_options import OptionError, check_options
from mnist_cnn.text import display_name, escape_text

#: The newest checkpoint format version this version reads and writes.
CHECKPOINT_VERSION = 1

#: Weights stored in these types are loaded (cast to float32 by ``load_state_dict``); float64 and complex are refused,
#: since a model meant to be float32 that carries them was not written by this project and casting would hide that.
ACCEPTED_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _key_name(key: str) -> str:
    """A weight's name from a file, cut to a readable length and escaped, so it prints as part of one line."""
    return escape_text(key if len(key) <= 60 else key[:57] + "...")


def describe_mismatch(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> str | None:
    """How a file's weights differ from what ``model`` expects.

    Args:
        model: The model the file names (on any device, ``meta`` included).
        state_dict: The file's weights.

    Returns:
        Up to three examples each of missing weights, unexpected ones (names escaped) and other shapes; ``None`` when they fit.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k} {list(state_dict[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in state_dict and isinstance(state_dict[k], torch.Tensor) and state_dict[k].shape != expected[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} weight(s) such as {', '.join(missing[:3])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected weight(s) such as {', '.join(_key_name(k) for k in unexpected[:3])}")
    if wrong_shape:
        parts.append(f"shapes differ ({'; '.join(wrong_shape[:3])})")
    return "; ".join(parts) or None


class _ShortRepr(reprlib.Repr):
    """``reprlib`` cut short at every level, so describing a value visits a handful of its items, never all of them."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxlist, self.maxtuple, self.maxdict, self.maxset = 2, 4, 4, 4, 4
        self.maxstring, self.maxother, self.maxlong = 30, 30, 30

    def repr_int(self, x: int, level: int) -> str:
        # repr() of an integer past 4,300 digits raises ValueError; its size says enough
        return f"<{x.bit_length()}-bit integer>" if x.bit_length() > 64 else repr(x)


_SHORT_REPR = _ShortRepr()


def _short(value: Any) -> str:
    """A value for an error message: its type and a repr cut to a readable length, escaped to print on one line."""
    if isinstance(value, torch.Tensor):
        return f"tensor {list(value.shape)} {str(value.dtype).removeprefix('torch.')}"
    try:
        text = _SHORT_REPR.repr(value)
    except (ValueError, RecursionError, TypeError):
        text = "..."
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{escape_text(text)} ({type(value).__name__})"


def _invalid(source: Path, field_name: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{display_name(source)} has an invalid {escape_text(field_name)}: {problem}")


def _quoted(name: str) -> str:
    """A name from a file, quoted as ``repr`` does, cut to a readable length and escaped."""
    return escape_text(repr(name if len(name) <= 40 else name[:37] + "..."))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_payload(payload: dict[str, Any], source: Path) -> tuple[str, dict[str, Any], str, dict[str, torch.Tensor]]:
    """Check the fields of an mnist-cnn checkpoint's payload have the types this version writes.

    Args:
        payload: What :func:`mnist_cnn.tooling.safety.safe_load.read_checkpoint_file` returned, in this project's format.
        source: The file, for messages.

    Returns:
        ``(arch, model_options, input_scaling, state_dict)``.

    Raises:
        CheckpointError: A field is missing or of the wrong type; the message names it.
    """
    shown = display_name(source)
    for key in ("arch", "model_options", "input_scaling", "state_dict"):
        if key not in payload:
            raise CheckpointError(f"{shown} is an incomplete mnist-cnn checkpoint: it lacks {key!r}")
    version = payload.get("format_version", CHECKPOINT_VERSION)
    if not _is_int(version) or version < 1:
        raise _invalid(source, "format_version", f"expected a whole number, got {_short(version)}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{shown} has checkpoint format version {version}, newer than this version reads ({CHECKPOINT_VERSION})")
    arch, options, scaling, state_dict = payload["arch"], payload["model_options"], payload["input_scaling"], payload["state_dict"]
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
    for key in ("config", "history", "metrics", "step_history"):
        value = payload.get(key)
        if value is not None and not isinstance(value, dict):
            raise _invalid(source, key, f"expected a dict, got {_short(value)}")
        if value is not None and not _is_plain(value):
            # these are written to metrics.json and plotted: only what JSON can hold
            raise _invalid(source, key, "it holds values other than text, numbers, lists and dicts (or whole numbers past 64 bits)")
    _check_history_lists(payload.get("history") or {}, source)
    return arch, dict(options), scaling, state_dict


def _is_plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is made only of what JSON can hold (and is not absurdly nested)."""
    if depth > 20:
        return False
    if _is_int(value):
        return -(1 << 63) <= value < (1 << 63)  # JSON readers and plots take 64-bit integers; a 5,000-digit one breaks them
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


def check_model_options(arch: str, options: dict[str, Any], source: Path) -> None:
    """Check architecture options against :data:`mnist_cnn.model_options.OPTION_BOUNDS` before any model is built.

    Raises:
        CheckpointError: An unknown architecture or option, a value of the wrong type, or out of bounds.
    """
    try:
        check_options(arch, options)
    except OptionError as error:
        if error.unknown:
            raise CheckpointError(f"{display_name(source)} names a model this version cannot build: {error}") from None
        raise _invalid(source, error.field, str(error)) from None


def check_weights(expected: nn.Module, state_dict: dict[str, torch.Tensor], source: Path) -> None:
    """Check each weight's dtype against the model's and that every float value is finite.

    Args:
        expected: The model (on any device, ``meta`` included) whose ``state_dict`` says what to expect;
            shapes have already been compared.
        state_dict: The file's weights.
        source: The file, for messages.

    Raises:
        CheckpointError: float64/complex/integer weights where float32 is expected, or NaN/infinite values.
    """
    shown = display_name(source)
    for name, reference in expected.state_dict().items():
        tensor = state_dict[name]
        if reference.dtype.is_floating_point:
            if tensor.dtype not in ACCEPTED_FLOAT_DTYPES:
                raise CheckpointError(
                    f"{shown} holds {name} as {str(tensor.dtype).removeprefix('torch.')}, not float32: "
                    "this project's models are float32 and such a file was not written by it"
                )
            if not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(f"{shown} holds NaN or infinite values in {name}: the model is broken and was not loaded")
        elif tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
            raise CheckpointError(f"{shown} holds {name} as {str(tensor.dtype).removeprefix('torch.')}, expected whole numbers")
