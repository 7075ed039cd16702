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


def _as_numpy(values: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def _images_2d(images: torch.Tensor | np.ndarray) -> np.ndarray:
    array = _as_numpy(images).astype(np.float32)
    return array.reshape(len(array), array.shape[-2], array.shape[-1])


def prediction_captions(
    labels: Sequence[int] | torch.Tensor, predicted: Sequence[int] | torch.Tensor, confidence: Sequence[float] | torch.Tensor | None = None
) -> list[str]:
    """Each digit's title in a grid of predictions: ``true 3 / pred 5`` and, with ``confidence``, ``97% sure`` below.

    Args:
        labels: True labels.
        predicted: Predicted labels.
        confidence: Probability of each prediction, or ``None``.

    Returns:
        One caption per digit, for :func:`plot_digit_grid`'s ``captions``.
    """
    labels, predicted = _as_numpy(labels), _as_numpy(predicted)
    captions = [f"true {int(label)} / pred {int(guess)}" for label, guess in zip(labels, predicted, strict=True)]
    if confidence is None:
        return captions
    return [f"{caption}\n{float(sure):.0%} sure" for caption, sure in zip(captions, _as_numpy(confidence), strict=True)]


def plot_digit_grid(
    images: torch.Tensor | np.ndarray,
    labels: Sequence[int] | torch.Tensor,
    predicted: Sequence[int] | torch.Tensor | None = None,
    *,
    captions: Sequence[str] | None = None,
    ncols: int = 5,
    title: str | None = None,
    cell_size: float = 1.6,
) -> Figure:
    """Show digits in a grid, each titled with its label, or with its label and prediction when ``predicted`` is given.

    Args:
        images: ``[N, 28, 28]`` or ``[N, 1, 28, 28]``, any numeric scale.
        labels: True labels.
        predicted: Predicted labels; wrong ones are titled in red.
        captions: Each digit's title instead of the one made from its label and prediction (still red where
            ``predicted`` is given and wrong); :func:`prediction_captions` adds the confidence.
        ncols: Digits per row.
        title: Figure title.
        cell_size: Inches per digit.
    """
    pictures = _images_2d(images)
    labels = _as_numpy(labels)
    guesses = None if predicted is None else _as_numpy(predicted)
    fontsize = 9 if captions is None and guesses is None else 8  # a bare label has room; two lines or a verdict do not
    if captions is None:
        captions = [f"label {label}" for label in labels] if guesses is None else prediction_captions(labels, guesses)
    nrows = max(1, -(-len(pictures) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell_size, nrows * cell_size * 1.15), squeeze=False)
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


def plot_class_balance(train_labels: torch.Tensor | np.ndarray, test_labels: torch.Tensor | np.ndarray) -> Figure:
    """Bar chart of how many images each digit has, in the training and test splits side by side."""
    rows = []
    for split, labels in (("train", train_labels), ("test", test_labels)):
        counts = np.bincount(_as_numpy(labels), minlength=NUM_CLASSES)
        total = counts.sum()
        rows += [{"digit": str(d), "split": split, "share": c / total} for d, c in enumerate(counts)]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    sns.barplot(x=[r["digit"] for r in rows], y=[r["share"] for r in rows], hue=[r["split"] for r in rows], ax=ax)
    ax.axhline(1 / NUM_CLASSES, color="gray", linestyle="--", linewidth=1, label="uniform")
    ax.set(xlabel="digit", ylabel="share of split", title="Class balance")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_pixel_histogram(images: torch.Tensor | np.ndarray) -> Figure:
    """Histogram of pixel intensities (log scale: most pixels are background zeros)."""
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist(_as_numpy(images).ravel(), bins=64, color="steelblue", log=True)
    ax.set(xlabel="pixel intensity", ylabel="pixels (log scale)", title="Pixel intensities")
    fig.tight_layout()
    return fig


def plot_mean_digits(images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> Figure:
    """The average image of each digit."""
    pictures, labels = _images_2d(images), _as_numpy(labels)
    means = np.stack([pictures[labels == d].mean(axis=0) for d in range(NUM_CLASSES)])
    fig, axes = plt.subplots(1, NUM_CLASSES, figsize=(NUM_CLASSES * 1.2, 1.6))
    for digit, ax in enumerate(axes):
        ax.imshow(means[digit], cmap="magma")
        ax.set_title(str(digit))
        ax.axis("off")
    fig.suptitle("Mean image of each digit")
    fig.tight_layout()
    return fig


def _val_key(history: dict[str, Sequence[float]]) -> str:
    # runs from before the validation split recorded their per-epoch curves on the test set
    return "val" if "val_acc" in history else "test"


def plot_history(
    history: dict[str, Sequence[float]],
    step_history: dict[str, Sequence[float]] | None = None,
    label_smoothing: float | None = None,
) -> Figure:
    """Learning curves: loss, accuracy and (with ``step_history``) the learning rate.

    The training loss is drawn every few steps when ``step_history`` is given (else once per epoch); it
    is the loss the optimizer minimised, label-smoothed when the recipe smooths labels, so it never
    reaches 0. The validation loss is plain cross-entropy, once per epoch. Old runs that recorded
    their per-epoch curves on the test set (``test_loss``/``test_acc``) are drawn with those labels.

    Args:
        history: Per-epoch rows (``epoch``, ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``).
        step_history: Per-step rows (``step``, ``epoch``, ``train_loss``, ``lr``), if recorded.
        label_smoothing: The recipe's label smoothing, named in the training-loss label when above 0.
    """
    held_out = _val_key(history)
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
    name = "validation" if held_out == "val" else "test"
    if epochs:
        loss_ax.plot(epochs, history[f"{held_out}_loss"], "-s", label=f"{name} (cross-entropy)")
        acc_ax.plot(epochs, history["train_acc"], "-o", label="training")
        acc_ax.plot(epochs, history[f"{held_out}_acc"], "-s", label=name)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy (zoomed: epoch 0 may sit below)" if len(epochs) > 1 else "Accuracy")
    if len(epochs) > 1:
        acc_ax.set_ylim(max(0.0, min(history[f"{held_out}_acc"][1:] + history["train_acc"][1:]) - 0.02), 1.0)
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(loc="upper right" if ax is loss_ax else "lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_confusion_matrix(confusion: np.ndarray, normalize: bool = False, title: str = "Confusion matrix") -> Figure:
    """Draw a confusion matrix (rows: true digit, columns: predicted) with scikit-learn's display.

    Args:
        confusion: ``[10, 10]`` counts, e.g. from :func:`mnist_cnn.analysis.confusion`.
        normalize: Show each row as fractions of that digit's images.
        title: Axes title.
    """
    matrix = confusion / confusion.sum(axis=1, keepdims=True) if normalize else confusion
    fig, ax = plt.subplots(figsize=(7, 6))
    ConfusionMatrixDisplay(matrix, display_labels=list(CLASS_NAMES)).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format=".2f" if normalize else "d"
    )
    ax.set_title(title)
    fig.tight_layout()
    return fig
