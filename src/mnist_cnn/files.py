"""Writing files safely: atomically (readers see the old file or the complete new one) and as strict JSON."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import secrets
from pathlib import Path
from typing import Any


def _temporary_beside(target: Path) -> tuple[Path, int]:
    """A new, empty temporary file beside ``target``, with mode 0666 less the umask like any new file (not mkstemp's 0600)."""
    for _ in range(100):
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        with contextlib.suppress(FileExistsError):
            return candidate, os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(target.parent))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it, flushed to disk and renamed over ``path``.

    On any failure (a full disk, a permission, an interrupt) the temporary file is removed and ``path`` left as it was.

    Raises:
        OSError: The write failed; its ``filename`` is ``path``, so the message names the file meant.
    """
    target = Path(path)
    temporary: Path | None = None
    try:
        temporary, fd = _temporary_beside(target)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
        temporary = None
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(target)) from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink()
    # make the rename itself durable; some filesystems cannot open or sync a directory, which is harmless
    with contextlib.suppress(OSError):
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def strict_json_value(value: Any) -> Any:
    """``value`` with every NaN or infinite float (also inside dicts, lists and tuples) replaced by ``None``: strict JSON has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_value(item) for item in value]
    return value


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented, strict JSON (non-finite numbers become ``null``), atomically."""
    text = json.dumps(strict_json_value(payload), indent=2, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())
