"""``python -m mnist_cnn.compare``: the command's face; it lives in :mod:`mnist_cnn.tooling.cli.compare`."""

from mnist_cnn.tooling.cli.compare import console_main

if __name__ == "__main__":
    raise SystemExit(console_main())
