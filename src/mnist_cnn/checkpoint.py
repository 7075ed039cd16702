"""The checkpoint file format: a model with its record, written atomically and loaded back into a model."""

from __future__ import annotations

import io
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import mnist_cnn
from mnist_cnn.tooling.safety.checkpoint_fields import (  # the private helpers are shared with the resume checks below
    CHECKPOINT_VERSION,
    _key_name,
    check_model_options,
    check_weights,
    describe_mismatch,
    validate_payload,
)
from mnist_cnn.errors import CheckpointError, ConfigError
from mnist_cnn.files import atomic_write_bytes
from mnist_cnn.model import build_model
from mnist_cnn.tooling.safety.safe_load import read_checkpoint_file
from mnist_cnn.text import display_name, escape_text

#: What ``payload["format"]`` says in every checkpoint this project writes (its version: ``CHECKPOINT_VERSION``).
CHECKPOINT_FORMAT = "mnist-cnn-checkpoint"

#: What the seed project's bare ``state_dict`` (``mnist_VGG.pth``) stands for.
SEED_ARCH = "vgg"
SEED_INPUT_SCALING = "unit"

#: Largest epoch count a training state may claim.
MAX_EPOCHS = 100_000


def versions() -> dict[str, str]:
    """Library versions recorded in every checkpoint."""
    import torchvision  # here, not at the top: loading a checkpoint to predict does not need it

    return {
        "mnist_cnn": mnist_cnn.__version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


#: What a checkpoint records about its run besides the model, each empty unless given.
RECORD_FIELDS = ("config", "history", "step_history", "metrics", "training_state")


def build_payload(model: nn.Module, *, arch: str, model_options: dict[str, Any], input_scaling: str, **record: Any) -> dict[str, Any]:
    """Everything needed to rebuild and use a model, as plain containers and tensors.

    Args:
        model: The trained network (its ``state_dict`` is stored on the CPU).
        arch: Architecture name for :func:`mnist_cnn.model.build_model`.
        model_options: Its constructor options.
        input_scaling: How images were scaled for this model (``"unit"`` or ``"standard"``).
        **record: Any of :data:`RECORD_FIELDS`: the training ``config``, the per-epoch ``history``, the per-step
            ``step_history``, the final ``metrics`` and the ``training_state`` to resume from.

    Raises:
        TypeError: A keyword that is not one of :data:`RECORD_FIELDS` (a programming error, not a user's).
    """
    unknown = set(record) - set(RECORD_FIELDS)
    if unknown:
        raise TypeError(f"build_payload() got unexpected keywords {sorted(unknown)}")
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "arch": arch,
        "model_options": dict(model_options),
        "input_scaling": input_scaling,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **{name: record.get(name) or {} for name in RECORD_FIELDS if name != "training_state"},
        "training_state": record.get("training_state"),
        "versions": versions(),
    }


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (temporary file, flush, rename): a crash leaves the old file intact.

    Returns:
        The path written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(target, buffer.getvalue())
    return target


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


def _infer_bare_state_dict(state_dict: dict[str, Any], source: Path) -> tuple[str, dict[str, Any]]:
    """Recognise a bare VGG ``state_dict`` (the seed's format) and infer its options."""
    shown = display_name(source)
    first = state_dict.get("conv_block_1.0.weight")
    if not isinstance(first, torch.Tensor) or first.dim() != 4:
        sample = ", ".join(_key_name(key) for key in list(state_dict)[:4])
        raise CheckpointError(f"{shown} is neither an mnist-cnn checkpoint nor a VGG state_dict (its first keys are: {sample or 'none'})")
    options: dict[str, Any] = {"hidden_units": int(first.shape[0])}
    if "conv_block_1.1.running_mean" in state_dict:
        options["batch_norm"] = True
    return SEED_ARCH, options


def load_checkpoint(path: str | os.PathLike[str], device: torch.device | str = "cpu") -> LoadedCheckpoint:
    """Load a model from an mnist-cnn checkpoint or from a bare seed-format ``state_dict``.

    Args:
        path: The ``.pt``/``.pth`` file.
        device: Where to put the model.

    Returns:
        The model in eval mode with its recorded options, input scaling, metrics and history.

    Raises:
        CheckpointError: The file is missing, corrupt, unsafe, or does not fit the architecture it names.
    """
    source = Path(path)
    shown = display_name(source)
    payload = read_checkpoint_file(source)
    if payload.get("format") == CHECKPOINT_FORMAT:
        arch, options, scaling, state_dict = validate_payload(payload, source)
    elif payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        if not all(isinstance(key, str) for key in payload):
            raise CheckpointError(f"{shown} is not a model state_dict: some of its weights are named by something other than text")
        arch, options = _infer_bare_state_dict(payload, source)
        scaling, state_dict = SEED_INPUT_SCALING, payload
    else:
        raise CheckpointError(f"{shown} is not an mnist-cnn checkpoint nor a model state_dict")
    check_model_options(arch, options, source)
    try:
        # on the meta device: shapes and dtypes only, no memory, whatever the options say
        with torch.device("meta"):
            expected = build_model(arch, **options)
    except ConfigError as error:
        raise CheckpointError(f"{shown} names a model this version cannot build: {escape_text(str(error))}") from None
    mismatch = describe_mismatch(expected, state_dict)
    if mismatch:
        described = ", ".join(f"{k}={v}" for k, v in options.items())
        raise CheckpointError(f"{shown} does not fit architecture {arch}({described}): {mismatch}")
    check_weights(expected, state_dict, source)
    model = build_model(arch, **options)
    model.load_state_dict(state_dict)
    model.to(device).eval()
    ours = payload.get("format") == CHECKPOINT_FORMAT
    return LoadedCheckpoint(
        model=model,
        arch=arch,
        model_options=options,
        input_scaling=scaling,
        path=source,
        config=payload.get("config", {}) if ours else {},
        history=payload.get("history", {}) if ours else {},
        metrics=payload.get("metrics", {}) if ours else {},
        step_history=payload.get("step_history", {}) if ours else {},
        payload=payload,
    )
