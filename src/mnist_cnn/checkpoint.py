"""The checkpoint file format: a model with its record, written atomically and loaded back into a model."""

from __future__ import annotations

import io
import math
import os
import platform
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import mnist_cnn
from mnist_cnn.checkpoint_fields import (  # the private helpers are shared with the resume checks below
    ACCEPTED_FLOAT_DTYPES,
    CHECKPOINT_VERSION,
    _check_history_lists,
    _invalid,
    _is_int,
    _is_real,
    _key_name,
    _short,
    check_model_options,
    check_weights,
    describe_mismatch,
    validate_payload,
)
from mnist_cnn.errors import CheckpointError, ConfigError
from mnist_cnn.files import atomic_write_bytes
from mnist_cnn.model import build_model
from mnist_cnn.safe_load import read_checkpoint_file
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


def validate_training_state(
    state: Any,
    path: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    config: dict[str, Any] | None = None,
    history: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check a checkpoint's resume state field by field, so a tampered file fails before training, not during it.

    Args:
        state: ``payload["training_state"]``.
        path: The checkpoint file, for messages.
        model: The loaded model: optimizer state must fit its parameters.
        config: The recorded training configuration (it must rebuild a valid ``TrainConfig``).
        history: The recorded per-epoch history (lists of numbers, one entry per finished epoch).

    Returns:
        ``state``, unchanged.

    Raises:
        CheckpointError: Naming the file and the first field that is missing or wrong.
    """
    source = Path(path)
    if not isinstance(state, dict):
        raise _invalid(source, "training_state", f"expected a dict, got {_short(state)}")
    epoch = state.get("epoch")
    if not _is_int(epoch) or not 0 <= epoch <= MAX_EPOCHS:
        raise _invalid(source, "training_state.epoch", f"expected a whole number from 0 to {MAX_EPOCHS}, got {_short(epoch)}")
    for key in ("deterministic",):
        if state.get(key) is not None and not isinstance(state[key], bool):
            raise _invalid(source, f"training_state.{key}", f"expected true or false, got {_short(state[key])}")
    if "world_size" in state and (not _is_int(state["world_size"]) or state["world_size"] < 1):
        raise _invalid(source, "training_state.world_size", f"expected a whole number of at least 1, got {_short(state['world_size'])}")
    epochs = _validate_config(config, source) if config is not None else None
    if epochs is not None and epoch > epochs:
        raise _invalid(source, "training_state.epoch", f"{epoch} is beyond the {epochs} epoch(s) the run was configured for")
    _validate_optimizer(state.get("optimizer"), source, model)
    _validate_scheduler(state.get("scheduler"), source, epoch, epochs)
    _validate_rng(state.get("rng"), source)
    if history is not None:
        _validate_history(history, source, epoch)
    return state


def _validate_config(config: Any, source: Path) -> int:
    from mnist_cnn.config import TrainConfig  # here: presets imports the data module, which loading alone does not need

    if not isinstance(config, dict) or not config:
        raise _invalid(source, "config", f"expected the run's training configuration, got {_short(config)}")
    try:
        rebuilt = TrainConfig.from_dict(config)
        rebuilt.validate()
        for name in ("epochs", "batch_size", "eval_batch_size", "seed"):
            if not _is_int(getattr(rebuilt, name)):
                raise ConfigError(f"{name} must be a whole number, got {_short(getattr(rebuilt, name))}")
        if not _is_real(rebuilt.lr) or not math.isfinite(rebuilt.lr):
            raise ConfigError(f"lr must be a finite number, got {_short(rebuilt.lr)}")
    except (TypeError, ValueError, ConfigError) as error:
        raise _invalid(source, "config", str(error)) from None
    return int(rebuilt.epochs)


def _validate_optimizer(optimizer: Any, source: Path, model: nn.Module | None) -> None:
    name = "training_state.optimizer"
    valid = isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict) and isinstance(optimizer.get("param_groups"), list)
    if not valid:
        raise _invalid(source, name, f"expected an optimizer state_dict with 'state' and 'param_groups', got {_short(optimizer)}")
    ids: list[int] = []
    for index, group in enumerate(optimizer["param_groups"]):
        if not isinstance(group, dict) or not isinstance(group.get("params"), list) or not all(_is_int(i) for i in group["params"]):
            raise _invalid(source, f"{name}.param_groups[{index}]", f"expected a dict listing parameter numbers, got {_short(group)}")
        lr = group.get("lr")
        if lr is not None and not (_is_real(lr) and math.isfinite(lr) and lr >= 0):
            raise _invalid(source, f"{name}.param_groups[{index}].lr", f"expected a finite number of at least 0, got {_short(lr)}")
        ids += group["params"]
    shapes = [tuple(p.shape) for p in model.parameters()] if model is not None else None
    if shapes is not None and sorted(ids) != list(range(len(shapes))):
        raise _invalid(source, f"{name}.param_groups", f"it covers {len(ids)} parameter(s), the model has {len(shapes)}")
    for key, entry in optimizer["state"].items():
        if not _is_int(key) or key not in ids or not isinstance(entry, dict):
            raise _invalid(source, f"{name}.state", f"entry {_short(key)} does not belong to a parameter")
        for slot, value in entry.items():
            where = f"{name}.state[{key}].{slot}"
            if slot == "step":
                number = value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value
                if not _is_real(number) or not math.isfinite(number) or number < 0:
                    raise _invalid(source, where, f"expected a count of steps, got {_short(value)}")
                continue
            if not isinstance(value, torch.Tensor):
                if value is None or _is_real(value):
                    continue
                raise _invalid(source, where, f"expected a tensor, got {_short(value)}")
            if not value.dtype.is_floating_point or value.dtype not in ACCEPTED_FLOAT_DTYPES:
                raise _invalid(source, where, f"expected float32 values, got {_short(value)}")
            if shapes is not None and tuple(value.shape) != shapes[key]:
                raise _invalid(source, where, f"shape {list(value.shape)} does not fit parameter {key} of shape {list(shapes[key])}")
            if not bool(torch.isfinite(value).all()):
                raise _invalid(source, where, "it holds NaN or infinite values")


#: Scheduler fields that must be whole numbers, and those that must be lists of numbers, where present.
_SCHEDULER_INTS = ("last_epoch", "_step_count", "total_steps")
_SCHEDULER_NUMBER_LISTS = ("base_lrs", "_last_lr")


def _validate_scheduler(scheduler: Any, source: Path, epoch: int, epochs: int | None) -> None:
    name = "training_state.scheduler"
    if scheduler is None:
        return
    if not isinstance(scheduler, dict) or not all(isinstance(key, str) for key in scheduler):
        raise _invalid(source, name, f"expected a scheduler state_dict or nothing, got {_short(scheduler)}")
    for key in _SCHEDULER_INTS:
        if key in scheduler and not _is_int(scheduler[key]):
            raise _invalid(source, f"{name}.{key}", f"expected a whole number, got {_short(scheduler[key])}")
    for key in _SCHEDULER_NUMBER_LISTS:
        values = scheduler.get(key)
        if values is not None and (not isinstance(values, list) or not all(_is_real(v) and math.isfinite(v) for v in values)):
            raise _invalid(source, f"{name}.{key}", f"expected a list of finite numbers, got {_short(values)}")
    total, done = scheduler.get("total_steps"), scheduler.get("last_epoch")
    if _is_int(total) and _is_int(done):
        # a one-cycle schedule raises once it is stepped past its total: catch that now rather than after an epoch
        if total < 1 or not 0 <= done <= total:
            raise _invalid(source, f"{name}.last_epoch", f"{done} steps taken of a {total}-step schedule")
        if epochs is not None and epochs > 0 and total % epochs == 0 and done != epoch * (total // epochs):
            raise _invalid(
                source,
                f"{name}.last_epoch",
                f"{done} steps do not match epoch {epoch} of a {epochs}-epoch, {total}-step schedule",
            )


def _validate_rng(rng: Any, source: Path) -> None:
    name = "training_state.rng"
    if not isinstance(rng, dict):
        raise _invalid(source, name, f"expected the random generators' states, got {_short(rng)}")
    length = torch.get_rng_state().numel()
    for key in ("torch", "generator"):
        value = rng.get(key)
        if value is None and key == "generator":
            continue
        if not isinstance(value, torch.Tensor) or value.dtype != torch.uint8 or tuple(value.shape) != (length,):
            raise _invalid(source, f"{name}.{key}", f"expected {length} bytes (a uint8 tensor), got {_short(value)}")
    cuda = rng.get("cuda")
    if cuda is not None and (not isinstance(cuda, list) or not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda)):
        raise _invalid(source, f"{name}.cuda", f"expected a list of uint8 tensors or nothing, got {_short(cuda)}")
    python = rng.get("python")
    try:
        version, internal, gauss = python  # type: ignore[misc]
        if not isinstance(internal, (list, tuple)) or not all(_is_int(v) for v in internal):
            raise TypeError("the state must be whole numbers")
        random.Random().setstate((version, tuple(internal), gauss))  # a scratch generator: the real one is untouched
    except (TypeError, ValueError, OverflowError):
        raise _invalid(source, f"{name}.python", f"expected Python's [version, [625 numbers], gauss], got {_short(python)}") from None


def _validate_history(history: Any, source: Path, epoch: int) -> None:
    if not isinstance(history, dict) or not history:
        raise _invalid(source, "history", f"expected per-epoch lists, got {_short(history)}")
    epochs = history.get("epoch")
    if not isinstance(epochs, list) or not all(_is_int(e) for e in epochs) or (epochs[-1] if epochs else 0) != epoch:
        raise _invalid(source, "history['epoch']", f"expected a list of epochs ending with {epoch}, got {_short(epochs)}")
    try:  # the keys the training loop appends to; the module may be reorganised, so look them up softly
        from mnist_cnn.engine import HISTORY_KEYS as required
    except ImportError:  # pragma: no cover
        required = ()
    for key in required:
        if key not in history:
            raise _invalid(source, "history", f"it lacks {key!r}")
    _check_history_lists(history, source)
