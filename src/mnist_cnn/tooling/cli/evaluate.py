"""Command line: a checkpoint's report on the MNIST test set (metrics.json, per-class table, figures).

Example: ``python -m mnist_cnn.evaluate --checkpoint models/default/model.pt``
"""

from __future__ import annotations

from argparse import Namespace
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_cnn import REPORTS_DIR
from mnist_cnn.devices import DEVICE_CHOICES

# Only modules that import without torch: --help and usage errors answer before the heavy libraries load.
from mnist_cnn.tooling.cli.args import ArgumentParser, positive_int, run_cli

if TYPE_CHECKING:
    import torch


def build_parser() -> ArgumentParser:
    """The ``evaluate`` command's arguments."""
    parser = ArgumentParser(prog="python -m mnist_cnn.evaluate", description="Evaluate a trained model on the MNIST test set.")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="a model.pt written by mnist_cnn.train, or a bare VGG state_dict such as the seed's mnist_VGG.pth",
    )
    parser.add_argument("--data-dir", help="MNIST root holding MNIST/raw/ (default: $MNIST_DATA_DIR, else data/)")
    parser.add_argument(
        "--out",
        type=Path,
        default=REPORTS_DIR,
        help="where metrics.json and figures/ are written (not a training run's folder: its metrics.json is the run's record)",
    )
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--batch-size", type=positive_int, default=1000, help="images per forward pass")
    parser.add_argument("--no-figures", action="store_true", help="write metrics only")
    parser.add_argument(
        "--tta",
        action="store_true",
        help="also measure with test-time augmentation: logits averaged over the image and 4 one-pixel shifts (5x the inference time)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, evaluate, write the report. Returns the exit status."""
    args = build_parser().parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")  # a command writes files; it never opens windows

    from mnist_cnn.devices import select_device
    from mnist_cnn.tooling.runctl.rundir import RunLock, check_not_a_run_folder, ensure_writable_dir

    check_not_a_run_folder(args.out)
    device = select_device(args.device)
    out = ensure_writable_dir(args.out)
    with RunLock(out):  # held while the report is made: no training run can claim the folder meanwhile, nor hold it now
        check_not_a_run_folder(out)
        evaluate_into(args, out, device)
    return 0


def evaluate_into(args: Namespace, out: Path, device: torch.device) -> None:
    """Load the checkpoint, measure it on ``device`` on the test set, print the results and write the report into ``out``."""
    from mnist_cnn.checkpoint import load_checkpoint
    from mnist_cnn.text import display_name
    from mnist_cnn.tooling.safety.mnist_files import ensure_mnist
    from mnist_cnn.tooling.safety.safe_load import read_checkpoint_file

    checkpoint = load_checkpoint(args.checkpoint, device=device, reader=read_checkpoint_file)
    ensure_mnist(args.data_dir, splits=["test"])  # the test files there and matching the published MD5s; nothing else is read
    # The measuring and plotting libraries (seconds to import) load only once the checkpoint and data are accepted:
    # a refused file is answered without them.
    from mnist_cnn.tooling.cli.measure import measure_checkpoint
    from mnist_cnn.tooling.cli.report import write_report

    result = measure_checkpoint(checkpoint, args.data_dir, device, args.batch_size)
    kind = "seed-format state_dict" if checkpoint.is_seed_format else "checkpoint"
    print(f"{kind} {display_name(checkpoint.path)}: {checkpoint.arch} {checkpoint.model_options}, inputs '{checkpoint.input_scaling}'")
    print(f"test accuracy {result.accuracy:.4f} ({result.correct:,}/{result.total:,} correct), test loss {result.loss:.4f}")
    print(result.report.to_string(float_format=lambda v: f"{v:.4f}"))
    extra = {}
    if args.tta:
        from mnist_cnn.tta import SHIFTS, tta_test_accuracy

        extra["test_accuracy_tta"] = tta_test_accuracy(checkpoint.model, checkpoint.input_scaling, args.data_dir, device, args.batch_size)
        print(f"test accuracy with test-time augmentation ({len(SHIFTS)} views): {extra['test_accuracy_tta']:.4f}")
    for path in write_report(checkpoint, result, out, args.data_dir, figures=not args.no_figures, extra=extra):
        print(f"wrote {display_name(path)}")


def console_main() -> int:
    """Entry point of the installed console script: user errors become one line and a non-zero status."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(console_main())
