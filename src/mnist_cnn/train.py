"""Command line: train a model with a preset and save ``model.pt`` and ``metrics.json``.

Example: ``python -m mnist_cnn.train --preset default --epochs 3 --seed 1``
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from mnist_cnn.cli import ArgumentParser, positive_float, positive_int, run_cli
from mnist_cnn.config import MODELS_DIR
from mnist_cnn.experiment import PRESETS, fit, get_preset, save_run
from mnist_cnn.utils import DEVICE_CHOICES, ensure_writable_dir, select_device

SMOKE_TRAIN_SIZE = 2_000
SMOKE_TEST_SIZE = 1_000


def build_parser() -> ArgumentParser:
    """The ``train`` command's arguments."""
    parser = ArgumentParser(prog="python -m mnist_cnn.train", description="Train a CNN on MNIST and save it.")
    parser.add_argument("--preset", default="default", choices=list(PRESETS), help="training recipe")
    parser.add_argument("--epochs", type=positive_int, help="number of epochs (default: the preset's)")
    parser.add_argument("--batch-size", type=positive_int, help="training batch size (default: the preset's)")
    parser.add_argument("--lr", type=positive_float, help="(peak) learning rate (default: the preset's)")
    parser.add_argument("--seed", type=int, default=42, help="random seed")
    parser.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICE_CHOICES)} or cuda:N")
    parser.add_argument("--data-dir", help="MNIST root holding MNIST/raw/ (default: $MNIST_DATA_DIR, else data/)")
    parser.add_argument("--out", type=Path, help="output directory (default: models/<preset>)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"quick check: 1 epoch on {SMOKE_TRAIN_SIZE} training and {SMOKE_TEST_SIZE} test images")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, train, save. Returns the exit status."""
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
    if args.smoke:
        overrides.update(epochs=1, train_size=SMOKE_TRAIN_SIZE, test_size=SMOKE_TEST_SIZE)
        if PRESETS[args.preset].pipeline == "torchvision":
            overrides["pipeline"] = "memory"
    config = get_preset(args.preset, **overrides)
    device = select_device(args.device)
    out = ensure_writable_dir(args.out or MODELS_DIR / args.preset)  # fail before training, not after
    log = None if args.quiet else print
    if log:
        log(f"training preset {config.preset!r}: {config.arch} {config.model_options}, {config.epochs} epoch(s), "
            f"batch {config.batch_size}, {config.optimizer} lr {config.lr}, seed {config.seed}")
    result = fit(config, data_dir=args.data_dir, device=device, progress=False if args.quiet else None, log=log)
    model_path, metrics_path = save_run(result, out, {"total_seconds": time.perf_counter() - started})
    m = result.metrics
    print(f"test accuracy {m['test_accuracy']:.4f}, test loss {m['test_loss']:.4f}, "
          f"training {m['train_seconds']:.1f}s on {m['device']} ({m['precision']})")
    print(f"saved {model_path} and {metrics_path}")
    return 0


def console_main() -> int:
    """Entry point of the installed console script: user errors become one line and a non-zero status."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(console_main())
