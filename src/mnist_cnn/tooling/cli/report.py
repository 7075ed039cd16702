"""The evaluation report on disk: ``metrics.json``, ``per_class_metrics.csv`` and the figures, written only when complete.

Every file is rendered in memory first, so a figure that cannot be drawn leaves nothing half written; then
each is written atomically (a temporary file renamed into place), ``metrics.json`` last: a full disk or an
interrupt leaves the previous report's files as they were and no temporary file behind. A folder holding a
training run is refused before any of this (:func:`mnist_cnn.tooling.runctl.rundir.check_not_a_run_folder`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from mnist_cnn import features, plots
from mnist_cnn.checkpoint import LoadedCheckpoint
from mnist_cnn.checks import read_number
from mnist_cnn.data import load_split
from mnist_cnn.files import atomic_write_bytes, strict_json_value
from mnist_cnn.tooling.cli.measure import EvaluationResult, mistakes, plot_mistakes, plot_per_class

#: The per-step rows :func:`mnist_cnn.plots.plot_history` draws, all lists of numbers of one length.
STEP_KEYS = ("step", "epoch", "train_loss", "lr")


def build_report(
    checkpoint: LoadedCheckpoint, result: EvaluationResult, data_dir: str | None, figures: bool = True, extra: dict[str, Any] | None = None
) -> dict[str, bytes]:
    """Every file of the report, rendered in memory.

    Args:
        checkpoint: The evaluated model and what it recorded.
        result: Its results on the test set.
        data_dir: MNIST root, for the images of the mistakes gallery.
        figures: Render the figures too.
        extra: More measurements for ``metrics.json`` (e.g. ``test_accuracy_tta``).

    Returns:
        ``{relative path: bytes}``, ``metrics.json`` last.
    """
    files: dict[str, bytes] = {}
    if figures:
        made = _figures(checkpoint, result, data_dir)
        try:
            for name, fig in made.items():
                files[f"figures/{name}"] = render_figure(fig, Path(name))
        finally:
            for fig in made.values():
                plt.close(fig)
    files["per_class_metrics.csv"] = result.report.to_csv(float_format="%.4f").encode()
    files["metrics.json"] = _metrics_json(checkpoint, result, extra or {})
    return files


def write_report(
    checkpoint: LoadedCheckpoint,
    result: EvaluationResult,
    out: Path,
    data_dir: str | None,
    figures: bool = True,
    extra: dict[str, Any] | None = None,
) -> list[Path]:
    """Render the report (:func:`build_report`), then write its files under ``out``, each atomically.

    Returns:
        The files written.
    """
    written = []
    for relative, data in build_report(checkpoint, result, data_dir, figures, extra).items():
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        written.append(path)
    return written


def _metrics_json(checkpoint: LoadedCheckpoint, result: EvaluationResult, extra: dict[str, Any]) -> bytes:
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
        **extra,
        "training": checkpoint.metrics,
    }
    return (json.dumps(strict_json_value(metrics), indent=2, allow_nan=False) + "\n").encode()


def _figures(checkpoint: LoadedCheckpoint, result: EvaluationResult, data_dir: str | None) -> dict[str, Figure]:
    gallery = mistakes(result.predictions, load_split("test", data_dir).images)
    made = {
        "confusion_matrix.png": plots.plot_confusion_matrix(result.confusion, title=f"Confusion matrix (accuracy {result.accuracy:.4f})"),
        "per_class_accuracy.png": plot_per_class(result.report["recall"].to_numpy()),
        "misclassified.png": plot_mistakes(gallery),
    }
    first_conv = next((m for m in checkpoint.model.modules() if m.__class__.__name__ == "Conv2d"), None)
    if first_conv is not None:
        made["filters.png"] = features.plot_filters(first_conv.weight.detach())
    if _drawable_history(checkpoint.history):
        made["training_curves.png"] = plots.plot_history(
            checkpoint.history, _drawable_steps(checkpoint.step_history), read_number(checkpoint.config.get("label_smoothing"))
        )
    return made


def _numbers(values: Any) -> bool:
    return isinstance(values, list) and all(read_number(v) is not None for v in values)


def _drawable_history(history: dict[str, Any]) -> bool:
    """Whether the per-epoch curves can be drawn: epochs, and the training and held-out loss and accuracy for each."""
    epochs = history.get("epoch")
    if not epochs or not _numbers(epochs):
        return False
    held_out = "val" if "val_acc" in history else "test"
    keys = ("train_loss", "train_acc", f"{held_out}_loss", f"{held_out}_acc")
    return all(_numbers(history.get(key)) and len(history[key]) == len(epochs) for key in keys)


def _drawable_steps(step_history: dict[str, Any]) -> dict[str, list] | None:
    """The per-step rows when they are whole (:data:`STEP_KEYS`, numbers, one length); else ``None`` (curves per epoch)."""
    if not isinstance(step_history, dict) or not all(_numbers(step_history.get(key)) for key in STEP_KEYS):
        return None
    lengths = {len(step_history[key]) for key in STEP_KEYS}
    return {key: step_history[key] for key in STEP_KEYS} if len(lengths) == 1 and 0 not in lengths else None


def render_figure(fig: Figure, path: Path, dpi: int = 120) -> bytes:
    """``fig`` as the bytes of an image file, rendered in memory.

    Args:
        fig: The figure.
        path: The file it is meant for: its suffix names the format (PNG when it has none).
        dpi: Resolution.

    Returns:
        The image file's bytes.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()
