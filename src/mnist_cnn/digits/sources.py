"""Which image files a list of command-line paths names: directories expanded to the image files in them."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

#: Suffixes a directory argument expands to (files named explicitly are tried whatever their suffix).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


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
        ``(path, error)``: ``error`` is ``None``, or why a directory could not be listed (e.g. permission denied),
        in which case ``path`` is that directory. A directory without image files is yielded itself (``error``
        ``None``), so it is reported as a failure rather than vanishing. Entries of a directory that are not
        regular files (subdirectories, FIFOs, sockets) are skipped.
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
            yield path, None
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
