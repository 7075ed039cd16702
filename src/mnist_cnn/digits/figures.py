"""Figures of your own digits: how an image became the model's 28x28 input, and what the drawing pad shows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

if TYPE_CHECKING:  # only for annotations: the figures need none of the model code these modules import
    from mnist_cnn.digits.inference import Prediction
    from mnist_cnn.digits.preprocess import PreprocessedImage


def _picture(ax: Axes, picture: object, title: str, top: float, fontsize: int) -> None:
    if picture is not None:
        ax.imshow(picture, cmap="gray", vmin=0, vmax=top)
    ax.set_title(title, fontsize=fontsize)
    ax.set_xticks([])
    ax.set_yticks([])


def _bars(ax: Axes, top_k: list[tuple[int, float]], title: str) -> list[float]:
    """The top-k probabilities as horizontal bars, the most likely on top; returns them in drawing order."""
    probabilities = [p for _, p in top_k][::-1]
    ax.barh([str(d) for d, _ in top_k][::-1], probabilities, color="steelblue")
    ax.set(xlim=(0, 1), xlabel="probability", title=title)
    return probabilities


def plot_preprocessing(steps: PreprocessedImage, prediction: Prediction | None = None) -> Figure:
    """Show step by step how an image became the model's 28x28 input and, given a ``prediction``, its top-k probabilities."""
    top, left, bottom, right = steps.box
    panels = [
        (steps.grayscale, f"grayscale {steps.grayscale.shape[1]}x{steps.grayscale.shape[0]}", 255),
        (steps.ink, "inverted, stretched" if steps.inverted else "background removed", 1),
        (steps.cropped, f"cropped {right - left}x{bottom - top}", 1),
        (steps.resized, f"scaled {steps.resized.shape[1]}x{steps.resized.shape[0]}", 1),
        (steps.digit, "centred 28x28", 255),
    ]
    columns = len(panels) + (prediction is not None)
    fig, axes = plt.subplots(1, columns, figsize=(2.3 * columns, 2.6))
    for ax, (picture, title, white) in zip(axes, panels, strict=False):  # with a prediction, the last axes holds bars
        _picture(ax, picture, title, white, 9)
    # The ink's bounding box, on the full-size image.
    axes[1].add_patch(Rectangle((left - 0.5, top - 0.5), right - left, bottom - top, fill=False, edgecolor="crimson", linewidth=1))
    if prediction is not None:
        _bars(axes[-1], prediction.top_k, f"predicted {prediction.digit}")
    fig.tight_layout()
    return fig


def plot_drawing(result: Prediction, title: str | None = None) -> Figure:
    """A still of what the drawing pad shows for ``result`` (e.g. ``DrawingPad.last``): the drawing, the 28x28 input, the top digits."""
    fig, (drawn_ax, seen_ax, bar_ax) = plt.subplots(1, 3, figsize=(8.4, 2.8), gridspec_kw={"width_ratios": [1, 1, 1.3]})
    steps = result.steps
    _picture(drawn_ax, None if steps is None else steps.grayscale, "drawing", 255, 10)
    _picture(seen_ax, None if steps is None else steps.digit, "what the network sees (28x28)", 255, 10)
    if result.top_k:
        for y, p in enumerate(_bars(bar_ax, result.top_k, f"answer: {result.digit}")):
            inside = p > 0.75  # a long bar holds its own label, in white
            x, ha, color = (p - 0.02, "right", "white") if inside else (p + 0.02, "left", "black")
            bar_ax.text(x, y, f"{p:.1%}", va="center", ha=ha, color=color, fontsize=9)
    else:
        bar_ax.axis("off")
        bar_ax.set_title(result.error or "no answer", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
