"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from mnist_cnn.mnist import RAW_FILES, raw_folder, resolve_data_dir

SEED_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "seed" / "mnist_VGG.pth"


def _require(path: Path, what: str) -> Path:
    """Skip when ``path`` is absent on a developer's machine, but fail in CI where it must exist."""
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{what} not found at {path}; CI must provide it")
        pytest.skip(f"{what} not found at {path}")
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The MNIST root the tests read (``$MNIST_DATA_DIR``, set by the root conftest)."""
    root = resolve_data_dir()
    _require(raw_folder(root) / RAW_FILES[0], "MNIST data")
    return root


@pytest.fixture(scope="session")
def seed_weights() -> Path:
    """The seed project's published ``state_dict``."""
    return _require(SEED_WEIGHTS, "the seed project's weights")


@pytest.fixture
def data_copy(tmp_path: Path, data_dir: Path) -> Path:
    """A writable copy of the MNIST root, for tests that damage files."""
    target = raw_folder(tmp_path / "data")
    target.mkdir(parents=True)
    for name in RAW_FILES:
        shutil.copyfile(raw_folder(data_dir) / name, target / name)
    return tmp_path / "data"


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torchvision's download fail at once (connection refused), as on a machine without internet."""
    from torchvision import datasets

    monkeypatch.setattr(datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
