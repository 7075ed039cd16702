"""Saving and loading checkpoints: written atomically, read with ``weights_only=True`` so a file can never run code."""

from __future__ import annotations

import io
import os
import pickle
import platform
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

import mnist_cnn
from mnist_cnn.errors import CheckpointError, ConfigError
from mnist_cnn.model import build_model
from mnist_cnn.utils import atomic_write_bytes

CHECKPOINT_FORMAT = "mnist-cnn-checkpoint"
CHECKPOINT_VERSION = 1

#: What the seed project's bare ``state_dict`` (``mnist_VGG.pth``) stands for.
SEED_ARCH = "vgg"
SEED_INPUT_SCALING = "unit"


def versions() -> dict[str, str]:
    """Library versions recorded in every checkpoint."""
    return {
        "mnist_cnn": mnist_cnn.__version__,
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "python": platform.python_version(),
    }


def build_payload(
    model: nn.Module,
    *,
    arch: str,
    model_options: dict[str, Any],
    input_scaling: str,
    config: dict[str, Any] | None = None,
    history: dict[str, list] | None = None,
    metrics: dict[str, Any] | None = None,
    step_history: dict[str, list] | None = None,
    training_state: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to rebuild and use a model, as plain containers and tensors.

    Args:
        model: The trained network (its ``state_dict`` is stored on the CPU).
        arch: Architecture name for :func:`mnist_cnn.model.build_model`.
        model_options: Its constructor options.
        input_scaling: How images were scaled for this model (``"unit"`` or ``"standard"``).
        config: The training configuration.
        history: Per-epoch metrics.
        step_history: Training loss and learning rate every few steps.
        metrics: Final metrics.
        training_state: Optimizer/scheduler/RNG state and epoch, for resuming.
    """
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "arch": arch,
        "model_options": dict(model_options),
        "input_scaling": input_scaling,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "config": config or {},
        "history": history or {},
        "step_history": step_history or {},
        "metrics": metrics or {},
        "training_state": training_state,
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


def read_checkpoint_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint file safely (``weights_only=True``) onto the CPU.

    Raises:
        CheckpointError: Missing, unreadable, corrupt, unsafe, or not a dict.
    """
    source = Path(path)
    if not source.exists():
        raise CheckpointError(f"checkpoint not found: {source}")
    if not source.is_file():
        raise CheckpointError(f"checkpoint {source} is not a file")
    try:
        loaded = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "Unsupported global" in text or "GLOBAL" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            culprit = f" ({found.group(1)})" if found else ""
            raise CheckpointError(
                f"{source} is not a safe checkpoint: it holds Python objects{culprit} that weights-only loading refuses to run"
            ) from None
        raise CheckpointError(f"{source} is not a readable PyTorch checkpoint (corrupt, truncated or another kind of file)") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError, AttributeError) as error:
        raise CheckpointError(
            f"{source} is not a readable PyTorch checkpoint (corrupt, truncated or another kind of file: {type(error).__name__})"
        ) from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{source} is not a checkpoint: it holds a {type(loaded).__name__}, not a dict")
    return loaded


def _infer_bare_state_dict(state_dict: dict[str, Any], source: Path) -> tuple[str, dict[str, Any]]:
    """Recognise a bare VGG ``state_dict`` (the seed's format) and infer its options."""
    first = state_dict.get("conv_block_1.0.weight")
    if not isinstance(first, torch.Tensor) or first.dim() != 4:
        sample = ", ".join(list(state_dict)[:4])
        raise CheckpointError(
            f"{source} is neither an mnist-cnn checkpoint nor a VGG state_dict (its first keys are: {sample or 'none'})"
        )
    options = {"hidden_units": int(first.shape[0])}
    if "conv_block_1.1.running_mean" in state_dict:
        options["batch_norm"] = True
    return SEED_ARCH, options


def _describe_mismatch(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> str | None:
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
        parts.append(f"{len(unexpected)} unexpected weight(s) such as {', '.join(unexpected[:3])}")
    if wrong_shape:
        parts.append(f"shapes differ ({'; '.join(wrong_shape[:3])})")
    return "; ".join(parts) or None


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
    payload = read_checkpoint_file(source)
    if payload.get("format") == CHECKPOINT_FORMAT:
        try:
            arch, options = payload["arch"], dict(payload["model_options"])
            scaling, state_dict = payload["input_scaling"], payload["state_dict"]
        except KeyError as error:
            raise CheckpointError(f"{source} is an incomplete mnist-cnn checkpoint: it lacks {error.args[0]!r}") from None
    elif payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        arch, options = _infer_bare_state_dict(payload, source)
        scaling, state_dict = SEED_INPUT_SCALING, payload
    else:
        raise CheckpointError(f"{source} is not an mnist-cnn checkpoint nor a model state_dict")
    try:
        model = build_model(arch, **options)
    except ConfigError as error:
        raise CheckpointError(f"{source} names a model this version cannot build: {error}") from None
    mismatch = _describe_mismatch(model, state_dict)
    if mismatch:
        described = ", ".join(f"{k}={v}" for k, v in options.items())
        raise CheckpointError(f"{source} does not fit architecture {arch}({described}): {mismatch}")
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
