"""Whether weights from a file fit the model they name: options, then names, shapes and dtypes on the meta device, then values.

All of it is checked before the real model is built, so a file that claims a huge model costs no memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_cnn.checkpoint import check_finite, model_fields
from mnist_cnn.errors import CheckpointError, ConfigError
from mnist_cnn.model import build_model
from mnist_cnn.model_options import OptionError, check_options
from mnist_cnn.text import display_name, escape_text
from mnist_cnn.tooling.safety.checkpoint_fields import check_model_fields

#: Weights stored in these types are loaded (cast to float32 by ``load_state_dict``); float64 and complex are refused,
#: since a model meant to be float32 that carries them was not written by this project and casting would hide that.
ACCEPTED_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_model(payload: dict[str, Any], source: Path) -> None:
    """Check everything about the model a payload names before it is built: its fields, options, weights and values.

    Args:
        payload: What a reader returned: this project's checkpoint or a bare ``state_dict``.
        source: The file, for messages.

    Raises:
        CheckpointError: A field of the wrong type, options out of bounds, weights missing, unexpected, of another
            shape or dtype, or NaN/infinite values; the message names the field or weight.
    """
    check_model_fields(payload, source)
    arch, options, _, state_dict = model_fields(payload, source)
    expected = meta_model(arch, options, source)
    mismatch = describe_mismatch(expected, state_dict)
    if mismatch:
        described = ", ".join(f"{k}={v}" for k, v in options.items())
        raise CheckpointError(f"{display_name(source)} does not fit architecture {arch}({escape_text(described)}): {mismatch}")
    check_weights(expected, state_dict, source)


def key_name(key: str) -> str:
    """A weight's name from a file, cut to a readable length and escaped, so it prints as part of one line."""
    return escape_text(key if len(key) <= 60 else key[:57] + "...")


def describe_mismatch(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> str | None:
    """How a file's weights differ from what ``model`` (on any device, ``meta`` included) expects.

    Returns:
        Up to three examples each of missing weights, unexpected ones (names escaped) and other shapes; ``None`` when they fit.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [
        f"{k} {list(state_dict[k].shape)} vs {list(expected[k].shape)}"
        for k in expected
        if k in state_dict and state_dict[k].shape != expected[k].shape
    ]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} weight(s) such as {', '.join(missing[:3])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected weight(s) such as {', '.join(key_name(k) for k in unexpected[:3])}")
    if wrong_shape:
        parts.append(f"shapes differ ({'; '.join(wrong_shape[:3])})")
    return "; ".join(parts) or None


def check_weights(expected: nn.Module, state_dict: dict[str, torch.Tensor], source: Path) -> None:
    """Check each weight's dtype against the model's (whose shapes already fit) and that every float value is finite.

    Raises:
        CheckpointError: float64/complex/integer weights where float32 is expected, or NaN/infinite values.
    """
    for name, reference in expected.state_dict().items():
        dtype = state_dict[name].dtype
        written = str(dtype).removeprefix("torch.")
        if reference.dtype.is_floating_point and dtype not in ACCEPTED_FLOAT_DTYPES:
            raise CheckpointError(
                f"{display_name(source)} holds {name} as {written}, not float32: "
                "this project's models are float32 and such a file was not written by it"
            )
        if not reference.dtype.is_floating_point and (dtype.is_floating_point or dtype.is_complex or dtype == torch.bool):
            raise CheckpointError(f"{display_name(source)} holds {name} as {written}, expected whole numbers")
    check_finite(state_dict, source)


def meta_model(arch: str, options: dict[str, Any], source: Path) -> nn.Module:
    """The model the file names, on the meta device (shapes and dtypes only, no memory), its options checked first."""
    try:
        check_options(arch, options)
        with torch.device("meta"):
            return build_model(arch, **options)
    except OptionError as error:
        if error.unknown:
            raise CheckpointError(f"{display_name(source)} names a model this version cannot build: {error}") from None
        raise CheckpointError(f"{display_name(source)} has an invalid {escape_text(error.field)}: {error}") from None
    except ConfigError as error:
        raise CheckpointError(f"{display_name(source)} names a model this version cannot build: {escape_text(str(error))}") from None
