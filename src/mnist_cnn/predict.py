"""``python -m mnist_cnn.predict``: the command's face; it lives in :mod:`mnist_cnn.tooling.cli.predict`."""

from mnist_cnn.tooling.cli.predict import console_main

if __name__ == "__main__":
    raise SystemExit(console_main())
