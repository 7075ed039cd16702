"""``python -m mnist_cnn.train``: the command's face; it lives in :mod:`mnist_cnn.tooling.cli.train`."""

from mnist_cnn.tooling.cli.train import console_main

if __name__ == "__main__":
    raise SystemExit(console_main())
