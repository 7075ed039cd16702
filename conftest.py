"""Test-session set-up shared by the unit tests and the notebooks that nbval executes.

Set before anything imports ``mnist_cnn`` (and inherited by notebook kernels):
- ``MNIST_DATA_DIR``: ``../shared/data`` beside the checkout when it exists and nothing else was set,
  because tests never download.
- ``MNIST_CNN_ARTIFACTS``: ``build/test-artifacts``, so the notebooks' models and reports never
  overwrite the ones a user trained under ``models/`` and ``reports/``.
- ``MPLBACKEND=Agg``: figures render off-screen.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SHARED_DATA = ROOT.parent / "shared" / "data"

if "MNIST_DATA_DIR" not in os.environ and (SHARED_DATA / "MNIST" / "raw").is_dir():
    os.environ["MNIST_DATA_DIR"] = str(SHARED_DATA)
os.environ.setdefault("MNIST_CNN_ARTIFACTS", str(ROOT / "build" / "test-artifacts"))
os.environ.setdefault("MPLBACKEND", "Agg")
