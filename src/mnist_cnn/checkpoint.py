"""A checkpoint loaded back into a model: the plain reader of what the study wrote, and the model rebuilt strictly.

A checkpoint is one safetensors file (:func:`mnist_cnn.results.build_payload`), read without pickle. Files a user names
go through the commands' bounded reader (``tooling/safety/safe_load``, the ``reader``), which also reads ``.pth`` files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_tensors
from torch import nn

from mnist_cnn import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, tensor_record
from mnist_cnn.errors import CheckpointError, ConfigError
from mnist_cnn.model import build_model
from mnist_cnn.text import display_name, escape_text

#: What the seed project's bare ``state_dict`` (``mnist_VGG.pth``) stands for: the architecture and input scaling.
SEED_ARCH, SEED_INPUT_SCALING = "vgg", "unit"
#: Reads a file into its payload: :func:`read_payload`, or the commands' bounded reader.
Reader = Callable[[Path], dict[str, Any]]


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint, with what was recorded beside it."""

    model: nn.Module
    arch: str
    model_options: dict[str, Any]
    input_scaling: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    step_history: dict[str, list] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def is_seed_format(self) -> bool:
        """True when the file was a bare ``state_dict`` like the seed project's."""
        return self.payload.get("format") != CHECKPOINT_FORMAT


def unreadable(source: Path, why: object = "") -> CheckpointError:
    """The one line for a file that cannot be read as a checkpoint; ``why`` is cut to a readable length and escaped."""
    detail = escape_text(" ".join(str(why).split())[:200])
    kind = f"corrupt, truncated or another kind of file{': ' if detail else ''}{detail}"
    return CheckpointError(f"{display_name(source)} is not a readable PyTorch checkpoint ({kind})")


def is_torch_pickle(data: bytes) -> bool:
    """Whether ``data`` opens like a ``torch.save`` file (a zip archive, or the older bare pickle) rather than safetensors."""
    json_starts = data[8:9] == b"{"  # a safetensors header, after its 8-byte length
    return not json_starts and (data.startswith(b"PK\x03\x04") or data.startswith(b"\x80\x02"))


@contextmanager
def _reading(source: Path) -> Iterator[BinaryIO]:
    """``source`` open to read (a FIFO refused first: it would block); what reading it raises becomes one line naming it."""
    try:
        if not source.is_file():
            raise CheckpointError(
                f"checkpoint {display_name(source)} is not a file" if source.exists() else f"checkpoint not found: {display_name(source)}"
            )
        with source.open("rb") as handle:
            yield handle
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {display_name(source)}: {error.strerror or error}") from None
    except (ValueError, SafetensorError, RuntimeError, TypeError, OverflowError) as error:  # tensor_record raises ValueError
        raise unreadable(source, error) from None


def _a_record(record: Any, source: Path) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise CheckpointError(f"{display_name(source)} is not a checkpoint: its record is a {type(record).__name__}, not a dict")
    return record


def read_payload(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The plain reader of :func:`load_checkpoint`: a file this project wrote, read whole onto the CPU.

    Raises:
        CheckpointError: Missing, not a file, unreadable, corrupt or a torch pickle.
    """
    source = Path(path)
    with _reading(source) as handle:
        data = handle.read()
        if is_torch_pickle(data):
            raise CheckpointError(
                f"{display_name(source)} is a torch pickle, not this project's checkpoint format: load it through the command "
                "line (python -m mnist_cnn.evaluate --checkpoint ...) or read it with torch.load(weights_only=True)"
            )
        tensors = load_tensors(data)  # safetensors checks the header and where every tensor lies before reading any
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        return _a_record(tensor_record.decode(header.get("__metadata__"), tensors), source)


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A checkpoint's record alone (config, history, metrics, training counters), reading only its header: tensors read ``None``.

    Raises:
        CheckpointError: Missing, not a file, unreadable, or not in this format (a torch pickle included).
    """
    source = Path(path)
    with _reading(source), safe_open(str(source), framework="pt") as opened:
        return _a_record(tensor_record.decode(opened.metadata(), None), source)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Bare weights saved as a plain safetensors file (the shipped digit detector), every float value checked finite.

    Raises:
        CheckpointError: Missing, unreadable, corrupt, or holding NaN or infinite values.
    """
    source = Path(path)
    with _reading(source) as handle:
        state_dict = load_tensors(handle.read())
    check_finite(state_dict, source)
    return state_dict


def check_finite(state_dict: dict[str, torch.Tensor], source: Path) -> None:
    """Raise a CheckpointError naming the first weight that holds NaN or an infinity, and the file."""
    for name, tensor in state_dict.items():
        if (tensor.dtype.is_floating_point or tensor.dtype.is_complex) and not bool(torch.isfinite(tensor).all()):
            shown = escape_text(name if len(name) <= 60 else name[:57] + "...")
            raise CheckpointError(f"{display_name(source)} holds NaN or infinite values in {shown}: the model is broken and was not loaded")


def model_fields(payload: dict[str, Any], source: Path) -> tuple[Any, Any, Any, Any]:
    """``(arch, model_options, input_scaling, state_dict)`` of this project's checkpoint, or inferred for a bare VGG ``state_dict``.

    Raises:
        CheckpointError: A missing field, a newer format version, or neither kind of file.
    """
    if payload.get("format") == CHECKPOINT_FORMAT:
        version = payload.get("format_version")
        if isinstance(version, int) and version > CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{display_name(source)} has checkpoint format version {version}, newer than this version reads ({CHECKPOINT_VERSION})"
            )
        missing = [key for key in ("arch", "model_options", "input_scaling", "state_dict") if key not in payload]
        if missing:
            raise CheckpointError(f"{display_name(source)} is an incomplete mnist-cnn checkpoint: it lacks {missing[0]!r}")
        return payload["arch"], payload["model_options"], payload["input_scaling"], payload["state_dict"]
    first = payload.get("conv_block_1.0.weight")  # the seed's bare state_dict: its width is that of the first convolution
    if not isinstance(first, torch.Tensor) or first.dim() != 4:
        sample = ", ".join(escape_text(str(key)[:60]) for key in list(payload)[:4])
        raise CheckpointError(
            f"{display_name(source)} is neither an mnist-cnn checkpoint nor a VGG state_dict (its first keys are: {sample or 'none'})"
        )
    options = {"hidden_units": int(first.shape[0]), **({"batch_norm": True} if "conv_block_1.1.running_mean" in payload else {})}
    return SEED_ARCH, options, SEED_INPUT_SCALING, payload


def load_checkpoint(path: str | os.PathLike[str], device: torch.device | str = "cpu", reader: Reader = read_payload) -> LoadedCheckpoint:
    """Load a model from an mnist-cnn checkpoint (``model.pt``, ``last.pt``) or a bare seed-format ``state_dict``, strictly.

    Returns:
        The model in eval mode on ``device``, with its recorded options, input scaling, metrics and history.

    Raises:
        CheckpointError: What the ``reader`` refuses, a model that cannot be built, weights that do not fit or are not finite.
    """
    source = Path(path)
    payload = reader(source)
    arch, options, scaling, state_dict = model_fields(payload, source)
    try:
        model = build_model(arch, **options)
    except (ConfigError, TypeError) as error:  # TypeError: options that are not a dict
        raise CheckpointError(f"{display_name(source)} names a model this version cannot build: {escape_text(str(error))}") from None
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError, AttributeError) as error:  # torch puts each difference on a line of its own, after a title
        differences = [line.strip() for line in str(error).split("\n\t")[1:] if line.strip()] or [str(error)]
        first = differences[0] if len(differences[0]) <= 200 else differences[0][:197] + "..."
        more = f" (and {len(differences) - 1} more differences)" if len(differences) > 1 else ""
        described = ", ".join(f"{k}={v}" for k, v in options.items())
        raise CheckpointError(
            f"{display_name(source)} does not fit architecture {arch}({escape_text(described)}): {escape_text(first)}{more}"
        ) from None
    check_finite(model.state_dict(), source)
    model.to(device).eval()
    ours = payload.get("format") == CHECKPOINT_FORMAT
    records = {name: payload.get(name) or {} if ours else {} for name in ("config", "history", "metrics", "step_history")}
    return LoadedCheckpoint(
        model=model, arch=arch, model_options=dict(options), input_scaling=scaling, path=source, payload=payload, **records
    )
