"""Continuing a saved run: its recorded configuration, and its state restored into freshly built objects, field by field.

Nothing in a resume state is trusted: each part is restored inside :func:`field_of`, which turns whatever torch
or Python raises into one line naming the file and the field, and :func:`resume_config` first restores the whole
state into throwaway objects and takes one step (:func:`dry_run_restore`), so a tampered file fails before any
training, not in the middle of it.
"""

from __future__ import annotations

import contextlib
import math
import operator
import random
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from mnist_cnn.checkpoint import LoadedCheckpoint
from mnist_cnn.config import TrainConfig
from mnist_cnn.engine import HISTORY_KEYS, Run, TrainingState, TrainParts
from mnist_cnn.errors import CheckpointError, ConfigError
from mnist_cnn.recipe import build_parts, model_for
from mnist_cnn.reproducibility import rng_state
from mnist_cnn.text import display_name, escape_text
from mnist_cnn.tooling.safety.checkpoint_fields import MAX_EPOCHS

#: Training images per epoch of the in-memory pipeline (60,000 less the validation split) and of torchvision's.
TRAIN_IMAGES = {"memory": 55_000, "torchvision": 60_000}


def _invalid(checkpoint: LoadedCheckpoint, name: str, problem: str) -> CheckpointError:
    return CheckpointError(f"cannot resume from {display_name(checkpoint.path)}: invalid {name}: {problem}")


@contextlib.contextmanager
def field_of(checkpoint: LoadedCheckpoint, name: str) -> Iterator[None]:
    """Turn any error raised while restoring the field ``name`` into one line naming the file and the field."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as error:  # torch and Python raise TypeError, ValueError, KeyError, IndexError, RuntimeError...
        raise _invalid(checkpoint, name, escape_text(" ".join(str(error).split())[:200]) or type(error).__name__) from None


def training_state_of(checkpoint: LoadedCheckpoint) -> dict[str, Any]:
    """The resumable state stored in a checkpoint written by :func:`~mnist_cnn.runs.fit` or :func:`~mnist_cnn.results.save_run`.

    Raises:
        CheckpointError: The checkpoint holds no training state (a seed-format file, or one saved without it), or
            was trained before the validation split.
    """
    state = checkpoint.payload.get("training_state")
    if not isinstance(state, dict) or "epoch" not in state or not checkpoint.config:
        raise CheckpointError(
            f"cannot resume from {display_name(checkpoint.path)}: it holds a model but no training state "
            "(optimizer, schedule, random generators); only checkpoints written by mnist_cnn.train can be resumed"
        )
    if checkpoint.history and "val_acc" not in checkpoint.history:
        raise CheckpointError(
            f"cannot resume from {display_name(checkpoint.path)}: it was trained before the validation split (its curves are on "
            "the test set and it trained on all 60,000 images); start a new run"
        )
    return state


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
        The configuration, checked like a new one, whose state was restored once into throwaway objects.

    Raises:
        CheckpointError: No training state, or a field of it that cannot be restored.
        ConfigError: An option contradicts the checkpoint, or there is nothing left to train.
    """
    state = training_state_of(checkpoint)
    with field_of(checkpoint, "config"):
        config = TrainConfig.from_dict(checkpoint.config)
        config.validate()  # a resumed config is held to the same bounds as a new one
    if config.model_options != checkpoint.payload.get("model_options") or config.arch != checkpoint.payload.get("arch"):
        raise _invalid(checkpoint, "config", f"its arch and model_options ({config.arch} {config.model_options}) differ from the weights'")
    done = counters(checkpoint, config.epochs).epoch
    for name, value in requested.items():
        if value is not None and value != getattr(config, name):
            raise ConfigError(
                f"--{name.replace('_', '-')} {value} contradicts {display_name(checkpoint.path)}, which was trained with "
                f"{name} {getattr(config, name)!r}: a resumed run keeps its recorded settings (leave the option out, or start a new run)"
            )
    if epochs is not None and epochs != config.epochs:
        if epochs < done:
            raise ConfigError(f"--epochs {epochs} is fewer than the {done} epoch(s) {display_name(checkpoint.path)} has already trained")
        if state.get("scheduler") is not None:
            raise ConfigError(
                f"cannot change --epochs of {display_name(checkpoint.path)} from {config.epochs} to {epochs}: its one-cycle "
                f"learning-rate schedule was planned for {config.epochs} epoch(s) (resume without --epochs, or start a new run)"
            )
        config.epochs = epochs
    if done >= config.epochs and not finishing:
        raise ConfigError(
            f"{display_name(checkpoint.path)} has already trained all its {done} epoch(s): "
            "pass --epochs with a larger number to train further"
        )
    dry_run_restore(checkpoint, config)
    return config


def counters(checkpoint: LoadedCheckpoint, epochs: int | None = None) -> TrainingState:
    """The run's counters and curves (:class:`~mnist_cnn.engine.TrainingState`), checked against each other.

    Args:
        checkpoint: The checkpoint to resume.
        epochs: The epochs the run is configured for, which it cannot have gone beyond.
    """
    values = training_state_of(checkpoint)
    epoch = values.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCHS:
        shown = escape_text(repr(epoch))[:40]
        raise _invalid(checkpoint, "training_state.epoch", f"expected a whole number from 0 to {MAX_EPOCHS}, got {shown}")
    if epochs is not None and epoch > epochs:
        raise _invalid(checkpoint, "training_state.epoch", f"{epoch} is beyond the {epochs} epoch(s) the run was configured for")
    history = values.get("history") or checkpoint.history
    missing = [key for key in HISTORY_KEYS if not isinstance(history, dict) or key not in history]
    if missing:
        raise _invalid(checkpoint, "history", f"it lacks {missing[0]!r}")
    with field_of(checkpoint, "training_state"):
        state = training_state_from({**values, "history": history})
        if not state.step_history["step"] and checkpoint.step_history:
            state.step_history = {k: list(v) for k, v in checkpoint.step_history.items()}
    if (state.history["epoch"] or [0])[-1] != epoch:
        raise _invalid(checkpoint, "history['epoch']", f"it ends with epoch {state.history['epoch'][-1:]}, the state with epoch {epoch}")
    return state


def training_state_from(values: dict[str, Any]) -> TrainingState:
    """The counters of a checkpoint's ``training_state`` (other keys are ignored; a missing ``step`` or curve reads empty)."""
    fresh = TrainingState()
    return TrainingState(
        epoch=int(values["epoch"]),
        step=int(values.get("step", 0)),
        history={k: list(v) for k, v in (values.get("history") or fresh.history).items()},
        step_history={k: list(v) for k, v in (values.get("step_history") or fresh.step_history).items()},
    )


def restore(checkpoint: LoadedCheckpoint, model: nn.Module, parts: TrainParts, generator: torch.Generator) -> TrainingState:
    """Load a checkpoint's weights, optimizer, schedule and random states into a run, and return its counters.

    Args:
        checkpoint: A checkpoint written by :func:`~mnist_cnn.runs.fit` or :func:`~mnist_cnn.results.save_run`.
        model: The freshly built network (same architecture).
        parts: The freshly built optimizer and schedule.
        generator: The run's data generator.

    Raises:
        CheckpointError: A field cannot be restored, naming it.
    """
    values, state = training_state_of(checkpoint), counters(checkpoint)
    with field_of(checkpoint, "state_dict"):
        model.load_state_dict(checkpoint.model.state_dict())
    with field_of(checkpoint, "training_state.optimizer"):
        parts.optimizer.load_state_dict(values["optimizer"])
    _check_optimizer_state(checkpoint, parts.optimizer)
    if parts.scheduler is not None and values.get("scheduler") is not None:
        with field_of(checkpoint, "training_state.scheduler"):
            parts.scheduler.load_state_dict(values["scheduler"])
        _check_scheduler(checkpoint, parts.scheduler)
    set_rng_state(values.get("rng"), generator, lambda name: field_of(checkpoint, f"training_state.{name}"))
    return state


def _check_optimizer_state(checkpoint: LoadedCheckpoint, optimizer: torch.optim.Optimizer) -> None:
    """Every group's settings must be numbers, and every saved moment fit its parameter and be finite (torch loads them without looking)."""
    for index, group in enumerate(optimizer.param_groups):
        for key in ("lr", "momentum", "dampening", "weight_decay", "eps", "betas"):
            values = group.get(key, 0.0)
            values = values if isinstance(values, (list, tuple)) else [values]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
                raise _invalid(
                    checkpoint, f"training_state.optimizer.param_groups[{index}].{key}", f"expected numbers, got {group.get(key)!r}"[:200]
                )
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, param in enumerate(params):
        entry = optimizer.state.get(param, {})
        if not isinstance(entry, dict):
            raise _invalid(
                checkpoint, f"training_state.optimizer.state[{index}]", f"expected a dict of tensors, got {type(entry).__name__}"
            )
        for slot, value in entry.items():
            where = f"training_state.optimizer.state[{index}].{slot}"
            if not isinstance(value, torch.Tensor) or slot == "step":
                continue
            if value.shape != param.shape:
                raise _invalid(checkpoint, where, f"shape {list(value.shape)} does not fit parameter {index} of shape {list(param.shape)}")
            if not bool(torch.isfinite(value).all()):
                raise _invalid(checkpoint, where, "it holds NaN or infinite values")


def _check_scheduler(checkpoint: LoadedCheckpoint, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    """The schedule's counters must be whole numbers, and its step within its plan (torch loads them without looking)."""
    for key in ("last_epoch", "_step_count", "total_steps"):
        if hasattr(scheduler, key):
            with field_of(checkpoint, f"training_state.scheduler.{key}"):
                operator.index(getattr(scheduler, key))
    total = getattr(scheduler, "total_steps", None)
    if total is not None and not 0 <= scheduler.last_epoch <= total:
        raise _invalid(checkpoint, "training_state.scheduler.last_epoch", f"{scheduler.last_epoch} steps taken of a {total}-step schedule")


def _any_part(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def set_rng_state(rng: Any, generator: torch.Generator | None = None, part: Callable[[str], Any] = _any_part) -> None:
    """Restore the random states :func:`~mnist_cnn.reproducibility.rng_state` captured (CUDA's only where CUDA is available).

    Args:
        rng: The capture.
        generator: The data generator, restored when the capture holds its state.
        part: Wraps the restoring of each part, given its name (``rng.python``...): :func:`field_of` names a bad one.
    """
    with part("rng"):
        rng.keys()  # a dict of generators' states
    with part("rng.python"):
        version, internal, gauss = rng["python"]
        random.setstate((version, tuple(internal), gauss))
    with part("rng.torch"):
        torch.set_rng_state(rng["torch"])
    with part("rng.generator"):
        if generator is not None and rng.get("generator") is not None:
            generator.set_state(rng["generator"])
    with part("rng.cuda"):
        if rng.get("cuda") is not None and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])


def dry_run_restore(checkpoint: LoadedCheckpoint, config: TrainConfig) -> None:
    """Restore ``checkpoint`` into throwaway objects and take one step, so a bad field fails now, not mid-training.

    Every random generator is put back afterwards.

    Raises:
        CheckpointError: A field cannot be restored or used, naming it.
    """
    images = min(TRAIN_IMAGES.get(config.pipeline, 55_000), config.train_size or 60_000)
    saved = rng_state()
    try:
        generator = torch.Generator()
        with field_of(checkpoint, "config"):
            model = model_for(config, torch.device("cpu"))
            parts = build_parts(config, model, math.ceil(images / config.batch_size), torch.device("cpu"), generator)
        restore(checkpoint, model, parts, generator)
        with field_of(checkpoint, "training_state.optimizer"):
            parts.optimizer.zero_grad(set_to_none=False)  # zero gradients: the step still reads every restored setting
            parts.optimizer.step()
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise _invalid(checkpoint, "training_state.optimizer", "one step with it makes the weights NaN or infinite")
        with field_of(checkpoint, "training_state.scheduler"):
            # a finished schedule (a run stopped while saving its result) has no step left to take
            if parts.scheduler is not None and parts.scheduler.last_epoch < getattr(parts.scheduler, "total_steps", math.inf):
                parts.scheduler.step()
    finally:
        set_rng_state(saved)


def resume_step(checkpoint: LoadedCheckpoint, announce: bool = True) -> Callable[[Run], None]:
    """The step :func:`~mnist_cnn.runs.fit` takes between preparing and training to continue ``checkpoint``'s run.

    It restores the counters, curves, weights, optimizer, schedule and random generators into the freshly
    prepared run (:func:`restore`), and names the checkpoint as the one to resume from if training stops again
    before a new one is written.

    Args:
        checkpoint: The checkpoint, with a config from :func:`resume_config`.
        announce: Print one line saying which run continues from which epoch.
    """

    def step(run: Run) -> None:
        run.state = restore(checkpoint, run.network, run.parts, run.generator)
        run.checkpoint = (checkpoint.path, run.state.epoch)
        if announce:
            print(f"resuming {display_name(checkpoint.path)} after epoch {run.state.epoch} of {run.epochs}")

    return step
