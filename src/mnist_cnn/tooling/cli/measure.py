"""What the evaluate command measures and draws beyond the study: a checkpoint's test-set results and mistakes gallery."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from torch import nn

from mnist_cnn import data as mnist_data
from mnist_cnn.analysis import Predictions, confusion, example_losses, most_confident_mistakes, per_class_report, predict
from mnist_cnn.checkpoint import LoadedCheckpoint
from mnist_cnn.mnist import CLASS_NAMES
from mnist_cnn.plots import plot_digit_grid


@dataclass
class EvaluationResult:
    """A model's results on the test set."""

    loss: float
    accuracy: float
    predictions: Predictions
    confusion: np.ndarray
    report: pd.DataFrame

    @property
    def correct(self) -> int:
        """Number of test images classified correctly."""
        return int(self.predictions.correct.sum())

    @property
    def total(self) -> int:
        """Number of test images."""
        return len(self.predictions.targets)


def evaluate_model(
    model: nn.Module,
    input_scaling: str,
    data_dir: str | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 1000,
) -> EvaluationResult:
    """Run ``model`` over the 10,000 MNIST test images in batches and summarise the results.

    Args:
        model: A trained network.
        input_scaling: The scaling it was trained with (``"unit"`` or ``"standard"``).
        data_dir: MNIST root (default: ``$MNIST_DATA_DIR``, else ``data/``).
        device: Where to run.
        batch_size: Images per forward pass.
    """
    device = torch.device(device)
    test = mnist_data.load_split("test", data_dir)
    batches = mnist_data.memory_batches(test, batch_size, input_scaling)
    model = model.to(device)
    predictions = predict(model, batches, device)
    return EvaluationResult(
        loss=example_losses(predictions).mean().item(),  # from the stored fp32 probabilities; a certain mistake stays finite
        accuracy=predictions.accuracy,
        predictions=predictions,
        confusion=confusion(predictions),
        report=per_class_report(predictions),
    )


def measure_checkpoint(
    checkpoint: LoadedCheckpoint, data_dir: str | None = None, device: torch.device | str = "cpu", batch_size: int = 1000
) -> EvaluationResult:
    """Measure a loaded checkpoint on the 10,000 test images (:func:`evaluate_model`), with the input scaling it recorded.

    Args:
        checkpoint: From :func:`mnist_cnn.checkpoint.load_checkpoint`.
        data_dir: MNIST root (default: ``$MNIST_DATA_DIR``, else ``data/``).
        device: Where to run.
        batch_size: Images per forward pass.

    Returns:
        Loss, accuracy, predictions, confusion matrix and per-class report.
    """
    return evaluate_model(checkpoint.model, checkpoint.input_scaling, data_dir, device, batch_size)


@dataclass
class Mistakes:
    """Misclassified examples, surest first: what the mistakes gallery (:func:`plot_mistakes`) shows.

    Attributes:
        indices: Their positions in the evaluated split (int64).
        images: Their images ``[K, 28, 28]`` as stored (uint8).
        labels: The true digits.
        predicted: What the model said.
        confidence: The probability it gave its answer.
    """

    indices: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    predicted: torch.Tensor
    confidence: torch.Tensor

    def __len__(self) -> int:
        return len(self.indices)


def mistakes(predictions: Predictions, images: torch.Tensor, count: int = 25) -> Mistakes:
    """The ``count`` misclassified examples the model was surest about, with their images.

    Args:
        predictions: A model's predictions over a split, in the split's order.
        images: That split's images (e.g. ``load_split("test").images``).
        count: How many at most.
    """
    wrong = most_confident_mistakes(predictions, count)
    return Mistakes(
        indices=wrong,
        images=images[wrong],
        labels=predictions.targets[wrong],
        predicted=predictions.predicted[wrong],
        confidence=predictions.confidence[wrong],
    )


def plot_mistakes(mistakes: Mistakes, title: str = "Most confident mistakes", ncols: int = 5) -> Figure:
    """The mistakes gallery: each misclassified digit titled with its true label, the prediction and its confidence.

    Args:
        mistakes: From :func:`mistakes`.
        title: Figure title.
        ncols: Digits per row.
    """
    captions = [
        f"true {int(label)} / pred {int(guess)}\n{float(sure):.0%} sure"
        for label, guess, sure in zip(mistakes.labels, mistakes.predicted, mistakes.confidence, strict=True)
    ]
    return plot_digit_grid(mistakes.images, mistakes.labels, mistakes.predicted, captions=captions, ncols=ncols, title=title)


def plot_per_class(values: Sequence[float], ylabel: str = "accuracy", title: str = "Per-class accuracy") -> Figure:
    """A bar per digit, zoomed to the range where the bars differ."""
    values = np.asarray(values)
    fig, ax = plt.subplots(figsize=(8, 3))
    sns.barplot(x=list(CLASS_NAMES), y=values, color="steelblue", ax=ax)
    low = float(values.min())
    ax.set_ylim(max(0.0, low - (1 - low) * 0.5 - 0.002), 1.0)
    ax.set(xlabel="digit", ylabel=ylabel, title=title)
    for i, value in enumerate(values):
        ax.text(i, value, f"{value:.3f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    return fig
