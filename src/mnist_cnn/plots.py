"""The figures of the data, of training and of a model's evaluation. Each function returns a matplotlib ``Figure``."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from mnist_cnn.mnist import CLASS_NAMES, NUM_CLASSES

Values = torch.Tensor | np.ndarray | Sequence
History = dict[str, Sequence[float]]
#: Inches per digit in :func:`plot_digit_grid`.
CELL_INCHES = 2.0


def _numpy(values: Values) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def _images_2d(images: Values) -> np.ndarray:
    array = _numpy(images).astype(np.float32)
    return array.reshape(len(array), array.shape[-2], array.shape[-1])


def plot_digit_grid(
    images: Values, labels: Values, predicted: Values | None = None, *, captions: list[str] | None = None, ncols: int = 5, title: str = ""
) -> Figure:
    """Show digits ``[N, 28, 28]`` or ``[N, 1, 28, 28]`` (any numeric scale) in a grid of ``ncols`` columns.

    Each digit is titled ``label 3``, or ``true 3 / pred 5`` when ``predicted`` is given (in red when wrong), or with
    its entry of ``captions`` (still red where ``predicted`` is given and wrong).
    """
    pictures, labels = _images_2d(images), _numpy(labels)
    guesses = None if predicted is None else _numpy(predicted)
    fontsize = 9 if captions is None and guesses is None else 8  # a bare label has room; two lines or a verdict do not
    if captions is None:
        captions = [f"label {t}" if guesses is None else f"true {int(t)} / pred {int(guesses[i])}" for i, t in enumerate(labels)]
    nrows = max(1, -(-len(pictures) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * CELL_INCHES, nrows * CELL_INCHES * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(pictures):
            ax.imshow(pictures[i], cmap="gray")
            wrong = guesses is not None and int(guesses[i]) != labels[i]
            ax.set_title(captions[i], fontsize=fontsize, color="crimson" if wrong else "black")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_class_balance(train_labels: Values, test_labels: Values) -> Figure:
    """Bar chart of each digit's share of the training and of the test split, side by side."""
    counts = [np.bincount(_numpy(labels), minlength=NUM_CLASSES) for labels in (train_labels, test_labels)]
    shares = np.concatenate([c / c.sum() for c in counts])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    sns.barplot(x=list(CLASS_NAMES) * 2, y=shares, hue=np.repeat(["train", "test"], NUM_CLASSES), ax=ax)
    ax.axhline(1 / NUM_CLASSES, color="gray", linestyle="--", linewidth=1, label="uniform")
    ax.set(xlabel="digit", ylabel="share of split", title="Class balance")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_pixel_histogram(images: Values) -> Figure:
    """Histogram of pixel intensities (log scale: most pixels are background zeros)."""
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist(_numpy(images).ravel(), bins=64, color="steelblue", log=True)
    ax.set(xlabel="pixel intensity", ylabel="pixels (log scale)", title="Pixel intensities")
    fig.tight_layout()
    return fig


def plot_mean_digits(images: Values, labels: Values) -> Figure:
    """The average image of each digit."""
    pictures, labels = _images_2d(images), _numpy(labels)
    fig, axes = plt.subplots(1, NUM_CLASSES, figsize=(NUM_CLASSES * 1.2, 1.6))
    for digit, ax in enumerate(axes):
        ax.imshow(pictures[labels == digit].mean(axis=0), cmap="magma")
        ax.set_title(str(digit))
        ax.axis("off")
    fig.suptitle("Mean image of each digit")
    fig.tight_layout()
    return fig


def plot_history(history: History, step_history: History | None = None, label_smoothing: float | None = None) -> Figure:
    """Learning curves: loss, accuracy and (with ``step_history``) the learning rate.

    The training loss is drawn every few steps with ``step_history`` (else once per epoch); it is what the optimizer
    minimised, so with ``label_smoothing`` (then named) it never reaches 0. The held-out loss is plain cross-entropy per
    epoch: validation, or test for old runs that recorded their per-epoch curves on it (``test_loss``/``test_acc``).

    Args:
        history: Per-epoch rows (``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``).
        step_history: Per-step rows (``step``, ``epoch``, ``train_loss``, ``lr``), if recorded.
    """
    held_out, name = ("val", "validation") if "val_acc" in history else ("test", "test")
    steps = step_history if step_history and step_history.get("step") else None
    fig, axes = plt.subplots(1, 3 if steps else 2, figsize=(14 if steps else 10, 3.8))
    loss_ax, acc_ax = axes[0], axes[1]
    epochs = list(history.get("epoch", []))
    smoothing = f", label smoothing {label_smoothing:g}" if label_smoothing else ""
    if steps:
        per_epoch = steps["step"][-1] / max(steps["epoch"][-1], 1)  # the last row closes an epoch
        x = [step / per_epoch for step in steps["step"]]
        loss_ax.plot(x, steps["train_loss"], "-", alpha=0.8, linewidth=1, label=f"training (every few steps{smoothing})")
        axes[2].plot(x, steps["lr"], "-", color="tab:green")
        axes[2].set(xlabel="epoch", ylabel="learning rate", title="Learning rate")
        axes[2].grid(alpha=0.3)
    elif epochs:
        loss_ax.plot(epochs, history["train_loss"], "-o", label=f"training (epoch mean{smoothing})")
    if epochs:
        loss_ax.plot(epochs, history[f"{held_out}_loss"], "-s", label=f"{name} (cross-entropy)")
        acc_ax.plot(epochs, history["train_acc"], "-o", label="training")
        acc_ax.plot(epochs, history[f"{held_out}_acc"], "-s", label=name)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy (zoomed: epoch 0 may sit below)" if len(epochs) > 1 else "Accuracy")
    if len(epochs) > 1:
        acc_ax.set_ylim(max(0.0, min(history[f"{held_out}_acc"][1:] + history["train_acc"][1:]) - 0.02), 1.0)
    for ax, corner in ((loss_ax, "upper right"), (acc_ax, "lower right")):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc=corner, fontsize=8)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(confusion: np.ndarray, normalize: bool = False, title: str = "Confusion matrix") -> Figure:
    """Draw a ``[10, 10]`` confusion matrix of counts (rows: true digit, columns: predicted) with scikit-learn's display.

    Args:
        normalize: Show each row as fractions of that digit's images.
    """
    matrix = confusion / confusion.sum(axis=1, keepdims=True) if normalize else confusion
    fig, ax = plt.subplots(figsize=(7, 6))
    display = ConfusionMatrixDisplay(matrix, display_labels=list(CLASS_NAMES))
    display.plot(ax=ax, cmap="Blues", colorbar=False, values_format=".2f" if normalize else "d")
    ax.set_title(title)
    fig.tight_layout()
    return fig
