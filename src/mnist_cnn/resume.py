"""Continuing a saved run: the recorded configuration, and its state restored into freshly built objects, field by field."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from mnist_cnn.checkpoint import LoadedCheckpoint, validate_training_state
from mnist_cnn.config import TrainConfig
from mnist_cnn.engine import TrainingState, TrainParts
from mnist_cnn.errors import CheckpointError, ConfigError
from mnist_cnn.recipe import build_parts, model_for
from mnist_cnn.reproducibility import rng_state, set_rng_state
from mnist_cnn.text import display_name

#: Training images per epoch of the in-memory pipeline (60,000 less the validation split) and of torchvision's.
TRAIN_IMAGES = {"memory": 55_000, "torchvision": 60_000}


def training_state_of(checkpoint: LoadedCheckpoint) -> dict[str, Any]:
    """The resumable state stored in a checkpoint written by :func:`fit` or :func:`save_run`.

    Raises:
        CheckpointError: The checkpoint holds no training state (a seed-format file, or one saved without it), was
            trained before the validation split, or a field of its state is malformed.
    """
    state = checkpoint.payload.get("training_state")
    if not isinstance(state, dict) or "epoch" not in state or not checkpoint.config:
        raise CheckpointError(
            f"cannot resume from {checkpoint.path}: it holds a model but no training state "
            "(optimizer, schedule, random generators); only checkpoints written by mnist_cnn.train can be resumed"
        )
    # before the field checks, which would only say that the history lacks val_* keys
    if checkpoint.history and "val_acc" not in checkpoint.history:
        raise CheckpointError(
            f"cannot resume from {checkpoint.path}: it was trained before the validation split (its curves are on the test set "
            "and it trained on all 60,000 images); start a new run"
        )
    # every field checked before use, so a tampered file fails now, naming the field, not mid-training
    return validate_training_state(state, checkpoint.path, model=checkpoint.model, config=checkpoint.config, history=checkpoint.history)


def resume_config(checkpoint: LoadedCheckpoint, epochs: int | None = None, finishing: bool = False, **requested: Any) -> TrainConfig:
    """The configuration to continue a checkpoint's run with: the recorded one, with ``epochs`` possibly raised.

    Args:
        checkpoint: A checkpoint from :func:`mnist_cnn.checkpoint.load_checkpoint`.
        epochs: New total number of epochs (``None`` keeps the recorded one).
        finishing: Accept a checkpoint that has trained all its epochs (a ``last.pt`` whose run stopped while
            saving its result): resuming it then only measures the test set and writes the result, no retraining.
        **requested: Other fields the user asked for (``None`` means not asked); each must equal the
            recorded value, because a resumed run keeps the settings it was started with.

    Returns:
        The configuration.

    Raises:
        CheckpointError: No training state in the checkpoint.
        ConfigError: An option contradicts the checkpoint, or there is nothing left to train.
    """
    state = training_state_of(checkpoint)
    config = TrainConfig.from_dict(checkpoint.config)
    done = int(state["epoch"])
    for name, value in requested.items():
        if value is not None and value != getattr(config, name):
            raise ConfigError(
                f"--{name.replace('_', '-')} {value} contradicts {checkpoint.path}, which was trained with "
                f"{name} {getattr(config, name)!r}: a resumed run keeps its recorded settings (leave the option out, or start a new run)"
            )
    if epochs is not None and epochs != config.epochs:
        if epochs < done:
            raise ConfigError(f"--epochs {epochs} is fewer than the {done} epoch(s) {checkpoint.path} has already trained")
        if state.get("scheduler") is not None:
            raise ConfigError(
                f"cannot change --epochs of {checkpoint.path} from {config.epochs} to {epochs}: its one-cycle learning-rate "
                f"schedule was planned for {config.epochs} epoch(s) (resume without --epochs, or start a new run)"
            )
        config.epochs = epochs
    if done >= config.epochs and not finishing:
        raise ConfigError(
            f"{checkpoint.path} has already trained all its {done} epoch(s): pass --epochs with a larger number to train further"
        )
    config.validate()  # a resumed config is held to the same bounds as a new one
    if config.model_options != checkpoint.payload.get("model_options") or config.arch != checkpoint.payload.get("arch"):
        raise CheckpointError(
            f"cannot resume from {display_name(checkpoint.path)}: invalid config: its arch and model_options "
            f"({config.arch} {config.model_options}) differ from those of the weights"
        )
    dry_run_restore(checkpoint, config)
    return config


@contextlib.contextmanager
def field_of(checkpoint: LoadedCheckpoint, name: str) -> Iterator[None]:
    """Turn any error torch raises while restoring ``name`` into one line naming the file and the field."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as error:  # torch raises TypeError, ValueError, KeyError, IndexError, RuntimeError...
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise CheckpointError(f"cannot resume from {display_name(checkpoint.path)}: invalid {name}: {reason}") from None


def restore(checkpoint: LoadedCheckpoint, model: nn.Module, parts: TrainParts, generator: torch.Generator) -> TrainingState:
    """Load a checkpoint's weights, optimizer, schedule and random states into a run, and return its counters.

    Each part is restored inside :func:`field_of`, so a tampered file ends in one line naming the field.

    Args:
        checkpoint: A checkpoint written by :func:`mnist_cnn.runs.fit` or :func:`mnist_cnn.runs.save_run`.
        model: The freshly built network (same architecture).
        parts: The freshly built optimizer and schedule.
        generator: The run's data generator.

    Raises:
        CheckpointError: A field cannot be restored.
    """
    values = training_state_of(checkpoint)
    with field_of(checkpoint, "training_state"):
        state = TrainingState.from_dict({"history": checkpoint.history, **values})
        if not state.step_history["step"] and checkpoint.step_history:
            state.step_history = {k: list(v) for k, v in checkpoint.step_history.items()}
    with field_of(checkpoint, "state_dict"):
        model.load_state_dict(checkpoint.model.state_dict())
    with field_of(checkpoint, "training_state.optimizer"):
        parts.optimizer.load_state_dict(values["optimizer"])
    with field_of(checkpoint, "training_state.scheduler"):
        if parts.scheduler is not None and values.get("scheduler") is not None:
            parts.scheduler.load_state_dict(values["scheduler"])
    with field_of(checkpoint, "training_state.rng"):
        set_rng_state(values["rng"], generator)
    return state


def dry_run_restore(checkpoint: LoadedCheckpoint, config: TrainConfig) -> None:
    """Restore ``checkpoint`` into throwaway objects and take one step, so a bad field fails now, not mid-training.

    The global random generators are put back afterwards.

    Raises:
        CheckpointError: A field cannot be restored or used.
    """
    batch = max(1, config.batch_size)
    images = min(TRAIN_IMAGES.get(config.pipeline, 55_000), config.train_size or 60_000)
    saved = rng_state()
    try:
        generator = torch.Generator()
        with field_of(checkpoint, "config"):
            model = model_for(config, torch.device("cpu"))
            parts = build_parts(config, model, math.ceil(images / batch), torch.device("cpu"), generator)
        restore(checkpoint, model, parts, generator)
        with field_of(checkpoint, "training_state.optimizer"):
            parts.optimizer.zero_grad(set_to_none=False)  # zero gradients: the step uses every restored buffer
            parts.optimizer.step()
        with field_of(checkpoint, "training_state.scheduler"):
            # a finished schedule (a run stopped while saving its result) has no step left to take
            if parts.scheduler is not None and parts.scheduler.last_epoch < getattr(parts.scheduler, "total_steps", math.inf):
                parts.scheduler.step()
    finally:
        set_rng_state(saved)
