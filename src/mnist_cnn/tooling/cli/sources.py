"""Which image files the predict command's paths name: directories expanded to the image files in them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from mnist_cnn.digits.inference import Prediction

#: Suffixes a directory argument expands to (files named explicitly are tried whatever their suffix).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
#: Why a directory without image files yields nothing to classify.
NO_IMAGE_FILES = f"a directory with no image files ({', '.join(IMAGE_SUFFIXES)})"


def _listed_image_file(path: Path) -> bool:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    try:
        return path.is_file()
    except OSError:
        return True  # cannot even stat it: keep it, so opening it reports why in one line


def iter_sources(paths: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[Path, str | None]]:
    """Each path given, with directories replaced by their image files (sorted by name, not recursive), lazily.

    Args:
        paths: Files and directories, in the order given.

    Yields:
        ``(path, error)``: ``error`` is ``None``, or why a directory yields no file (it cannot be listed, e.g.
        permission denied, or holds no image files), in which case ``path`` is that directory, so it is reported
        as a failure rather than vanishing. Entries of a directory that are not regular files (subdirectories,
        FIFOs, sockets) are skipped.
    """
    for raw in paths:
        path = Path(raw)
        try:
            is_dir = path.is_dir()
        except OSError:
            is_dir = False  # cannot stat it: opening it will say why
        if not is_dir:
            yield path, None
            continue
        try:
            found = sorted(entry for entry in path.iterdir() if _listed_image_file(entry))
        except OSError as error:
            reason = "permission denied" if isinstance(error, PermissionError) else (error.strerror or str(error))
            yield path, f"cannot list this folder ({reason})"
            continue
        if not found:
            yield path, NO_IMAGE_FILES
        for entry in found:
            yield entry, None


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Replace each directory by its image files (sorted by name, not recursive), keeping the order given.

    A directory without image files, or one that cannot be listed, stays in the list, so it is reported as a
    failure rather than vanishing (see :func:`iter_sources`, which also says why).

    Args:
        paths: Files and directories, in the order given.

    Returns:
        The files, directories expanded in place.
    """
    return [path for path, _ in iter_sources(paths)]


def prediction_inputs(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path | Prediction]:
    """What :func:`~mnist_cnn.tooling.cli.stream.iter_predictions` is given for the command line's paths, lazily.

    Args:
        paths: Files and directories, in the order given.

    Yields:
        Each file to classify (directories expanded by :func:`iter_sources`), or, in place of a directory that
        yields none, a :class:`~mnist_cnn.digits.inference.Prediction` that carries why.
    """
    for path, error in iter_sources(paths):
        yield path if error is None else Prediction(file=str(path), error=error)
