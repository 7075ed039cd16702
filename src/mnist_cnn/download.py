"""``python -m mnist_cnn.download``: the command's face; it lives in :mod:`mnist_cnn.tooling.cli.download`."""

from mnist_cnn.tooling.cli.download import console_main

if __name__ == "__main__":
    raise SystemExit(console_main())
