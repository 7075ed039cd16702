"""mnist_cnn: a VGG-style convolutional network on MNIST, trained and studied from notebooks.

The package is two layers. The study, what the notebooks import, sits at this level and in ``digits/``; the
commands and their safeguards sit in ``tooling/``, which imports the study and is never imported by it.
The project's paths are derived from this file's location, so they hold from any working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"

#: Root of the repository (``src/mnist_cnn/__init__.py`` -> two levels up from the package).
PROJECT_ROOT: Path = Path(__file__).resolve().parents[2]

#: Where generated models and reports go. Tests point this elsewhere (``MNIST_CNN_ARTIFACTS``)
#: so running them never overwrites a model a user trained.
ARTIFACTS_ROOT: Path = Path(os.environ.get("MNIST_CNN_ARTIFACTS", PROJECT_ROOT)).resolve()

DEFAULT_DATA_DIR: Path = PROJECT_ROOT / "data"
MODELS_DIR: Path = ARTIFACTS_ROOT / "models"
#: A run folder's checkpoints: the finished run's, and the one rewritten after every epoch (:mod:`mnist_cnn.checkpoint`
#: writes them as safetensors files; the names keep ``.pt``). Here, not there, so modules that must not load torch can name them.
MODEL_FILE = "model.pt"
LAST_FILE = "last.pt"
#: What ``payload["format"]`` says in every checkpoint this project writes, and the version it writes (1 was a torch pickle).
CHECKPOINT_FORMAT = "mnist-cnn-checkpoint"
CHECKPOINT_VERSION = 2
REPORTS_DIR: Path = ARTIFACTS_ROOT / "reports"
NOTEBOOKS_DIR: Path = PROJECT_ROOT / "notebooks"

#: Environment variable naming a directory that holds ``MNIST/raw/`` (torchvision's layout).
DATA_DIR_ENV = "MNIST_DATA_DIR"
