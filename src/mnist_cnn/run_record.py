"""What a run records at an epoch boundary: its resumable state, its summary metrics and the checkpoint that holds both."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mnist_cnn.checkpoint import build_payload
from mnist_cnn.config import TrainConfig
from mnist_cnn.engine import TrainingState, TrainParts
from mnist_cnn.reproducibility import rng_state


def snapshot(state: TrainingState, parts: TrainParts, generator: torch.Generator | None, facts: dict[str, Any]) -> dict[str, Any]:
    """The run's resumable state now: counters, optimizer, schedule and every random generator.

    Args:
        state: The live counters.
        parts: The optimizer and schedule.
        generator: The data generator (shuffling and augmentation draw from it).
        facts: The run's unchanging facts; ``deterministic`` and ``world_size`` are recorded with the state.

    Returns:
        Plain containers and tensors, the checkpoint's ``training_state``.
    """
    return {
        **state.to_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
        "rng": rng_state(generator),
        "deterministic": bool(facts.get("deterministic", False)),
        "world_size": int(facts.get("world_size", 1)),
    }


def run_metrics(config: TrainConfig, state: TrainingState, facts: dict[str, Any]) -> dict[str, Any]:
    """The summary ``metrics.json`` and checkpoints carry: the last epoch's numbers and the run's ``facts``.

    Args:
        config: The recipe.
        state: The run so far.
        facts: What does not change while it trains (device, precision, numerics, threads, validation split...).
    """
    history = state.history
    return {
        "preset": config.preset,
        "seed": config.seed,
        "epochs": config.epochs,
        "val_accuracy": history["val_acc"][-1],
        "val_loss": history["val_loss"][-1],
        "train_accuracy": history["train_acc"][-1],
        "train_loss": history["train_loss"][-1],
        "train_seconds": sum(history["seconds"]),
        **facts,
    }


def run_payload(model: nn.Module, config: TrainConfig, training_state: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint of a run (the one place it is built): weights, recipe, curves, metrics and resumable state.

    Args:
        model: The network (not its multi-process wrapper).
        config: The recipe.
        training_state: From :func:`snapshot`.
        metrics: From :func:`run_metrics`, possibly with more entries.
    """
    return build_payload(
        model,
        arch=config.arch,
        model_options=config.model_options,
        input_scaling=config.input_scaling,
        config=config.to_dict(),
        history=training_state["history"],
        step_history=training_state["step_history"],
        metrics=metrics,
        training_state=training_state,
    )
