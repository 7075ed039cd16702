"""Project paths, derived from this file's location so they hold from any working directory."""

from __future__ import annotations

import os
from pathlib import Path

#: Root of the repository (``src/mnist_cnn/paths.py`` -> two levels up from the package).
PROJECT_ROOT: Path = Path(__file__).resolve().parents[2]

#: Where generated models and reports go. Tests point this elsewhere (``MNIST_CNN_ARTIFACTS``)
#: so running them never overwrites a model a user trained.
ARTIFACTS_ROOT: Path = Path(os.environ.get("MNIST_CNN_ARTIFACTS", PROJECT_ROOT)).resolve()

DEFAULT_DATA_DIR: Path = PROJECT_ROOT / "data"
MODELS_DIR: Path = ARTIFACTS_ROOT / "models"
REPORTS_DIR: Path = ARTIFACTS_ROOT / "reports"
FIGURES_DIR: Path = REPORTS_DIR / "figures"
NOTEBOOKS_DIR: Path = PROJECT_ROOT / "notebooks"

#: Environment variable naming a directory that holds ``MNIST/raw/`` (torchvision's layout).
DATA_DIR_ENV = "MNIST_DATA_DIR"
