"""Reading a file a user's folder names without blocking: only a regular file, and only up to a size bound."""

from __future__ import annotations

import os
import stat

#: What a file that is not a regular one is, in words.
KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
}


class NotARegularFile(OSError):
    """A folder, FIFO, device or socket where a file was expected; ``kind`` says which."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"not a regular file ({kind})")
        self.kind = kind


class FileTooLarge(OSError):
    """Larger than the bound; ``size`` is its size, or ``None`` when it grew while being read."""

    def __init__(self, size: int | None, max_bytes: int) -> None:
        super().__init__(f"larger than the {max_bytes:,} bytes allowed")
        self.size = size


def _check(status: os.stat_result, max_bytes: int) -> None:
    if not stat.S_ISREG(status.st_mode):
        raise NotARegularFile(KINDS.get(stat.S_IFMT(status.st_mode), "not a regular file"))
    if status.st_size > max_bytes:
        raise FileTooLarge(status.st_size, max_bytes)


def read_regular(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of ``path``, a regular file of at most ``max_bytes``; never blocks on a FIFO or reads a device.

    Its kind and size are checked before it is opened, and again on the file opened (it may have been swapped in
    between); it is opened without blocking (``O_NONBLOCK``), so a FIFO can never hold the read.

    Args:
        path: The file (a symbolic link is followed, as any reader would).
        max_bytes: The most it may hold.

    Returns:
        Its whole content.

    Raises:
        NotARegularFile: A folder, FIFO, device or socket.
        FileTooLarge: Over ``max_bytes``, before or while being read.
        OSError: Missing or unreadable (``ValueError`` for a name with a NUL byte).
    """
    _check(os.stat(path), max_bytes)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        _check(os.fstat(fd), max_bytes)
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 24, max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise FileTooLarge(None, max_bytes)
    finally:
        os.close(fd)
    return b"".join(chunks)
