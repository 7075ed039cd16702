"""The evaluation report on disk: ``metrics.json``, ``per_class_metrics.csv`` and the figures.

Every file is written atomically (a temporary file renamed into place): a full disk or an interrupt leaves
the previous report's files as they were and no temporary file behind.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from mnist_cnn import plots
from mnist_cnn.analysis import EvaluationResult, mistakes
from mnist_cnn.checkpoint import LoadedCheckpoint
from mnist_cnn.data import load_split
from mnist_cnn.files import atomic_write_bytes, write_json


def write_report(
    checkpoint: LoadedCheckpoint, result: EvaluationResult, out: Path, data_dir: str | None, figures: bool = True
) -> list[Path]:
    """Write ``metrics.json``, ``per_class_metrics.csv`` and (optionally) the figures under ``out``.

    Returns:
        The files written.
    """
    written = []
    metrics = {
        "checkpoint": str(checkpoint.path),
        "checkpoint_format": "seed state_dict" if checkpoint.is_seed_format else "mnist-cnn",
        "arch": checkpoint.arch,
        "model_options": checkpoint.model_options,
        "input_scaling": checkpoint.input_scaling,
        "test_accuracy": result.accuracy,
        "test_loss": result.loss,
        "correct": result.correct,
        "total": result.total,
        "per_class": result.report.to_dict(orient="index"),
        "confusion_matrix": result.confusion.tolist(),
        "training": checkpoint.metrics,
    }
    write_json(out / "metrics.json", metrics)
    atomic_write_bytes(out / "per_class_metrics.csv", result.report.to_csv(float_format="%.4f").encode())
    written += [out / "metrics.json", out / "per_class_metrics.csv"]
    if not figures:
        return written
    figures_dir = out / "figures"
    gallery = mistakes(result.predictions, load_split("test", data_dir).images)
    made = {
        "confusion_matrix.png": plots.plot_confusion_matrix(result.confusion, title=f"Confusion matrix (accuracy {result.accuracy:.4f})"),
        "per_class_accuracy.png": plots.plot_per_class(result.report["recall"].to_numpy()),
        "misclassified.png": plots.plot_mistakes(gallery),
    }
    first_conv = next((m for m in checkpoint.model.modules() if m.__class__.__name__ == "Conv2d"), None)
    if first_conv is not None:
        made["filters.png"] = plots.plot_filters(first_conv.weight.detach())
    if checkpoint.history.get("epoch"):
        made["training_curves.png"] = plots.plot_history(
            checkpoint.history, checkpoint.step_history, checkpoint.config.get("label_smoothing")
        )
    for name, fig in made.items():
        written.append(save_figure_atomically(fig, figures_dir / name))
        plt.close(fig)
    return written


def save_figure_atomically(fig: Figure, path: Path, dpi: int = 120) -> Path:
    """Render ``fig`` in memory (as :func:`mnist_cnn.plots.save_figure` would), then write it atomically.

    Returns:
        The path written.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path
