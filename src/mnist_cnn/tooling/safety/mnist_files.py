"""MNIST's four IDX files on disk: found, checked (header, size, MD5), fetched when missing, read as tensors."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from mnist_cnn.errors import ConfigError, DataError
from mnist_cnn.mnist import IMAGE_SIZE
from mnist_cnn import DATA_DIR_ENV, DEFAULT_DATA_DIR
from mnist_cnn.text import display_name

IMAGE_MAGIC = 2051  # IDX: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # IDX: unsigned bytes, 1 dimension

#: split -> (images file, labels file, number of items)
SPLITS: dict[str, tuple[str, str, int]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
RAW_FILES: tuple[str, ...] = tuple(name for images, labels, _ in SPLITS.values() for name in (images, labels))

#: MD5 of the uncompressed files, the same bytes torchvision's published archives unpack to.
RAW_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

_verified: dict[tuple[str, int, int], None] = {}


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


def _read_header(path: Path, length: int) -> list[int]:
    with path.open("rb") as handle:
        header = handle.read(length)
    if len(header) < length:
        raise DataError(f"MNIST file {display_name(path)} is truncated: {len(header)} bytes, shorter than its {length}-byte header")
    return [int.from_bytes(header[i : i + 4], "big") for i in range(0, length, 4)]


def check_idx_file(path: Path, expected_count: int | None = None, checksum: bool = True) -> int:
    """Check one IDX file's magic number, dimensions, size and (optionally) MD5.

    Args:
        path: An MNIST images or labels file.
        expected_count: Number of items it must hold, if known.
        checksum: Also compare the MD5 with the published MNIST files.

    Returns:
        The number of items in the file.

    Raises:
        DataError: Naming the file and what is wrong with it.
    """
    is_images = "images" in path.name
    magic, *dims = _read_header(path, 16 if is_images else 8)
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
    header_size = 16 if is_images else 8
    expected_size = header_size + count * (IMAGE_SIZE * IMAGE_SIZE if is_images else 1)
    actual_size = path.stat().st_size
    if actual_size != expected_size:
        state = "truncated" if actual_size < expected_size else "corrupt (longer than its header says)"
        raise DataError(f"MNIST file {display_name(path)} is {state}: {actual_size} bytes, expected {expected_size}")
    if checksum and path.name in RAW_MD5:
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        if digest != RAW_MD5[path.name]:
            raise DataError(f"MNIST file {display_name(path)} is corrupt: its MD5 {digest} differs from the published {RAW_MD5[path.name]}")
    return count


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


def _unreadable(error: OSError, path: Path) -> DataError:
    """The one-line error for an MNIST file or folder the operating system will not let us read."""
    reason = error.strerror or type(error).__name__
    return DataError(
        f"cannot read MNIST data at {display_name(error.filename or path)}: {reason} "
        "(check the permissions of the data folder and its files)"
    )


def _missing_files(root: str | os.PathLike[str], names: Sequence[str]) -> list[str]:
    folder = raw_folder(root)
    try:
        return [name for name in names if not (folder / name).is_file()]
    except OSError as error:  # e.g. a folder without search permission
        raise _unreadable(error, folder) from None


def check_raw_files(root: str | os.PathLike[str], checksum: bool = True, splits: Sequence[str] | None = None) -> None:
    """Check the MNIST files of ``splits`` (all four by default) under ``root`` (results cached per file size and mtime).

    Args:
        root: The data root.
        checksum: Also compare MD5s with the published files.
        splits: ``["test"]`` checks only the test files, for a command that reads nothing else.

    Raises:
        DataError: A file is missing, unreadable, truncated, corrupt, or images and labels disagree.
    """
    folder = raw_folder(root)
    missing = _missing_files(root, split_files(splits))
    if missing:
        raise DataError(_missing_message(Path(root), missing))
    # Each file is checked against its split's known size, so images and labels cannot disagree.
    for split in SPLITS if splits is None else splits:
        images_name, labels_name, expected = SPLITS[split]
        for name in (images_name, labels_name):
            path = folder / name
            try:
                stat = path.stat()
                key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
                if key not in _verified:
                    check_idx_file(path, expected_count=expected, checksum=checksum)
                    _verified[key] = None
            except OSError as error:
                raise _unreadable(error, path) from None


def _missing_message(root: Path, missing: list[str]) -> str:
    return (
        f"MNIST files not found in {display_name(raw_folder(root))} (missing: {', '.join(missing)}); the four files "
        f"{', '.join(RAW_FILES)} must be there: set {DATA_DIR_ENV} to a directory that holds MNIST/raw/ "
        f"with them, or pass --data-dir"
    )


def ensure_mnist(data_dir: str | os.PathLike[str] | None = None, download: bool = True, splits: Sequence[str] | None = None) -> Path:
    """Make sure the MNIST files are present and sound, downloading them if absent.

    Files that are present are never rewritten, so a read-only data root is fine.

    Args:
        data_dir: Root as for :func:`resolve_data_dir`.
        download: Try torchvision's download when files are missing.
        splits: Only these splits' files (default: all four).

    Returns:
        The resolved root.

    Raises:
        DataError: The files are missing and could not be downloaded, or are corrupt.
    """
    root = resolve_data_dir(data_dir)
    missing = _missing_files(root, split_files(splits))
    if missing and download:
        _download(root, missing)
    check_raw_files(root, splits=splits)
    return root


def _download(root: Path, missing: list[str]) -> None:
    """Download with torchvision into a scratch folder, check, then move the files in: a failed download leaves nothing behind."""
    from torchvision import datasets  # here and in the loaders, not at the top: over a second, and predict never needs it

    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)  # without a network, fail in seconds rather than hang
    try:
        with tempfile.TemporaryDirectory(prefix="mnist-download-") as scratch:
            downloaded = raw_folder(scratch)
            try:
                for train in (True, False):
                    datasets.MNIST(scratch, train=train, download=True)
            except Exception:
                _check_downloaded(downloaded, missing)  # a file that arrived but cannot be read: name it and say why
                raise
            # a mirror may serve wrong bytes under a right name: check before the data root sees them
            _check_downloaded(downloaded, missing)
            target = raw_folder(root)
            target.mkdir(parents=True, exist_ok=True)
            for name in missing:
                # copy under a temporary name and rename, so an interrupted copy never leaves a partial file behind
                partial = target / f".{name}.download"
                try:
                    shutil.copyfile(downloaded / name, partial)
                    os.replace(partial, target / name)
                finally:
                    partial.unlink(missing_ok=True)
    except DataError as error:
        target = display_name(raw_folder(root))
        raise DataError(f"a downloaded file failed its check, so nothing was written to {target}: {error}") from None
    except Exception as error:  # network failures arrive as URLError, OSError or RuntimeError
        # torchvision's message spans lines ("Error downloading X.gz:", "Tried URL, got:", reason): keep them all, on one line
        lines = [line.strip().rstrip(":") for line in str(error).splitlines() if line.strip()]
        reason = ": ".join(lines) if lines else type(error).__name__
        raise DataError(f"{_missing_message(root, missing)}; downloading them failed ({reason})") from None
    finally:
        socket.setdefaulttimeout(previous_timeout)


def _check_downloaded(folder: Path, names: list[str]) -> None:
    """Check those of ``names`` that are in ``folder`` (raises :class:`DataError` naming the first bad one)."""
    counts = {name: count for images, labels, count in SPLITS.values() for name in (images, labels)}
    for name in names:
        if (folder / name).is_file():
            check_idx_file(folder / name, expected_count=counts[name])


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
    """Load one split (``"train"`` or ``"test"``) as uint8 tensors, after checking the files.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        data_dir: Root as for :func:`resolve_data_dir`.
        download: Download missing files (needs internet).

    Returns:
        The split's images and labels.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: choose 'train' or 'test'")
    from torchvision.datasets.mnist import read_image_file, read_label_file

    root = ensure_mnist(data_dir, download=download, splits=[split])
    # read the two checked files directly: torchvision's MNIST class insists on all four being present
    images_name, labels_name, _ = SPLITS[split]
    folder = raw_folder(root)
    try:
        images, labels = read_image_file(str(folder / images_name)), read_label_file(str(folder / labels_name))
    except OSError as error:
        raise _unreadable(error, folder) from None
    return MNISTArrays(images=images, labels=labels.long())
