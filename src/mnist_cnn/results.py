"""A finished run: its :class:`TrainResult` (model, recipe, metrics, state to resume from) and the files it is saved as.

:func:`save_run` writes ``metrics.json`` and ``model.pt`` (:func:`build_payload`: the weights and every tensor of the
resumable state as safetensors, the rest as JSON in its header, :mod:`mnist_cnn.tensor_record`);
:func:`keep_previous_run` first moves a run already there aside, for a notebook that saves where others train.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

import mnist_cnn
from mnist_cnn import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, LAST_FILE, MODEL_FILE, tensor_record
from mnist_cnn.files import atomic_write_bytes, write_json
from mnist_cnn.reproducibility import rng_state

if TYPE_CHECKING:
    from mnist_cnn.config import TrainConfig
    from mnist_cnn.engine import History, Run

#: What a checkpoint records about its run besides the model, each empty unless given.
RECORD_FIELDS = ("config", "history", "step_history", "metrics", "training_state")
#: The metrics a run records from its last epoch, and the history key each comes from.
LAST_EPOCH_METRICS = {"val_accuracy": "val_acc", "val_loss": "val_loss", "train_accuracy": "train_acc", "train_loss": "train_loss"}


@dataclass
class TrainResult:
    """What :func:`fit` produces: the model, its recipe, its metrics and the state to resume from after the last epoch."""

    model: nn.Module
    config: TrainConfig
    metrics: dict[str, Any]
    #: Counters, curves, optimizer, schedule and random states (what ``--resume`` restores).
    training_state: dict[str, Any]

    @property
    def history(self) -> History:
        """One row per epoch (:data:`mnist_cnn.engine.HISTORY_KEYS`)."""
        return self.training_state["history"]

    @property
    def step_history(self) -> History:
        """Training loss and learning rate every few steps."""
        return self.training_state["step_history"]


def result_from(run: Run) -> TrainResult:
    """A :class:`TrainResult` for the run as it stands (its ``config`` is the recipe), trained by :func:`fit` or step by step.

    Its metrics hold the last epoch's validation numbers and the run's ``facts`` (the test set is not measured here);
    its ``training_state`` holds the counters, optimizer, schedule and random states, so the saved run can resume.
    """
    if run.config is None:
        raise ValueError("result_from() needs a run that knows its recipe: build the Run with config=...")
    config, parts, history = run.config, run.parts, run.state.history
    facts = {
        "device": str(parts.device),
        "precision": "bf16-autocast" if parts.autocast_dtype is not None else "fp32",
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        **run.facts,
    }
    metrics = {"preset": config.preset, "seed": config.seed, "epochs": config.epochs}
    metrics.update({name: history[key][-1] for name, key in LAST_EPOCH_METRICS.items()}, train_seconds=sum(history["seconds"]), **facts)
    state = {
        **dataclasses.asdict(run.state),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
        "rng": rng_state(run.generator),
        "deterministic": bool(facts["deterministic"]),
        "world_size": int(facts.get("world_size", 1)),
    }
    return TrainResult(run.network, config, metrics, state)


def checkpoint_payload(result: TrainResult) -> dict[str, Any]:
    """The checkpoint of a result (the one place it is built): weights, recipe, curves, metrics and resumable state."""
    config, state = result.config, result.training_state
    return build_payload(
        result.model,
        arch=config.arch,
        model_options=config.model_options,
        input_scaling=config.input_scaling,
        config=config.to_dict(),
        history=state["history"],
        step_history=state["step_history"],
        metrics=result.metrics,
        training_state=state,
    )


def save_run(result: TrainResult, out: Path, extra_metrics: dict | None = None) -> tuple[Path, Path]:
    """Write ``<out>/model.pt`` and ``<out>/metrics.json`` for a finished run, with ``extra_metrics`` added; return both paths.

    ``model.pt`` carries the training state: ``python -m mnist_cnn.train --resume <out>/model.pt --epochs N`` continues it.
    """
    result = dataclasses.replace(result, metrics={**result.metrics, **(extra_metrics or {})})
    model_path = save_checkpoint(out / MODEL_FILE, checkpoint_payload(result))
    metrics_path = out / "metrics.json"
    write_json(
        metrics_path, {**result.metrics, "config": result.config.to_dict(), "history": result.history, "step_history": result.step_history}
    )
    return model_path, metrics_path


def keep_previous_run(out: Path) -> Path | None:
    """Move a run already saved in ``out`` into ``out/previous-<UTC time>/``, so that saving a new one there loses nothing.

    The notebooks save to ``models/<preset>/``, which the command line also trains into: a run found there (its
    ``model.pt``, ``metrics.json`` and ``last.pt``) is kept, one file rename each, and the caller says where.

    Returns:
        The folder the run was moved to, or ``None`` when ``out`` held none.
    """
    found = [out / name for name in (MODEL_FILE, "metrics.json", LAST_FILE) if (out / name).is_file()]
    if not found:
        return None
    kept = out / f"previous-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    kept.mkdir(exist_ok=False)  # two saves within one second: the second stops rather than mix two runs
    for path in found:
        os.replace(path, kept / path.name)
    return kept


def build_payload(model: nn.Module, *, arch: str, model_options: dict[str, Any], input_scaling: str, **record: Any) -> dict[str, Any]:
    """Everything needed to rebuild and use a model, as plain containers and tensors, with the library versions used.

    Args:
        arch: Architecture name for :func:`mnist_cnn.model.build_model`, which takes ``model_options``.
        input_scaling: How images were scaled for this model (``"unit"`` or ``"standard"``).
        **record: Any of :data:`RECORD_FIELDS`: the training ``config``, the per-epoch ``history``, the per-step
            ``step_history``, the final ``metrics`` and the ``training_state`` to resume from.

    Raises:
        TypeError: A keyword that is not one of :data:`RECORD_FIELDS` (a programming error, not a user's).
    """
    import torchvision  # here, not at the top: loading a checkpoint to predict does not need it

    unknown = set(record) - set(RECORD_FIELDS)
    if unknown:
        raise TypeError(f"build_payload() got unexpected keywords {sorted(unknown)}")
    versions = {"mnist_cnn": mnist_cnn.__version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "arch": arch,
        "model_options": dict(model_options),
        "input_scaling": input_scaling,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **{name: record.get(name) or {} for name in RECORD_FIELDS[:-1]},
        "training_state": record.get("training_state"),
        "versions": {**versions, "python": platform.python_version()},
    }


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (:func:`mnist_cnn.files.atomic_write_bytes`) and return the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, tensor_record.to_bytes(payload))
    return target
