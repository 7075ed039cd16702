"""Figures of your own digits: how an image became the model's 28x28 input, and what the drawing pad shows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

if TYPE_CHECKING:  # only for annotations: the figures need none of the model code these modules import
    from mnist_cnn.digits.drawpad import DrawingResult
    from mnist_cnn.digits.inference import Prediction
    from mnist_cnn.digits.preprocess import PreprocessedImage


def plot_preprocessing(steps: PreprocessedImage, prediction: Prediction | None = None) -> Figure:
    """Show how an image became the model's 28x28 input, step by step, and (optionally) what the model said.

    Args:
        steps: From :func:`mnist_cnn.digits.preprocess.preprocess` (or ``Prediction.steps``).
        prediction: Adds a bar chart of its top-k probabilities.
    """
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
