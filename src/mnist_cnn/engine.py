"""The training loop, read top to bottom: one batch (:func:`train_batch`), one epoch (:func:`train_epoch`),
a pass of evaluation (:func:`evaluate`) and the epochs (:func:`train`), with a :class:`TrainingState` to resume from.

``runs.fit`` adds data loading, checkpoints, resuming and multi-process training around :func:`train`;
a notebook can call these functions directly with parts it built itself.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

if TYPE_CHECKING:  # torchmetrics takes seconds to import; only training and evaluation need it
    from torchmetrics.classification import MulticlassAccuracy

from mnist_cnn.distributed import SINGLE_PROCESS, DistributedContext, any_process, weighted_mean
from mnist_cnn.errors import TrainingDiverged, TrainingInterrupted
from mnist_cnn.mnist import NUM_CLASSES
from mnist_cnn.reproducibility import rng_state
from mnist_cnn.threads import ThreadGovernor

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
History = dict[str, list[float]]
#: One row per epoch (epoch 0: the untrained model). ``train_loss`` is the training loss (label-smoothed when the
#: recipe smooths labels) averaged over the epoch's batches; ``val_loss`` is plain cross-entropy on the validation split.
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")
#: One row every ``log_every`` optimizer steps (and at the end of each epoch): the mean training loss since the last row.
STEP_HISTORY_KEYS = ("step", "epoch", "train_loss", "lr")
Metrics = tuple[float, float]
CPU = torch.device("cpu")


def progress_enabled(progress: bool | None) -> bool:
    """Resolve ``progress=None`` to: show bars in a terminal or a Jupyter kernel, hide them in plain logs."""
    if progress is not None:
        return progress
    return "ipykernel" in sys.modules or sys.stderr.isatty()


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision in ``dtype`` on ``device``, or nothing when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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
        loss_fn: The training loss, e.g. ``nn.CrossEntropyLoss(label_smoothing=0.1)``.
        optimizer: Updates the model's parameters after each batch.
        scheduler: Stepped after every batch (e.g. ``OneCycleLR``), or ``None`` for a constant rate.
        augment: Applied to each image batch on the device before the forward pass, or ``None``.
        device: Where to compute.
        autocast_dtype: ``torch.bfloat16`` to run the forward pass under autocast, else ``None``.
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
    """One optimisation step on one batch: to the device, augment, forward, loss, backward, step, schedule.

    Args:
        model: The network, in training mode.
        images: ``[B, 1, 28, 28]`` float inputs.
        labels: ``[B]`` int64 digits.
        parts: Loss, optimizer, schedule, augmentation and precision.

    Returns:
        The batch's loss (a detached scalar tensor) and logits ``[B, 10]`` (detached).
    """
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
    """Mean loss and accuracy over ``batches``, in eval mode without gradients.

    Args:
        model: The network.
        batches: Iterable of ``(images, labels)``.
        device: Where to compute.
        loss_fn: The loss to report (default: plain cross-entropy, whatever the training loss was).
        autocast_dtype: ``torch.bfloat16`` for mixed precision, else ``None``.
        channels_last: Feed images in channels-last memory format.

    Returns:
        Mean loss and accuracy.
    """
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    model.eval()
    accuracy = _accuracy_metric(device)
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for images, labels in batches:
        images, labels = _to_device(images, labels, device, channels_last)
        with autocast(device, autocast_dtype):
            logits = model(images)
        loss_sum += loss_fn(logits.float(), labels) * len(labels)
        seen += len(labels)
        accuracy.update(logits, labels)
    return (loss_sum / max(seen, 1)).item(), accuracy.compute().item()


@dataclass
class Predictions:
    """Model outputs over a dataset: true labels, predicted labels and softmax probabilities ``[N, 10]``."""

    targets: torch.Tensor
    predicted: torch.Tensor
    probabilities: torch.Tensor

    @property
    def confidence(self) -> torch.Tensor:
        """Probability of the predicted class."""
        return self.probabilities.max(dim=1).values

    @property
    def correct(self) -> torch.Tensor:
        """Boolean mask of correct predictions."""
        return self.predicted == self.targets

    @property
    def accuracy(self) -> float:
        """Fraction classified correctly."""
        return self.correct.float().mean().item()


@torch.inference_mode()
def predict(
    model: nn.Module,
    batches: Batches,
    device: torch.device,
    *,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> Predictions:
    """Run the model over every batch (batched, not one image at a time) and collect its predictions."""
    model.eval()
    targets, probabilities = [], []
    for images, labels in batches:
        images, _ = _to_device(images, labels, device, channels_last)
        with autocast(device, autocast_dtype):
            logits = model(images)
        probabilities.append(torch.softmax(logits.float(), dim=1).cpu())
        targets.append(labels.cpu())
    probs = torch.cat(probabilities)
    return Predictions(targets=torch.cat(targets), predicted=probs.argmax(dim=1), probabilities=probs)


def new_history() -> History:
    """An empty per-epoch history with the keys :func:`train` fills."""
    return {key: [] for key in HISTORY_KEYS}


def new_step_history() -> History:
    """An empty per-step history with the keys :func:`train_epoch` fills."""
    return {key: [] for key in STEP_HISTORY_KEYS}


@dataclass
class TrainingState:
    """Where a run stands: what :func:`train` advances and what a resumed run restores.

    ``epoch``, ``step``, ``history`` and ``step_history`` move as training goes; ``optimizer``,
    ``scheduler`` and ``rng`` are snapshots (state dicts) taken when a checkpoint is written.

    Attributes:
        epoch: Epochs finished.
        step: Optimizer steps taken.
        history: One row per epoch (:data:`HISTORY_KEYS`).
        step_history: One row every few steps (:data:`STEP_HISTORY_KEYS`).
        optimizer: The optimizer's ``state_dict`` at the snapshot.
        scheduler: The schedule's ``state_dict`` (``None``: constant learning rate).
        rng: Every random generator's state (:func:`mnist_cnn.reproducibility.rng_state`).
        deterministic: Whether deterministic kernels were used.
        world_size: Number of training processes.
    """

    epoch: int = 0
    step: int = 0
    history: History = field(default_factory=new_history)
    step_history: History = field(default_factory=new_step_history)
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    deterministic: bool = False
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain containers and tensors, safe for ``torch.load(weights_only=True)``."""
        return {
            "epoch": self.epoch,
            "step": self.step,
            "history": {k: list(v) for k, v in self.history.items()},
            "step_history": {k: list(v) for k, v in self.step_history.items()},
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "rng": self.rng,
            "deterministic": self.deterministic,
            "world_size": self.world_size,
        }

    def capture(self, parts: TrainParts, generator: torch.Generator | None) -> None:
        """Snapshot the optimizer, schedule and random generators into this state (before writing a checkpoint)."""
        self.optimizer = parts.optimizer.state_dict()
        self.scheduler = parts.scheduler.state_dict() if parts.scheduler is not None else None
        self.rng = rng_state(generator)

    @classmethod
    def from_dict(cls, values: dict[str, Any], history: History | None = None) -> TrainingState:
        """Rebuild from :meth:`to_dict` output.

        Args:
            values: A checkpoint's ``training_state``.
            history: The checkpoint's per-epoch history, for files written before the state carried it.
        """
        return cls(
            epoch=int(values["epoch"]),
            step=int(values.get("step", 0)),
            history={k: list(v) for k, v in (values.get("history") or history or new_history()).items()},
            step_history={k: list(v) for k, v in (values.get("step_history") or new_step_history()).items()},
            optimizer=values.get("optimizer"),
            scheduler=values.get("scheduler"),
            rng=values.get("rng"),
            deterministic=bool(values.get("deterministic", False)),
            world_size=int(values.get("world_size", 1)),
        )


@dataclass
class Loop:
    """How :func:`train` runs the epochs (what it trains is in :class:`TrainParts`).

    Attributes:
        epochs: Total number of epochs (counting any already done).
        log_every: Record a :attr:`TrainingState.step_history` row every this many steps.
        progress: tqdm bars (``None``: only in terminals and notebooks).
        log: Receives one summary line per epoch (``None`` for silence).
        should_stop: Asked after every batch; when it returns true, training stops with :class:`TrainingInterrupted`.
        on_epoch_end: Called with the state after every finished epoch, and after the epoch-0 evaluation
            (e.g. to write a checkpoint or redraw a plot).
        on_step_logged: Called with the state after every new ``step_history`` row (e.g. to redraw a live plot).
        context: This process's place among several (multi-process training); metrics are averaged over them.
        threads: Adjusts the CPU threads to the cores other programs leave free, told after every step
            (:class:`mnist_cnn.threads.ThreadGovernor`; ``None`` leaves them alone).
    """

    epochs: int
    log_every: int = 10
    progress: bool | None = None
    log: Callable[[str], Any] | None = print
    should_stop: Callable[[], bool] | None = None
    on_epoch_end: Callable[[TrainingState], Any] | None = None
    on_step_logged: Callable[[TrainingState], Any] | None = None
    context: DistributedContext = SINGLE_PROCESS
    threads: ThreadGovernor | None = None

    def stop_requested(self) -> bool:
        """Whether any process was asked to stop (all processes stop after the same batch, or the others would wait forever)."""
        return self.should_stop is not None and any_process(self.should_stop(), self.context)

    def average(self, metrics: Metrics, batches: Any) -> Metrics:
        """``metrics`` of this process's shard of ``batches`` averaged over every process's examples."""
        if not self.context.enabled:
            return metrics
        loss, accuracy = weighted_mean(metrics, batches.num_examples, self.context)
        return loss, accuracy


def train_epoch(model: nn.Module, batches: Batches, parts: TrainParts, state: TrainingState, loop: Loop) -> Metrics:
    """Train for one pass over ``batches``, recording the mean loss and learning rate every ``loop.log_every`` steps.

    Args:
        model: The network (or its ``DistributedDataParallel`` wrapper).
        batches: Training batches (``len()`` gives their number).
        parts: Loss, optimizer, schedule, augmentation and precision.
        state: Its ``step`` and ``step_history`` advance; ``state.epoch`` is the last finished epoch.
        loop: Logging interval, progress bar, stop flag and step hook.

    Returns:
        This process's mean training loss and accuracy over the pass (on the augmented batches, in training mode).

    Raises:
        TrainingDiverged: The loss became NaN or infinite.
        TrainingInterrupted: ``loop.should_stop`` asked to stop (the model then holds a partial epoch).
    """
    epoch = state.epoch + 1
    model.train()
    accuracy = _accuracy_metric(parts.device)
    loss_sum, seen = torch.zeros((), device=parts.device), 0
    # the logging window restarts with every epoch, so a run resumed at an epoch boundary logs the same rows
    window_sum, window_steps, last = torch.zeros((), device=parts.device), 0, len(batches) - 1  # type: ignore[arg-type]
    bar = tqdm(batches, desc=f"epoch {epoch}", leave=False, disable=not progress_enabled(loop.progress))
    for index, (images, labels) in enumerate(bar):
        lr = parts.lr
        loss, logits = train_batch(model, images, labels, parts)
        state.step += 1
        loss_sum += loss * len(labels)
        seen += len(labels)
        accuracy.update(logits, labels.to(parts.device))
        window_sum += loss
        window_steps += 1
        if window_steps == loop.log_every or index == last:
            mean = (window_sum / window_steps).item()
            if not math.isfinite(mean):
                raise TrainingDiverged(
                    "training diverged: the loss became NaN or infinite; the learning rate is probably too high (try a smaller --lr)",
                    epoch=epoch,
                )
            for key, value in zip(STEP_HISTORY_KEYS, (state.step, epoch, mean, lr), strict=True):
                state.step_history[key].append(value)
            window_sum, window_steps = torch.zeros((), device=parts.device), 0
            if loop.on_step_logged is not None:
                loop.on_step_logged(state)
        if loop.threads is not None:
            loop.threads.update(state.step)
        if loop.stop_requested():
            raise TrainingInterrupted("training interrupted during an epoch", epoch=epoch)
    return (loss_sum / max(seen, 1)).item(), accuracy.compute().item()


def train(
    model: nn.Module, train_batches: Batches, val_batches: Batches, parts: TrainParts, state: TrainingState, loop: Loop
) -> TrainingState:
    """Train until ``loop.epochs``, measuring the validation split after every epoch.

    When nothing has been trained yet, the untrained model is measured first, giving an epoch-0 row.
    Each later row holds that epoch's running training loss/accuracy and the validation loss/accuracy
    after it; ``seconds`` is the wall time of the training pass alone.

    Args:
        model: The network, already on ``parts.device`` (or its ``DistributedDataParallel`` wrapper).
        train_batches: Training batches, reshuffled on each iteration.
        val_batches: Validation batches (never the test set).
        parts: Loss, optimizer, schedule, augmentation and precision.
        state: Where to start (a fresh :class:`TrainingState`, or one restored to resume); advanced in place.
        loop: Epochs, logging, the stop flag and the hooks.

    Returns:
        ``state``, after the last epoch.

    Raises:
        TrainingDiverged: The training loss became NaN or infinite.
        TrainingInterrupted: ``loop.should_stop`` asked to stop.
    """
    evaluated = getattr(model, "module", model)  # DistributedDataParallel trains; the module itself evaluates
    precision = {"autocast_dtype": parts.autocast_dtype, "channels_last": parts.channels_last}
    if state.epoch == 0 and not state.history["epoch"]:
        before = loop.average(evaluate(evaluated, train_batches, parts.device, loss_fn=parts.loss_fn, **precision), train_batches)
        validation = loop.average(evaluate(evaluated, val_batches, parts.device, **precision), val_batches)
        end_epoch(state, before, validation, 0.0, loop)
    epochs = tqdm(
        range(state.epoch + 1, loop.epochs + 1),
        desc="epochs",
        disable=not progress_enabled(loop.progress),
        initial=state.epoch,
        total=loop.epochs,
    )
    for epoch in epochs:
        if loop.stop_requested():
            raise TrainingInterrupted("training interrupted between epochs", epoch=epoch)
        started = time.perf_counter()
        train_metrics = loop.average(train_epoch(model, train_batches, parts, state, loop), train_batches)
        seconds = time.perf_counter() - started
        validation = loop.average(evaluate(evaluated, val_batches, parts.device, **precision), val_batches)
        state.epoch = epoch
        end_epoch(state, train_metrics, validation, seconds, loop)
    return state


def end_epoch(state: TrainingState, train_metrics: Metrics, val_metrics: Metrics, seconds: float, loop: Loop) -> None:
    """Append ``state.epoch``'s row to the history, log it and call ``loop.on_epoch_end``."""
    row = (state.epoch, *train_metrics, *val_metrics, seconds)
    for key, value in zip(HISTORY_KEYS, row, strict=True):
        state.history[key].append(value)
    if loop.log is not None:
        loop.log(
            f"epoch {state.epoch:>2} | train loss {train_metrics[0]:.4f} acc {train_metrics[1]:.4f}"
            f" | val loss {val_metrics[0]:.4f} acc {val_metrics[1]:.4f} | {seconds:.1f}s"
        )
    if loop.on_epoch_end is not None:
        loop.on_epoch_end(state)
