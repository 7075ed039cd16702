"""Training and evaluation loops: one epoch of training, one pass of evaluation, and ``train()`` over epochs."""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

if TYPE_CHECKING:  # torchmetrics takes seconds to import; only training and evaluation need it
    from torchmetrics.classification import MulticlassAccuracy

from mnist_cnn.config import NUM_CLASSES
from mnist_cnn.errors import TrainingDiverged, TrainingInterrupted

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
History = dict[str, list[float]]
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")
Metrics = tuple[float, float]


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


def train_step(
    model: nn.Module,
    batches: Batches,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
    desc: str = "train",
    should_stop: Callable[[], bool] | None = None,
) -> tuple[float, float]:
    """Train for one pass over ``batches``.

    Args:
        model: The network; put in training mode here.
        batches: Iterable of ``(images, labels)``.
        loss_fn: E.g. ``nn.CrossEntropyLoss()``.
        optimizer: Updates the model's parameters after each batch.
        device: Where to compute.
        scheduler: Stepped after every batch (e.g. ``OneCycleLR``), if given.
        augment: Applied to each image batch on ``device`` before the forward pass.
        autocast_dtype: ``torch.bfloat16`` to run the forward pass under autocast, else ``None``.
        channels_last: Feed images in channels-last memory format.
        progress: Show a per-batch tqdm bar.
        desc: The bar's label.
        should_stop: Asked after every batch; when it returns true the pass ends there.

    Returns:
        Mean training loss and accuracy over the pass (measured on the augmented batches, in training mode).

    Raises:
        TrainingDiverged: The mean loss is NaN or infinite.
        TrainingInterrupted: ``should_stop`` returned true before the pass was complete.
    """
    model.train()
    accuracy = _accuracy_metric(device)
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for images, labels in tqdm(batches, desc=desc, leave=False, disable=not progress):
        images, labels = _to_device(images, labels, device, channels_last)
        if augment is not None:
            images = augment(images)
        with autocast(device, autocast_dtype):
            logits = model(images)
            loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss_sum += loss.detach() * len(labels)
        seen += len(labels)
        accuracy.update(logits.detach(), labels)
        if should_stop is not None and should_stop():
            # the model now holds a partial epoch: the caller resumes from the last epoch boundary
            raise TrainingInterrupted("training interrupted during an epoch")
    mean_loss = (loss_sum / max(seen, 1)).item()
    if not math.isfinite(mean_loss):
        raise TrainingDiverged(
            "training diverged: the loss became NaN or infinite; the learning rate is probably too high (try a smaller --lr)"
        )
    return mean_loss, accuracy.compute().item()


@torch.inference_mode()
def test_step(
    model: nn.Module,
    batches: Batches,
    loss_fn: nn.Module,
    device: torch.device,
    *,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool = False,
    desc: str = "test",
) -> tuple[float, float]:
    """Evaluate on ``batches`` in eval mode without gradients.

    Returns:
        Mean loss and accuracy.
    """
    model.eval()
    accuracy = _accuracy_metric(device)
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for images, labels in tqdm(batches, desc=desc, leave=False, disable=not progress):
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
    """An empty history with the keys :func:`train` fills."""
    return {key: [] for key in HISTORY_KEYS}


def train(
    model: nn.Module,
    train_batches: Batches,
    test_batches: Batches,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    device: torch.device,
    *,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    progress: bool | None = None,
    history: History | None = None,
    start_epoch: int = 0,
    on_epoch_end: Callable[[int, History], Any] | None = None,
    log: Callable[[str], Any] | None = print,
    eval_model: nn.Module | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_hook: Callable[[int, History], Any] | None = None,
    reduce_metrics: Callable[[Metrics, Batches], Metrics] | None = None,
) -> History:
    """Train for ``epochs`` epochs, evaluating on the training and test sets along the way.

    Before the first epoch (when ``start_epoch == 0``) the untrained model is evaluated, giving an
    epoch-0 row. Each later row holds that epoch's running training loss/accuracy and the test
    loss/accuracy after it. ``seconds`` is the wall time of the training pass alone.

    Args:
        model: The network, already on ``device``.
        train_batches: Training batches, reshuffled on each iteration.
        test_batches: Evaluation batches.
        loss_fn: Loss for both training and evaluation.
        optimizer: The optimizer.
        epochs: Total number of epochs (counting any already done before ``start_epoch``).
        device: Where to compute.
        scheduler: Stepped after every batch, if given.
        augment: Batch augmentation used in training only.
        autocast_dtype: ``torch.bfloat16`` for mixed precision, else ``None``.
        channels_last: Use channels-last memory format for the inputs.
        progress: tqdm bars (``None``: only in terminals and notebooks).
        history: A history to continue (when resuming).
        start_epoch: Number of epochs already done.
        on_epoch_end: Called as ``on_epoch_end(epoch, history)`` after each epoch (e.g. to save a checkpoint).
        log: Where the per-epoch summary lines go (``None`` for silence).
        eval_model: The network to evaluate with, when ``model`` is a wrapper that must only train
            (``DistributedDataParallel``); default ``model``.
        should_stop: Asked after every batch and before every epoch; when it returns true, training
            stops there with :class:`TrainingInterrupted` (its ``epoch`` is the epoch in progress).
        checkpoint_hook: Called as ``checkpoint_hook(epoch, history)`` at every epoch boundary: after the
            epoch-0 evaluation and after each epoch (before ``on_epoch_end``), to save a resumable state.
        reduce_metrics: Combines one process's ``(loss, accuracy)`` over some batches with the other
            processes' (multi-process training); the identity when ``None``.

    Returns:
        The history: a dict of equal-length lists under ``epoch``, ``train_loss``, ``train_acc``,
        ``test_loss``, ``test_acc`` and ``seconds``.

    Raises:
        TrainingDiverged: The training loss became NaN or infinite.
        TrainingInterrupted: ``should_stop`` asked to stop.
    """
    show = progress_enabled(progress)
    history = history if history is not None else new_history()
    options = {"autocast_dtype": autocast_dtype, "channels_last": channels_last}
    evaluated = eval_model if eval_model is not None else model
    reduce = reduce_metrics if reduce_metrics is not None else (lambda metrics, batches: metrics)

    def evaluate(batches: Batches) -> Metrics:
        return reduce(test_step(evaluated, batches, loss_fn, device, **options), batches)

    def record(epoch: int, train_metrics: tuple[float, float], test_metrics: tuple[float, float], seconds: float) -> None:
        for key, value in zip(HISTORY_KEYS, (epoch, *train_metrics, *test_metrics, seconds), strict=True):
            history[key].append(value)
        if log is not None:
            log(
                f"epoch {epoch:>2} | train loss {train_metrics[0]:.4f} acc {train_metrics[1]:.4f}"
                f" | test loss {test_metrics[0]:.4f} acc {test_metrics[1]:.4f} | {seconds:.1f}s"
            )

    if start_epoch == 0 and not history["epoch"]:
        record(0, evaluate(train_batches), evaluate(test_batches), 0.0)
        if checkpoint_hook is not None:
            checkpoint_hook(0, history)
    for epoch in tqdm(range(start_epoch + 1, epochs + 1), desc="epochs", disable=not show, initial=start_epoch, total=epochs):
        if should_stop is not None and should_stop():
            raise TrainingInterrupted("training interrupted between epochs", epoch=epoch)
        started = time.perf_counter()
        try:
            train_metrics = reduce(
                train_step(
                    model, train_batches, loss_fn, optimizer, device, scheduler=scheduler, augment=augment,
                    progress=show, desc=f"epoch {epoch}", should_stop=should_stop, **options,
                ),
                train_batches,
            )
        except (TrainingInterrupted, TrainingDiverged) as error:
            error.epoch = epoch  # type: ignore[attr-defined]
            raise
        seconds = time.perf_counter() - started
        record(epoch, train_metrics, evaluate(test_batches), seconds)
        if checkpoint_hook is not None:
            checkpoint_hook(epoch, history)
        if on_epoch_end is not None:
            on_epoch_end(epoch, history)
    return history
