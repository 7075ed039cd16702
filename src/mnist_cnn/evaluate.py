"""``python -m mnist_cnn.evaluate``: the command's face; it lives in :mod:`mnist_cnn.tooling.cli.evaluate`."""

from mnist_cnn.tooling.cli.evaluate import console_main

if __name__ == "__main__":
    raise SystemExit(console_main())
