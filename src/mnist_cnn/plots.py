"""Every figure the notebooks and reports show. Each function returns a matplotlib ``Figure``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay

from mnist_cnn.mnist import CLASS_NAMES, NUM_CLASSES

if TYPE_CHECKING:  # only for annotations: predict imports the model code, plots should not need it
    import pandas as pd

    from mnist_cnn.analysis import Mistakes
    from mnist_cnn.digits.drawpad import DrawingResult
    from mnist_cnn.digits.inference import Prediction
    from mnist_cnn.digits.preprocess import PreprocessedImage


def _as_numpy(values: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def _images_2d(images: torch.Tensor | np.ndarray) -> np.ndarray:
    array = _as_numpy(images).astype(np.float32)
    return array.reshape(len(array), array.shape[-2], array.shape[-1])


def plot_digit_grid(
    images: torch.Tensor | np.ndarray,
    labels: Sequence[int] | torch.Tensor,
    predicted: Sequence[int] | torch.Tensor | None = None,
    confidence: Sequence[float] | torch.Tensor | None = None,
    ncols: int = 5,
    title: str | None = None,
    cell_size: float = 1.6,
    captions: Sequence[str] | None = None,
) -> Figure:
    """Show digits in a grid, titled with their label (and prediction and confidence, if given).

    Args:
        images: ``[N, 28, 28]`` or ``[N, 1, 28, 28]``, any numeric scale.
        labels: True labels.
        predicted: Predicted labels; wrong ones are titled in red.
        confidence: Probability of each prediction.
        ncols: Digits per row.
        title: Figure title.
        cell_size: Inches per digit.
        captions: Each digit's title instead of the one made from its label, prediction and confidence (still
            red where ``predicted`` is given and wrong).
    """
    pictures = _images_2d(images)
    labels = _as_numpy(labels)
    nrows = max(1, -(-len(pictures) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * cell_size, nrows * cell_size * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(pictures):
            continue
        ax.imshow(pictures[i], cmap="gray")
        if captions is not None:
            wrong = predicted is not None and int(_as_numpy(predicted)[i]) != labels[i]
            ax.set_title(captions[i], fontsize=8, color="crimson" if wrong else "black")
        elif predicted is None:
            ax.set_title(f"label {labels[i]}", fontsize=9)
        else:
            guess = int(_as_numpy(predicted)[i])
            text = f"true {labels[i]} / pred {guess}"
            if confidence is not None:
                text += f"\n{float(_as_numpy(confidence)[i]):.0%} sure"
            ax.set_title(text, fontsize=8, color="black" if guess == labels[i] else "crimson")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_mistakes(mistakes: Mistakes, title: str = "Most confident mistakes", ncols: int = 5) -> Figure:
    """The mistakes gallery: each misclassified digit titled with its true label, the prediction and its confidence.

    Args:
        mistakes: From :func:`mnist_cnn.analysis.mistakes`.
        title: Figure title.
        ncols: Digits per row.
    """
    return plot_digit_grid(mistakes.images, mistakes.labels, mistakes.predicted, mistakes.confidence, ncols=ncols, title=title)


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


def plot_per_class(values: Sequence[float], ylabel: str = "accuracy", title: str = "Per-class accuracy") -> Figure:
    """A bar per digit, zoomed to the range where the bars differ."""
    values = _as_numpy(values)
    fig, ax = plt.subplots(figsize=(8, 3))
    sns.barplot(x=list(CLASS_NAMES), y=values, color="steelblue", ax=ax)
    low = float(values.min())
    ax.set_ylim(max(0.0, low - (1 - low) * 0.5 - 0.002), 1.0)
    ax.set(xlabel="digit", ylabel=ylabel, title=title)
    for i, value in enumerate(values):
        ax.text(i, value, f"{value:.3f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    return fig


def plot_filters(weights: torch.Tensor, ncols: int = 8, title: str = "First-layer filters") -> Figure:
    """Show convolution kernels ``[out, in, k, k]`` (first input channel), each on its own colour scale."""
    kernels = _as_numpy(weights)[:, 0]
    nrows = -(-len(kernels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 1.0, nrows * 1.0), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(kernels):
            limit = np.abs(kernels[i]).max() or 1.0
            ax.imshow(kernels[i], cmap="RdBu_r", vmin=-limit, vmax=limit)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_feature_maps(maps: torch.Tensor, ncols: int = 8, title: str = "Feature maps") -> Figure:
    """Show the channels of one image's activations ``[C, H, W]``."""
    channels = _as_numpy(maps)
    nrows = -(-len(channels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * 1.0, nrows * 1.0), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < len(channels):
            ax.imshow(channels[i], cmap="viridis")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_embedding(points: np.ndarray, labels: torch.Tensor | np.ndarray, title: str) -> Figure:
    """Scatter a 2-D embedding coloured by digit."""
    labels = _as_numpy(labels)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    sns.scatterplot(
        x=points[:, 0], y=points[:, 1], hue=labels.astype(str), hue_order=list(CLASS_NAMES), palette="tab10", s=6, linewidth=0, ax=ax
    )
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(title="digit", markerscale=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def plot_preprocessing(steps: PreprocessedImage, prediction: Prediction | None = None) -> Figure:
    """Show how an image became the model's 28x28 input, step by step, and (optionally) what the model said.

    Args:
        steps: From :func:`mnist_cnn.digits.preprocess.preprocess` (or ``Prediction.steps``).
        prediction: Adds a bar chart of its top-k probabilities.
    """
    from matplotlib.patches import Rectangle

    top, left, bottom, right = steps.box
    panels = [
        (steps.grayscale, f"grayscale {steps.grayscale.shape[1]}x{steps.grayscale.shape[0]}", dict(vmin=0, vmax=255)),
        (steps.ink, "inverted, stretched" if steps.inverted else "background removed", dict(vmin=0, vmax=1)),
        (steps.cropped, f"cropped {right - left}x{bottom - top}", dict(vmin=0, vmax=1)),
        (steps.resized, f"scaled {steps.resized.shape[1]}x{steps.resized.shape[0]}", dict(vmin=0, vmax=1)),
        (steps.digit, "centred 28x28", dict(vmin=0, vmax=255)),
    ]
    columns = len(panels) + (prediction is not None)
    fig, axes = plt.subplots(1, columns, figsize=(2.3 * columns, 2.6))
    # With a prediction there is one more axes than panels: the bar chart, drawn below.
    for ax, (picture, title, scale) in zip(axes, panels, strict=False):
        ax.imshow(picture, cmap="gray", **scale)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    # The ink's bounding box, on the full-size image.
    axes[1].add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor="crimson", linewidth=1))
    if prediction is not None:
        ax = axes[-1]
        digits = [str(d) for d, _ in prediction.top_k][::-1]
        ax.barh(digits, [p for _, p in prediction.top_k][::-1], color="steelblue")
        ax.set(xlim=(0, 1), xlabel="probability", title=f"predicted {prediction.digit}")
    fig.tight_layout()
    return fig


def plot_drawing(result: DrawingResult, title: str | None = None) -> Figure:
    """What the drawing pad shows, as a still figure: the drawing, the 28x28 image the network saw, the top digits.

    Args:
        result: From :func:`mnist_cnn.digits.drawpad.predict_drawing` (or ``DrawingPad.last``).
        title: Figure title.
    """
    fig, (drawn_ax, seen_ax, bar_ax) = plt.subplots(1, 3, figsize=(8.4, 2.8), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    if result.steps is not None:
        drawn_ax.imshow(result.steps.grayscale, cmap="gray", vmin=0, vmax=255)
        seen_ax.imshow(result.steps.digit, cmap="gray", vmin=0, vmax=255)
    drawn_ax.set_title("drawing", fontsize=10)
    seen_ax.set_title("what the network sees (28x28)", fontsize=10)
    for ax in (drawn_ax, seen_ax):
        ax.set_xticks([])
        ax.set_yticks([])
    if result.top_k:
        digits = [str(d) for d, _ in result.top_k][::-1]
        probabilities = [p for _, p in result.top_k][::-1]
        bar_ax.barh(digits, probabilities, color="steelblue")
        for y, p in enumerate(probabilities):
            inside = p > 0.75  # a long bar holds its own label, in white
            bar_ax.text(
                p - 0.02 if inside else p + 0.02,
                y,
                f"{p:.1%}",
                va="center",
                ha="right" if inside else "left",
                color="white" if inside else "black",
                fontsize=9,
            )
        bar_ax.set(xlim=(0, 1), xlabel="probability", title=f"answer: {result.digit}")
    else:
        bar_ax.axis("off")
        bar_ax.set_title(result.error or "no answer", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_learning_curves(curves: pd.DataFrame, runs: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Overlay the learning curves of several runs: held-out error and training loss per epoch, on log scales.

    The error is ``1 - accuracy`` on held-out data, so runs at 99.0% and 99.4% stay apart on the log scale while
    a smoke run at 15% still fits. Held-out means the validation split where a run has one; runs from older
    versions have only test accuracy per epoch, and their legend entry says so ("test acc"). Epoch 0 (the
    untrained network) is left out.

    Args:
        curves: From :func:`mnist_cnn.catalog.learning_curves`.
        runs: Runs to show, in this order (default: all in ``curves``).
        title: Figure title.
    """
    from matplotlib.ticker import PercentFormatter

    if runs is not None:
        curves = curves[curves["run"].isin(list(runs))]
    curves = curves[curves["epoch"] >= 1]
    present = set(curves["run"])
    order = [r for r in (list(runs) if runs is not None else list(dict.fromkeys(curves["run"]))) if r in present]
    splits = curves.groupby("run")["eval_split"].first().to_dict()
    labels = {run: run if splits.get(run) == "val" else f"{run} (test acc: no val split)" for run in order}
    data = curves.assign(label=curves["run"].map(labels), eval_err=1.0 - curves["eval_acc"])
    fig, (err_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    common = dict(
        data=data,
        x="epoch",
        hue="label",
        hue_order=[labels[r] for r in order],
        palette=sns.color_palette("tab10", n_colors=max(1, len(order))),
        marker="o",
    )
    sns.lineplot(y="eval_err", ax=err_ax, **common)
    sns.lineplot(y="train_loss", ax=loss_ax, legend=False, **common)
    err_ax.set(xlabel="epoch", ylabel="error (1 - accuracy), log scale", title="Held-out error (validation; test where marked)")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss, log scale", title="Training loss")
    for ax in (err_ax, loss_ax):
        if len(data):
            ax.set_yscale("log")
            ax.set_xticks(sorted(set(data["epoch"].astype(int))))
        ax.grid(alpha=0.3, which="both")
    if len(data):  # after set_yscale, which installs its own tick labels
        err_ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=1))
    if err_ax.get_legend() is not None:
        err_ax.legend(title="run", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
