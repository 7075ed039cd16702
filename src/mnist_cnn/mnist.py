"""MNIST's facts (ten classes of 28x28 images, their pixel statistics) and where its four IDX files are found.

Importing this module loads no torch, so a command can name the number of classes before it knows it needs them.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mnist_cnn import DATA_DIR_ENV, DEFAULT_DATA_DIR
from mnist_cnn.errors import ConfigError, DataError
from mnist_cnn.text import display_name

NUM_CLASSES = 10
IMAGE_SIZE = 28
CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(NUM_CLASSES))
#: Mean and standard deviation of MNIST training pixels on a [0, 1] scale.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
#: How pixels are scaled for the model (:func:`mnist_cnn.data.scale_images`): to [0, 1], or standardised with the two above.
INPUT_SCALINGS: tuple[str, ...] = ("unit", "standard")

#: split -> (images file, labels file, number of items)
SPLITS: dict[str, tuple[str, str, int]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
RAW_FILES: tuple[str, ...] = tuple(name for images, labels, _ in SPLITS.values() for name in (images, labels))
#: Seconds a download waits on a silent connection: without a network it fails in seconds rather than hangs.
DOWNLOAD_TIMEOUT_S = 20


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The MNIST root, which holds ``MNIST/raw/<the four IDX files>``: ``data_dir``, else ``$MNIST_DATA_DIR``, else ``data/``.

    Raises:
        ConfigError: An empty ``data_dir`` or ``$MNIST_DATA_DIR``, more likely an unset shell variable than a wish for the default.
    """
    if data_dir is not None:
        if str(data_dir) == "":
            raise ConfigError("the data directory is an empty string: pass --data-dir with a directory that holds MNIST/raw/")
        return Path(data_dir).expanduser()
    from_env = os.environ.get(DATA_DIR_ENV)
    if from_env is not None:
        if from_env.strip() == "":
            raise ConfigError(f"{DATA_DIR_ENV} is set but empty: set it to a directory that holds MNIST/raw/, or unset it to use data/")
        return Path(from_env).expanduser()
    return DEFAULT_DATA_DIR


def raw_folder(root: str | os.PathLike[str]) -> Path:
    """The folder where torchvision keeps the IDX files under ``root``."""
    return Path(root) / "MNIST" / "raw"


def unreadable(error: OSError, path: Path) -> DataError:
    """The one-line error for an MNIST file or folder the operating system will not let us read."""
    reason = error.strerror or type(error).__name__
    return DataError(
        f"cannot read MNIST data at {display_name(error.filename or path)}: {reason} "
        "(check the permissions of the data folder and its files)"
    )


def missing_message(root: Path, missing: Sequence[str]) -> str:
    """What to do when ``missing`` files are not under ``root``: where they were looked for, and how to point elsewhere."""
    return (
        f"MNIST files not found in {display_name(raw_folder(root))} (missing: {', '.join(missing)}); the four files "
        f"{', '.join(RAW_FILES)} must be there: set {DATA_DIR_ENV} to a directory that holds MNIST/raw/ "
        f"with them, or pass --data-dir"
    )


def fetch_with_torchvision(folder: str | os.PathLike[str]) -> None:
    """Download and unpack the four MNIST archives into ``folder``'s raw folder; torchvision checks each archive's MD5."""
    from torchvision import datasets  # over a second to import, and most uses of this module never download

    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        for train in (True, False):
            datasets.MNIST(folder, train=train, download=True)
    finally:
        socket.setdefaulttimeout(previous_timeout)


def download_failed(root: Path, missing: Sequence[str], error: BaseException) -> DataError:
    """The one-line error for a failed download: the files still missing, and torchvision's reason on one line."""
    # torchvision's message spans lines ("Error downloading X.gz:", "Tried URL, got:", reason): keep them all, on one line
    lines = [line.strip().rstrip(":") for line in str(error).splitlines() if line.strip()]
    reason = ": ".join(lines) if lines else type(error).__name__
    return DataError(f"{missing_message(root, missing)}; downloading them failed ({reason})")


def find_mnist(data_dir: str | os.PathLike[str] | None = None, names: Sequence[str] = RAW_FILES) -> Path:
    """The MNIST root (as :func:`resolve_data_dir` chooses it) holding the raw files ``names``, the missing ones downloaded.

    The download goes to a scratch folder first, so the data root receives the files and no debris; files present
    are never rewritten, so a read-only root is fine. ``python -m mnist_cnn.download`` checks more (the MD5s).

    Raises:
        DataError: The files are missing and could not be downloaded, or cannot be read.
    """
    root = resolve_data_dir(data_dir)
    try:
        missing = [name for name in names if not (raw_folder(root) / name).is_file()]
    except OSError as error:  # e.g. a folder without search permission
        raise unreadable(error, raw_folder(root)) from None
    if missing:
        try:
            with tempfile.TemporaryDirectory(prefix="mnist-download-") as scratch:
                fetch_with_torchvision(scratch)
                raw_folder(root).mkdir(parents=True, exist_ok=True)
                for name in missing:
                    shutil.move(raw_folder(scratch) / name, raw_folder(root) / name)
        except Exception as error:  # network failures arrive as URLError, OSError or RuntimeError
            raise download_failed(root, missing, error) from None
    return root
