"""MNIST's four files checked as a command needs them: header, size and published MD5, and downloaded without a partial file.

The study's own loader (:func:`mnist_cnn.data.load_split`) refuses a file whose header or size is not MNIST's in one
line and downloads plainly; the commands call :func:`ensure_mnist` before reading, which says what is wrong with a
file, adds the MD5s and a download that checks every file before the data root sees it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from mnist_cnn.errors import ConfigError, DataError
from mnist_cnn.mnist import (
    IMAGE_SIZE,
    SPLITS,
    download_failed,
    fetch_with_torchvision,
    missing_message,
    raw_folder,
    resolve_data_dir,
    unreadable,
)
from mnist_cnn.text import display_name

IMAGE_MAGIC = 2051  # IDX: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # IDX: unsigned bytes, 1 dimension
#: raw file name -> number of items it holds
ITEM_COUNTS: dict[str, int] = {name: count for images, labels, count in SPLITS.values() for name in (images, labels)}

#: MD5 of the uncompressed files, the same bytes torchvision's published archives unpack to.
RAW_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

#: Files whose MD5 matched, by (resolved path, size, modification time): each file is hashed once per process.
_verified: dict[tuple[str, int, int], None] = {}


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
    """Check one IDX file's magic number, dimensions and size (a few bytes read), saying what is wrong with it.

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


def check_md5(path: Path) -> None:
    """Compare a raw file's MD5 with the published one (once per file, size and modification time).

    Raises:
        DataError: The MD5 differs, naming the file.
        OSError: The file cannot be read.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _verified or path.name not in RAW_MD5:
        return
    digest = hashlib.md5(path.read_bytes()).hexdigest()
    if digest != RAW_MD5[path.name]:
        raise DataError(f"MNIST file {display_name(path)} is corrupt: its MD5 {digest} differs from the published {RAW_MD5[path.name]}")
    _verified[key] = None


def check_raw_files(root: str | os.PathLike[str], splits: Sequence[str] | None = None) -> None:
    """Check the MNIST files of ``splits`` (all four by default) under ``root``: present, header, size and MD5.

    Args:
        root: The data root.
        splits: ``["test"]`` checks only the test files, for a command that reads nothing else.

    Raises:
        DataError: A file is missing, unreadable, truncated, corrupt, or images and labels disagree (each file
            is checked against its split's known size).
    """
    names = split_files(splits)
    missing = missing_files(root, names)
    if missing:
        raise DataError(missing_message(Path(root), missing))
    for name in names:
        path = raw_folder(root) / name
        try:
            check_idx_file(path, expected_count=ITEM_COUNTS[name])
            check_md5(path)
        except OSError as error:
            raise unreadable(error, path) from None


def ensure_mnist(data_dir: str | os.PathLike[str] | None = None, download: bool = True, splits: Sequence[str] | None = None) -> Path:
    """Make sure the MNIST files are present and match the published MD5s, downloading them if absent.

    Files that are present are never rewritten, so a read-only data root is fine.

    Args:
        data_dir: Root as for :func:`mnist_cnn.mnist.resolve_data_dir`.
        download: Try torchvision's download when files are missing.
        splits: Only these splits' files (default: all four).

    Returns:
        The resolved root.

    Raises:
        DataError: The files are missing and could not be downloaded, or are corrupt.
    """
    root = resolve_data_dir(data_dir)
    missing = missing_files(root, split_files(splits))
    if missing and download:
        _download(root, missing)
    check_raw_files(root, splits=splits)
    return root


def _download(root: Path, missing: list[str]) -> None:
    """Download with torchvision into a scratch folder, check, then move the files in: a failed download leaves nothing behind."""
    try:
        with tempfile.TemporaryDirectory(prefix="mnist-download-") as scratch:
            downloaded = raw_folder(scratch)
            try:
                fetch_with_torchvision(scratch)
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
        raise download_failed(root, missing, error) from None


def _check_downloaded(folder: Path, names: list[str]) -> None:
    """Check those of ``names`` that are in ``folder`` (raises :class:`DataError` naming the first bad one)."""
    for name in names:
        if (folder / name).is_file():
            check_idx_file(folder / name, expected_count=ITEM_COUNTS[name])
            check_md5(folder / name)
