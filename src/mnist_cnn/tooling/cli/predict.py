"""Command line: classify your own digit images (photos or scans) with a trained model.

Example: ``python -m mnist_cnn.predict --checkpoint models/default/model.pt my_digit.jpg scans/ --top-k 3``

Directories are expanded to their image files by :mod:`mnist_cnn.tooling.cli.sources`. Each file is opened within
bounds (:mod:`mnist_cnn.tooling.safety.images`), prepared as MNIST was made (:mod:`mnist_cnn.digits.preprocess`) and
classified as a stream (:mod:`mnist_cnn.tooling.cli.stream`: each image is reduced to 28x28 as soon as it is read,
so memory stays flat in the number of files); this module only parses arguments and prints. File names are printed
escaped, and output never fails on a name that is not valid UTF-8.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_cnn.devices import DEVICE_CHOICES
from mnist_cnn.mnist import NUM_CLASSES
from mnist_cnn.text import display_name, escape_text

# Only modules that import without torch: --help and usage errors answer before the heavy libraries load.
from mnist_cnn.tooling.cli.args import ArgumentParser, escape_output, number_argument, positive_int, run_cli

if TYPE_CHECKING:
    from mnist_cnn.digits.inference import Prediction


def top_k_count(text: str) -> int:
    """``argparse`` type: how many digits to list, 1 to 10."""
    return number_argument(text, whole=True, low=1, high=NUM_CLASSES)


def json_entry(result: Prediction) -> dict[str, Any]:
    """A result as ``--json`` prints it: ``file`` and ``error`` (escaped), ``digit``, ``probability``, ``top_k`` (dicts),
    ``not_a_digit`` (bool) and ``not_a_digit_reason``."""
    return {
        "file": display_name(result.file),
        "digit": result.digit,
        "probability": result.probability,
        "top_k": [{"digit": d, "probability": p} for d, p in result.top_k],
        "not_a_digit": result.not_a_digit is not None,
        "not_a_digit_reason": result.not_a_digit,
        "error": None if result.error is None else escape_text(result.error),
    }


def build_parser() -> ArgumentParser:
    """The ``predict`` command's arguments."""
    parser = ArgumentParser(
        prog="python -m mnist_cnn.predict",
        description="Classify digit images (photos or scans of any size up to 64 megapixels decoded, dark-on-light or "
        "light-on-dark). Inputs unlike any MNIST digit are marked 'not a digit?'. "
        "Exit status 1 when any file could not be classified.",
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        help="a model.pt written by mnist_cnn.train, or a bare VGG state_dict such as the seed's mnist_VGG.pth",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files, or directories of them")
    parser.add_argument("--top-k", type=top_k_count, default=3, help="how many of the most likely digits to list")
    parser.add_argument("--json", action="store_true", help="print a JSON list with one object per file")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, classify, print as results come. Returns the exit status (1 when any file failed)."""
    args = build_parser().parse_args(argv)
    escape_output()
    from mnist_cnn.checkpoint import load_checkpoint
    from mnist_cnn.devices import select_device
    from mnist_cnn.digits.inference import format_prediction
    from mnist_cnn.tooling.cli.sources import prediction_inputs
    from mnist_cnn.tooling.cli.stream import iter_predictions
    from mnist_cnn.tooling.safety.safe_load import read_checkpoint_file

    # run_cli prints any error in one escaped line, so a path with a newline or an escape sequence is safe to quote
    checkpoint = load_checkpoint(args.checkpoint, device=select_device(args.device), reader=read_checkpoint_file)
    failed = total = 0
    if args.json:
        # A JSON list, one object per line, written as results come (never all held in memory).
        print("[", end="")
    inputs = prediction_inputs(args.images)  # directories expanded lazily, as the files are classified
    for result in iter_predictions(checkpoint, inputs, top_k=args.top_k, batch_size=args.batch_size):
        total += 1
        if args.json:
            print(("\n" if total == 1 else ",\n") + json.dumps(json_entry(result)), end="")
        elif result.ok:
            print(format_prediction(result), flush=True)
        if not result.ok:
            failed += 1
            print(f"error: {format_prediction(result).replace(': error: ', ': ', 1)}", file=sys.stderr, flush=True)
    if args.json:
        print("\n]")
    if failed:
        print(f"{failed} of {total} file(s) could not be classified", file=sys.stderr)
        return 1
    return 0


def console_main() -> int:
    """Entry point of the installed console script: user errors become one line and a non-zero status."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(console_main())
