"""MNIST itself: its facts (ten classes of 28x28 images, their pixel statistics) and its four IDX files found, checked, read.

The files are checked by header and size (a few bytes each, so on every load) and downloaded with torchvision when
missing. Importing this module loads neither torch nor torchvision, so a command can name the number of classes
before it knows it will need them. Notebooks import these names from :mod:`mnist_cnn.data`; the commands check
the published MD5s too, and download more carefully, before they read.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_cnn import DATA_DIR_ENV, DEFAULT_DATA_DIR
from mnist_cnn.errors import ConfigError, DataError
from mnist_cnn.text import display_name

if TYPE_CHECKING:  # annotations only: reading a file is the first thing that needs torch
    import torch

NUM_CLASSES = 10
IMAGE_SIZE = 28
CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(NUM_CLASSES))

#: Mean and standard deviation of MNIST training pixels on a [0, 1] scale.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

IMAGE_MAGIC = 2051  # IDX: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # IDX: unsigned bytes, 1 dimension

#: split -> (images file, labels file, number of items)
SPLITS: dict[str, tuple[str, str, int]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
RAW_FILES: tuple[str, ...] = tuple(name for images, labels, _ in SPLITS.values() for name in (images, labels))
#: raw file name -> number of items it holds
ITEM_COUNTS: dict[str, int] = {name: count for images, labels, count in SPLITS.values() for name in (images, labels)}

#: Seconds a download waits on a silent connection: without a network it fails in seconds rather than hangs.
DOWNLOAD_TIMEOUT_S = 20


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Choose the torchvision root: the argument, else ``$MNIST_DATA_DIR``, else ``data/`` in the project.

    The root holds ``MNIST/raw/<the four IDX files>``.

    Raises:
        ConfigError: ``data_dir`` or ``$MNIST_DATA_DIR`` is an empty string: an empty setting is more
            likely a mistake (an unset shell variable) than a wish for the default, where a machine
            online would start a download.
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


def split_files(splits: Sequence[str] | None = None) -> list[str]:
    """The raw file names of ``splits`` (all four files when ``None``).

    Raises:
        ConfigError: An unknown split name.
    """
    chosen = list(SPLITS) if splits is None else list(splits)
    unknown = [split for split in chosen if split not in SPLITS]
    if unknown:
        raise ConfigError(f"unknown split {unknown[0]!r}: choose 'train' or 'test'")
    return [name for split in chosen for name in SPLITS[split][:2]]


def _read_header(path: Path, length: int) -> list[int]:
    with path.open("rb") as handle:
        header = handle.read(length)
    if len(header) < length:
        raise DataError(f"MNIST file {display_name(path)} is truncated: {len(header)} bytes, shorter than its {length}-byte header")
    return [int.from_bytes(header[i : i + 4], "big") for i in range(0, length, 4)]


def check_idx_file(path: Path, expected_count: int | None = None) -> int:
    """Check one IDX file's magic number, dimensions and size: a few bytes read, so cheap enough for every load.

    Args:
        path: An MNIST images or labels file.
        expected_count: Number of items it must hold, if known.

    Returns:
        The number of items in the file.

    Raises:
        DataError: Naming the file and what is wrong with it.
        OSError: The file cannot be read.
    """
    is_images = "images" in path.name
    header_size = 16 if is_images else 8
    magic, *dims = _read_header(path, header_size)
    wanted_magic = IMAGE_MAGIC if is_images else LABEL_MAGIC
    if magic != wanted_magic:
        raise DataError(
            f"MNIST file {display_name(path)} is corrupt or not an IDX {'image' if is_images else 'label'} file "
            f"(magic number {magic}, expected {wanted_magic})"
        )
    count = dims[0]
    if is_images and tuple(dims[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"MNIST file {display_name(path)} holds {dims[1]}x{dims[2]} images, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    if expected_count is not None and count != expected_count:
        raise DataError(f"MNIST file {display_name(path)} says it holds {count} items, expected {expected_count}")
    expected_size = header_size + count * (IMAGE_SIZE * IMAGE_SIZE if is_images else 1)
    actual_size = path.stat().st_size
    if actual_size != expected_size:
        state = "truncated" if actual_size < expected_size else "corrupt (longer than its header says)"
        raise DataError(f"MNIST file {display_name(path)} is {state}: {actual_size} bytes, expected {expected_size}")
    return count


def unreadable(error: OSError, path: Path) -> DataError:
    """The one-line error for an MNIST file or folder the operating system will not let us read."""
    reason = error.strerror or type(error).__name__
    return DataError(
        f"cannot read MNIST data at {display_name(error.filename or path)}: {reason} "
        "(check the permissions of the data folder and its files)"
    )


def missing_files(root: str | os.PathLike[str], names: Sequence[str]) -> list[str]:
    """Those of the raw files ``names`` that are not in ``root``'s raw folder.

    Raises:
        DataError: The folder cannot be searched.
    """
    folder = raw_folder(root)
    try:
        return [name for name in names if not (folder / name).is_file()]
    except OSError as error:  # e.g. a folder without search permission
        raise unreadable(error, folder) from None


def missing_message(root: Path, missing: Sequence[str]) -> str:
    """What to do when ``missing`` files are not under ``root``: where they were looked for, and how to point elsewhere."""
    return (
        f"MNIST files not found in {display_name(raw_folder(root))} (missing: {', '.join(missing)}); the four files "
        f"{', '.join(RAW_FILES)} must be there: set {DATA_DIR_ENV} to a directory that holds MNIST/raw/ "
        f"with them, or pass --data-dir"
    )


def check_files(root: str | os.PathLike[str], splits: Sequence[str] | None = None) -> None:
    """Check that the files of ``splits`` (all four by default) are under ``root``, each with a sound header and size.

    Raises:
        DataError: A file is missing, unreadable, truncated or not what its name says; each file is checked
            against its split's known size, so images and labels cannot disagree.
    """
    names = split_files(splits)
    missing = missing_files(root, names)
    if missing:
        raise DataError(missing_message(Path(root), missing))
    for name in names:
        path = raw_folder(root) / name
        try:
            check_idx_file(path, expected_count=ITEM_COUNTS[name])
        except OSError as error:
            raise unreadable(error, path) from None


def find_mnist(data_dir: str | os.PathLike[str] | None = None, download: bool = True, splits: Sequence[str] | None = None) -> Path:
    """The MNIST root with the files of ``splits`` present and sound, downloading the missing ones when asked.

    Files that are present are never rewritten, so a read-only data root is fine.

    Args:
        data_dir: Root as for :func:`resolve_data_dir`.
        download: Download missing files with torchvision (needs internet).
        splits: Only these splits' files (default: all four).

    Returns:
        The resolved root.

    Raises:
        DataError: The files are missing and could not be downloaded, or are unreadable or damaged.
    """
    root = resolve_data_dir(data_dir)
    missing = missing_files(root, split_files(splits))
    if missing and download:
        download_missing(root, missing)
    check_files(root, splits)
    return root


def fetch_with_torchvision(folder: str | os.PathLike[str]) -> None:
    """Download and unpack the four MNIST archives into ``folder``'s raw folder; torchvision checks each archive's MD5.

    Raises:
        Exception: Whatever torchvision raises when a download fails (see :func:`download_failed`).
    """
    from torchvision import datasets  # here, not at the top: over a second, and most imports of this module never download

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


def download_missing(root: Path, missing: Sequence[str]) -> None:
    """Download MNIST into a scratch folder and move the ``missing`` files into ``root``'s raw folder.

    The scratch folder keeps the archives and a failed download's debris out of the data root.

    Raises:
        DataError: The download failed (no network, a refused archive) or the files could not be moved in.
    """
    try:
        with tempfile.TemporaryDirectory(prefix="mnist-download-") as scratch:
            fetch_with_torchvision(scratch)
            target = raw_folder(root)
            target.mkdir(parents=True, exist_ok=True)
            for name in missing:
                shutil.move(raw_folder(scratch) / name, target / name)
    except Exception as error:  # network failures arrive as URLError, OSError or RuntimeError
        raise download_failed(root, missing, error) from None


@dataclass
class MNISTArrays:
    """One split of MNIST as tensors: ``images`` uint8 ``[N, 28, 28]`` and ``labels`` int64 ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, count: int | None) -> MNISTArrays:
        """The first ``count`` examples (all of them when ``count`` is ``None``)."""
        if count is None:
            return self
        return MNISTArrays(images=self.images[:count], labels=self.labels[:count])


def load_split(split: str, data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> MNISTArrays:
    """Load one split (``"train"`` or ``"test"``) as tensors, after checking its two files' headers and sizes.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        data_dir: Root as for :func:`resolve_data_dir`.
        download: Download missing files (needs internet).

    Returns:
        The split's images (uint8) and labels (int64).

    Raises:
        ConfigError: An unknown split.
        DataError: The files are missing, unreadable or damaged.
    """
    root = find_mnist(data_dir, download=download, splits=[split])
    from torchvision.datasets.mnist import read_image_file, read_label_file

    # read the two checked files directly: torchvision's MNIST class insists on all four being present
    images_name, labels_name, _ = SPLITS[split]
    folder = raw_folder(root)
    try:
        images, labels = read_image_file(str(folder / images_name)), read_label_file(str(folder / labels_name))
    except OSError as error:
        raise unreadable(error, folder) from None
    return MNISTArrays(images=images, labels=labels.long())
