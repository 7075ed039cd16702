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

import pytest

ROOT = Path(__file__).resolve().parent
SHARED_DATA = ROOT.parent / "shared" / "data"

if "MNIST_DATA_DIR" not in os.environ and (SHARED_DATA / "MNIST" / "raw").is_dir():
    os.environ["MNIST_DATA_DIR"] = str(SHARED_DATA)
os.environ.setdefault("MNIST_CNN_ARTIFACTS", str(ROOT / "build" / "test-artifacts"))
os.environ.setdefault("MPLBACKEND", "Agg")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Tests in parallel (pytest -n 2, as `make test` runs them): torch keeps a thread per core, but its OpenMP
    # threads sleep when they wait instead of spinning. Spinning threads of two workers on two cores cost each
    # other 3-5x; sleeping ones cost nothing measurable, and a worker whose neighbour is waiting (on a browser, a
    # command starting) gets both cores. Set before anything imports torch; kernels and commands inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


#: Notebooks run on one worker, in order: 4-6 load the model notebook 3 saves (alone, each would train its own).
#: Notebooks 1, 2 and 7 need nothing another saves, so each is a group of its own and may run beside them.
MODEL_NOTEBOOKS = ("03_training.ipynb", "04_evaluation.ipynb", "05_inside_the_network.ipynb", "06_draw_a_digit.ipynb")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, keep each test file on one worker (its module fixtures are built once), and notebooks
    3-6 together, in order, in one kernel each (see :data:`MODEL_NOTEBOOKS`)."""
    for item in items:
        group = "model-notebooks" if item.path.name in MODEL_NOTEBOOKS else item.path.name
        item.add_marker(pytest.mark.xdist_group(group))
