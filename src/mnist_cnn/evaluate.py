"""Command line: evaluate a checkpoint on the MNIST test set and write figures and per-class metrics.

Example: ``python -m mnist_cnn.evaluate --checkpoint models/default/model.pt``
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a command writes files; it never opens windows

import matplotlib.pyplot as plt  # noqa: E402

from mnist_cnn import plots  # noqa: E402
from mnist_cnn.checkpoint import LoadedCheckpoint, load_checkpoint  # noqa: E402
from mnist_cnn.cli import ArgumentParser, positive_int, run_cli  # noqa: E402
from mnist_cnn.config import REPORTS_DIR  # noqa: E402
from mnist_cnn.data import load_split  # noqa: E402
from mnist_cnn.evaluation import EvaluationResult, evaluate_checkpoint, most_confident_mistakes  # noqa: E402
from mnist_cnn.utils import DEVICE_CHOICES, ensure_writable_dir, select_device, write_json  # noqa: E402


def build_parser() -> ArgumentParser:
    """The ``evaluate`` command's arguments."""
    parser = ArgumentParser(prog="python -m mnist_cnn.evaluate", description="Evaluate a trained model on the MNIST test set.")
    parser.add_argument("--checkpoint", type=Path, required=True,
                        help="a model.pt written by mnist_cnn.train, or a bare VGG state_dict such as the seed's mnist_VGG.pth")
    parser.add_argument("--data-dir", help="MNIST root holding MNIST/raw/ (default: $MNIST_DATA_DIR, else data/)")
    parser.add_argument("--out", type=Path, default=REPORTS_DIR, help="where metrics.json and figures/ are written")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="images per forward pass")
    parser.add_argument("--no-figures", action="store_true", help="write metrics only")
    return parser


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
    result.report.to_csv(out / "per_class_metrics.csv", float_format="%.4f")
    written += [out / "metrics.json", out / "per_class_metrics.csv"]
    if not figures:
        return written
    figures_dir = out / "figures"
    test_images = load_split("test", data_dir).images
    wrong = most_confident_mistakes(result.predictions)
    made = {
        "confusion_matrix.png": plots.plot_confusion_matrix(result.confusion, title=f"Confusion matrix (accuracy {result.accuracy:.4f})"),
        "per_class_accuracy.png": plots.plot_per_class(result.report["recall"].to_numpy()),
        "misclassified.png": plots.plot_digit_grid(
            test_images[wrong], result.predictions.targets[wrong], result.predictions.predicted[wrong],
            result.predictions.confidence[wrong], title="Most confident mistakes",
        ),
    }
    first_conv = next((m for m in checkpoint.model.modules() if m.__class__.__name__ == "Conv2d"), None)
    if first_conv is not None:
        made["filters.png"] = plots.plot_filters(first_conv.weight.detach())
    if checkpoint.history.get("epoch"):
        made["training_curves.png"] = plots.plot_history(checkpoint.history)
    for name, fig in made.items():
        written.append(plots.save_figure(fig, figures_dir / name))
        plt.close(fig)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, evaluate, write the report. Returns the exit status."""
    args = build_parser().parse_args(argv)
    device = select_device(args.device)
    out = ensure_writable_dir(args.out)
    checkpoint = load_checkpoint(args.checkpoint, device=device)
    result = evaluate_checkpoint(checkpoint, args.data_dir, device, args.batch_size)
    kind = "seed-format state_dict" if checkpoint.is_seed_format else "checkpoint"
    print(f"{kind} {checkpoint.path}: {checkpoint.arch} {checkpoint.model_options}, inputs '{checkpoint.input_scaling}'")
    print(f"test accuracy {result.accuracy:.4f} ({result.correct:,}/{result.total:,} correct), test loss {result.loss:.4f}")
    print(result.report.to_string(float_format=lambda v: f"{v:.4f}"))
    for path in write_report(checkpoint, result, out, args.data_dir, figures=not args.no_figures):
        print(f"wrote {path}")
    return 0


def console_main() -> int:
    """Entry point of the installed console script: user errors become one line and a non-zero status."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(console_main())
