"""The training loop, read top to bottom: one batch (:func:`train_batch`), one epoch (:func:`train_epoch`), the epochs
(:func:`train`) and an evaluation pass (:func:`evaluate`). Everything optional is a :class:`Callback` that the
:class:`Run` calls at its :data:`EVENTS`; several processes plug in through ``Run.reduce``, which averages their metrics.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mnist_cnn.errors import TrainingDiverged
from mnist_cnn.mnist import NUM_CLASSES

if TYPE_CHECKING:  # torchmetrics takes seconds to import; only training and evaluation need it
    from pathlib import Path

    from torchmetrics.classification import MulticlassAccuracy

    from mnist_cnn.config import TrainConfig

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
History = dict[str, list[float]]
#: One row per epoch (epoch 0: the untrained model). ``train_loss`` is the training loss (label-smoothed when the
#: recipe smooths labels) averaged over the epoch's batches; ``val_loss`` is plain cross-entropy on the validation split.
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")
#: One row every ``log_every`` optimizer steps (and at the end of each epoch): the mean training loss since the last row.
STEP_HISTORY_KEYS = ("step", "epoch", "train_loss", "lr")
Metrics = tuple[float, float]
#: How a run averages one process's metrics with the others': ``reduce(metrics, examples) -> metrics``.
Reduce = Callable[[Metrics, int], Metrics]
CPU = torch.device("cpu")
#: The events a :class:`Callback` may handle, in the order a run meets them.
EVENTS = ("before_fit", "before_epoch", "after_step", "after_epoch", "after_fit")


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision in ``dtype`` on ``device``, or nothing when ``dtype`` is ``None``."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def _to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device, channels_last: bool):
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


def _accuracy_metric(device: torch.device) -> MulticlassAccuracy:
    # micro average = fraction of all examples classified correctly; skip per-batch input validation for speed
    from torchmetrics.classification import MulticlassAccuracy

    return MulticlassAccuracy(num_classes=NUM_CLASSES, average="micro", validate_args=False).to(device)


@dataclass
class TrainParts:
    """Everything a training step uses besides the model and the batch.

    Attributes:
        scheduler: Stepped after every batch (e.g. ``OneCycleLR``); ``None`` keeps the rate constant.
        augment: Applied to each image batch on the device, before the forward pass.
        autocast_dtype: ``torch.bfloat16`` to run the forward pass under autocast, else ``None`` (fp32).
        channels_last: Feed images in channels-last memory format.
    """

    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    device: torch.device = CPU
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False

    @property
    def lr(self) -> float:
        """The learning rate the next step will use."""
        return float(self.optimizer.param_groups[0]["lr"])


def train_batch(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, parts: TrainParts) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimisation step (to the device, augment, forward, loss, backward, step, schedule); returns loss and logits, detached."""
    images, labels = _to_device(images, labels, parts.device, parts.channels_last)
    if parts.augment is not None:
        images = parts.augment(images)
    with autocast(parts.device, parts.autocast_dtype):
        logits = model(images)
        loss = parts.loss_fn(logits, labels)
    parts.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    parts.optimizer.step()
    if parts.scheduler is not None:
        parts.scheduler.step()
    return loss.detach(), logits.detach()


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Batches,
    device: torch.device = CPU,
    *,
    loss_fn: nn.Module | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> Metrics:
    """Mean loss (``loss_fn``, default plain cross-entropy whatever the training loss) and accuracy over ``batches``, in eval mode."""
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    model.eval()
    loss_sum, accuracy, seen = torch.zeros((), device=device), _accuracy_metric(device), 0
    for images, labels in batches:
        images, labels = _to_device(images, labels, device, channels_last)
        with autocast(device, autocast_dtype):
            logits = model(images)
        loss_sum += loss_fn(logits.float(), labels) * len(labels)
        accuracy.update(logits, labels)
        seen += len(labels)
    return (loss_sum / max(seen, 1)).item(), accuracy.compute().item()


@dataclass
class TrainingState:
    """Where a run stands: epochs finished, optimizer steps taken and their rows (a checkpoint adds optimizer and random states)."""

    epoch: int = 0
    step: int = 0
    history: History = field(default_factory=lambda: {key: [] for key in HISTORY_KEYS})
    step_history: History = field(default_factory=lambda: {key: [] for key in STEP_HISTORY_KEYS})


class Callback:
    """Something optional around the loop: override any of the five events, each called with the :class:`Run`.

    ``after_fit`` also runs when training stops early, so a callback can tidy up; ``after_epoch`` also follows the
    epoch-0 row. A callback stops training by raising :class:`mnist_cnn.errors.TrainingStopped` and reports through
    ``run.facts``, ``run.checkpoint`` or its own attributes. Callbacks run by ascending ``order``, ties as added: those
    that change the run (0 and below), then the checkpoint writer (50), then a request to stop (90).
    """

    order: int = 0

    def before_fit(self, run: Run) -> None:
        """Training is about to start (or resume)."""

    def before_epoch(self, run: Run) -> None:
        """Epoch ``run.state.epoch + 1`` is about to start."""

    def after_step(self, run: Run) -> None:
        """One optimizer step was taken (``run.state.step`` counts them)."""

    def after_epoch(self, run: Run) -> None:
        """Epoch ``run.state.epoch`` finished and its row is in ``run.state.history``."""

    def after_fit(self, run: Run) -> None:
        """Training ended, finished or not."""


@dataclass
class Run:
    """What the loop trains and what every callback sees.

    Attributes:
        model: The network (or a multi-process wrapper of it), on ``parts.device``.
        epochs: Total number of epochs (counting any already done).
        state: Fresh, or restored to resume.
        config: The recipe being trained (``None`` for a loop assembled by hand).
        generator: The data generator (shuffling and augmentation draw from it), recorded in checkpoints.
        steps_per_epoch: Batches in one training epoch (``None`` when unknown), for progress bars.
        log_every: Record a ``step_history`` row every this many steps.
        reduce: Averages a process's metrics with the other processes' (``None``: the only process).
        facts: What the run records about itself (device, precision, threads...): callbacks may add to it.
        checkpoint: The last resumable checkpoint as ``(path, epoch)``, once one is written or resumed from.
    """

    model: nn.Module
    parts: TrainParts
    epochs: int
    state: TrainingState = field(default_factory=TrainingState)
    callbacks: list[Callback] = field(default_factory=list)
    config: TrainConfig | None = None
    generator: torch.Generator | None = None
    steps_per_epoch: int | None = None
    log_every: int = 10
    reduce: Reduce | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    checkpoint: tuple[Path, int] | None = None

    @property
    def network(self) -> nn.Module:
        """The network itself, without a multi-process wrapper (what is evaluated and saved)."""
        return getattr(self.model, "module", self.model)

    def emit(self, event: str) -> None:
        """Call every callback's ``event`` method, in ascending ``order``."""
        for callback in sorted(self.callbacks, key=lambda c: getattr(c, "order", 0)):
            getattr(callback, event)(self)

    def average(self, metrics: Metrics, batches: Any) -> Metrics:
        """``metrics`` of this process's share of ``batches`` averaged over every process's examples."""
        return metrics if self.reduce is None else self.reduce(metrics, getattr(batches, "num_examples", 0))


def train_epoch(run: Run, batches: Batches) -> Metrics:
    """One pass over ``batches``, recording the mean loss and learning rate every ``run.log_every`` steps.

    Returns:
        This process's mean training loss and accuracy over the pass (on the augmented batches, in training mode).

    Raises:
        TrainingDiverged: The loss became NaN or infinite.
    """
    model, parts, state = run.model, run.parts, run.state
    model.train()
    loss_sum, accuracy, seen = torch.zeros((), device=parts.device), _accuracy_metric(parts.device), 0
    # the logging window restarts with every epoch, so a run resumed at an epoch boundary logs the same rows
    window, last = [], len(batches) - 1  # type: ignore[arg-type]
    for index, (images, labels) in enumerate(batches):
        lr = parts.lr
        loss, logits = train_batch(model, images, labels, parts)
        state.step += 1
        loss_sum += loss * len(labels)
        accuracy.update(logits, labels.to(parts.device))
        seen += len(labels)
        window.append(loss)
        if len(window) == run.log_every or index == last:
            record_step(state, torch.stack(window).mean().item(), lr)
            window = []
        run.emit("after_step")
    return (loss_sum / max(seen, 1)).item(), accuracy.compute().item()


def record_step(state: TrainingState, mean_loss: float, lr: float) -> None:
    """Append a ``step_history`` row (the mean loss since the last row, the rate it used), or raise TrainingDiverged if not finite."""
    epoch = state.epoch + 1
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(
            "training diverged: the loss became NaN or infinite; the learning rate is probably too high (try a smaller --lr)",
            epoch=epoch,
        )
    for key, value in zip(STEP_HISTORY_KEYS, (state.step, epoch, mean_loss, lr), strict=True):
        state.step_history[key].append(value)


def train(run: Run, train_batches: Batches, val_batches: Batches) -> TrainingState:
    """Train until ``run.epochs`` and return ``run.state``, measuring the validation split (never the test set) after every epoch.

    An untrained run first measures the model as it is (the epoch-0 row); ``seconds`` times the training pass alone.

    Raises:
        TrainingStopped: The loss diverged, or a callback stopped training.
    """
    state = run.state
    run.emit("before_fit")
    try:
        if state.epoch == 0 and not state.history["epoch"]:
            before = measure(run, train_batches, loss_fn=run.parts.loss_fn)
            record_epoch(run, before, measure(run, val_batches), seconds=0.0)
        for epoch in range(state.epoch + 1, run.epochs + 1):
            run.emit("before_epoch")
            started = time.perf_counter()
            train_metrics = run.average(train_epoch(run, train_batches), train_batches)
            seconds = time.perf_counter() - started
            state.epoch = epoch
            record_epoch(run, train_metrics, measure(run, val_batches), seconds)
    except BaseException as stopped:
        after_fit_despite(run, stopped)
        raise
    run.emit("after_fit")
    return state


def after_fit_despite(run: Run, stopped: BaseException) -> None:
    """Let the callbacks tidy up after training stopped early; one that fails then is noted on ``stopped``, never raised in its place.

    Otherwise a failing ``after_fit`` would hide why training stopped (an interruption and its resume hint, a divergence).
    """
    try:
        run.emit("after_fit")
    except Exception as failure:  # noqa: BLE001 - the stop is the error the caller must see; this one is only noted
        stopped.add_note(f"a callback's after_fit then failed too: {type(failure).__name__}: {failure}")


def measure(run: Run, batches: Batches, loss_fn: nn.Module | None = None) -> Metrics:
    """:func:`evaluate` the run's network on ``batches`` in its precision, averaged over every process."""
    parts = run.parts
    metrics = evaluate(
        run.network, batches, parts.device, loss_fn=loss_fn, autocast_dtype=parts.autocast_dtype, channels_last=parts.channels_last
    )
    return run.average(metrics, batches)


def record_epoch(run: Run, train_metrics: Metrics, val_metrics: Metrics, seconds: float) -> None:
    """Append ``run.state.epoch``'s row to the history, then call every callback's ``after_epoch``.

    Raises:
        TrainingDiverged: A loss or accuracy is not finite (the epoch's last steps can break a model only validation
            shows): the row is neither recorded nor seen by a callback, so no checkpoint of the broken model is written.
    """
    if not all(math.isfinite(value) for value in (*train_metrics, *val_metrics)):
        raise TrainingDiverged(
            "training diverged: the validation loss became NaN or infinite; the learning rate is probably too high (try a smaller --lr)",
            epoch=run.state.epoch,
        )
    row = (run.state.epoch, *train_metrics, *val_metrics, seconds)
    for key, value in zip(HISTORY_KEYS, row, strict=True):
        run.state.history[key].append(value)
    run.emit("after_epoch")
