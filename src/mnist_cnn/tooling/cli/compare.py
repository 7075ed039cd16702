"""Command line: every training run under ``models/`` in one table (settings, accuracies, time, numerics).

Example: ``python -m mnist_cnn.compare --models-dir models --sort test_accuracy``

The table comes from :func:`mnist_cnn.catalog.runs_table`; this module only parses arguments and prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mnist_cnn import MODELS_DIR
from mnist_cnn.errors import ConfigError
from mnist_cnn.files import atomic_write_bytes
from mnist_cnn.text import display_name
from mnist_cnn.tooling.cli.args import ArgumentParser, run_cli

SORT_COLUMNS = ("run", "preset", "seed", "val_accuracy", "test_accuracy", "train_seconds")
#: Best first for these; the others sort ascending.
DESCENDING = ("val_accuracy", "test_accuracy")


def build_parser() -> ArgumentParser:
    """The ``compare`` command's arguments."""
    parser = ArgumentParser(
        prog="python -m mnist_cnn.compare",
        description="Show every run under a models folder side by side: preset, seed, epochs, batch size, learning rate, "
        "validation and test accuracy, training seconds, device and precision. Runs from older versions or with "
        "missing files are listed with what is known and a note.",
    )
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=MODELS_DIR,
        metavar="DIR",
        help="folder whose subfolders are runs (each with metrics.json, model.pt or last.pt)",
    )
    parser.add_argument(
        "--sort", choices=SORT_COLUMNS, default="run", help="column to sort by (accuracies best first, the others ascending)"
    )
    parser.add_argument("--csv", type=Path, metavar="FILE", help="also write the table to this CSV file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, read the runs, print the table. Returns the exit status."""
    args = build_parser().parse_args(argv)
    if not args.models_dir.is_dir():
        raise ConfigError(
            f"{display_name(args.models_dir)} is not a folder (train a run first: python -m mnist_cnn.train, or pass --models-dir)"
        )
    # pandas (through catalog) only after the arguments are known good: --help and mistakes answer at once
    from mnist_cnn.tooling.cli.catalog import format_table, runs_table

    table = runs_table(args.models_dir)
    if table.empty:
        print(f"no runs under {display_name(args.models_dir)} (a run is a folder with metrics.json, model.pt or last.pt)")
        return 0
    table = table.sort_values(args.sort, ascending=args.sort not in DESCENDING, na_position="last", kind="stable")
    print(format_table(table))
    if args.csv is not None:
        try:
            args.csv.parent.mkdir(parents=True, exist_ok=True)
            # surrogateescape: a folder name that is not UTF-8 is written back as the bytes it is on disk; written whole
            # beside the old file and renamed over it, so a failed write leaves the previous table as it was
            atomic_write_bytes(args.csv, table.to_csv(index=False).encode("utf-8", errors="surrogateescape"))
        except OSError as error:
            raise ConfigError(f"cannot write {display_name(args.csv)}: {error.strerror or error}") from None
        print(f"wrote {display_name(args.csv)}")
    return 0


def console_main() -> int:
    """Entry point of the installed console script: user errors become one line and a non-zero status."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(console_main())
