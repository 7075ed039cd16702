"""Command line: make sure the four MNIST files are present and sound, downloading the missing ones.

Example: ``python -m mnist_cnn.download --data-dir data`` (``make data``). Files already present are only
checked (magic number, size, MD5), never rewritten, so a read-only shared copy passes too.
"""

from __future__ import annotations

from collections.abc import Sequence

from mnist_cnn.tooling.cli.args import ArgumentParser, run_cli


def build_parser() -> ArgumentParser:
    """The ``download`` command's arguments."""
    parser = ArgumentParser(
        prog="python -m mnist_cnn.download",
        description="Download the MNIST files that are missing and check all four against the published MD5s.",
    )
    parser.add_argument("--data-dir", help="MNIST root holding MNIST/raw/ (default: $MNIST_DATA_DIR, else data/)")
    parser.add_argument("--no-download", action="store_true", help="only check the files that are there")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, download what is missing, check everything. Returns the exit status."""
    args = build_parser().parse_args(argv)
    # imported once the arguments are sound; torchvision itself loads only if a file must be downloaded
    from mnist_cnn.mnist import RAW_FILES, raw_folder
    from mnist_cnn.text import display_name
    from mnist_cnn.tooling.safety.mnist_files import ensure_mnist

    root = ensure_mnist(args.data_dir, download=not args.no_download)
    print(f"MNIST files in {display_name(raw_folder(root))} are complete and match the published MD5s: {', '.join(RAW_FILES)}")
    return 0


def console_main() -> int:
    """Entry point: user errors become one line and a non-zero status."""
    return run_cli(main)


if __name__ == "__main__":
    raise SystemExit(console_main())
