"""The output folder of a training run: never start over another run's files, never share the folder with a live run.

Two guards, used by ``python -m mnist_cnn.train``:

- :func:`check_not_another_run` refuses to start a new run in a folder that already holds a run's
  ``last.pt`` (an interrupted run) or ``model.pt`` (a finished one), unless the user resumes it or says
  ``--overwrite``;
- :class:`RunLock` holds an exclusive ``fcntl.flock`` on ``<out>/.train.lock`` for as long as the run
  lasts. The kernel drops the lock when the process ends, however it ends (even ``kill -9``), so a lock
  file left by a dead process is stale by construction and the next run simply takes it over; the pid
  written inside is only there to say who holds a live lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Any

from mnist_cnn.errors import ConfigError

try:  # POSIX only; without it (Windows) runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: The lock file's name inside the output folder.
LOCK_NAME = ".train.lock"
#: Files that mean "a run lives here", in the order they are reported.
RUN_FILES = ("last.pt", "model.pt")


def check_not_another_run(out: str | os.PathLike[str], *, resume: str | os.PathLike[str] | None, overwrite: bool) -> None:
    """Refuse to start a run in ``out`` when that would replace another run's checkpoint.

    Args:
        out: The output folder.
        resume: The checkpoint being resumed, or ``None``. Its own folder belongs to its run (an extended
            finished run may hold both ``model.pt`` and ``last.pt`` there); another folder is checked.
        overwrite: The user said ``--overwrite``: replacing is what they want.

    Raises:
        ConfigError: ``out`` holds a ``last.pt`` or ``model.pt`` that is not the one being resumed; the
            message names the file and the two ways forward.
    """
    if overwrite:
        return
    folder = Path(out)
    if resume is not None and _same_file_key(Path(resume).parent) == _same_file_key(folder):
        return  # the run continues in its own folder: its last.pt and model.pt are its own
    resumed = _same_file_key(Path(resume)) if resume is not None else None
    for name in RUN_FILES:
        path = folder / name
        key = _same_file_key(path)
        if key is None or key == resumed:
            continue
        if name == "last.pt":
            hint = f"it is an interrupted run: continue it with --resume {path}"
        else:
            hint = f"it is a finished run: train it further with --resume {path} --epochs N"
        raise ConfigError(f"{folder} already holds another run's {name} ({hint}); pass --overwrite to replace it, or choose another --out")


def _same_file_key(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of an existing file, to compare paths spelled differently; ``None`` when absent."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


class RunLock:
    """An exclusive lock on a run's output folder, held from ``__enter__`` to ``__exit__`` (or process death).

    Args:
        out: The output folder (it must exist).

    Raises:
        ConfigError: From ``__enter__``: another live process holds the lock (its pid is named).
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.path = Path(out) / LOCK_NAME
        self._fd: int | None = None
        #: The pid named in a lock file taken over from a process that had died, if any.
        self.stale_pid: int | None = None

    def __enter__(self) -> RunLock:
        if self._fd is None:  # claim_run_folder hands over a lock already taken
            self.acquire()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or raise :class:`ConfigError` naming the process that holds it."""
        if fcntl is None:  # pragma: no cover - Windows has no flock; the folder is then not locked
            return
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise ConfigError(self._busy_message(self._read_pid(self.path))) from None
            # the holder may have removed the file between our open and our lock: then we hold a lock on a
            # file nobody else can see, and must try again on the one now at this path
            if _same_inode(fd, self.path):
                self.stale_pid = self._read_pid(self.path)
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            os.close(fd)
        raise ConfigError(f"cannot lock {self.path}: it keeps being replaced by another process")

    def release(self) -> None:
        """Remove the lock file and drop the lock (safe to call twice)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if _same_inode(self._fd, self.path):
                self.path.unlink()
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def _busy_message(self, pid: int | None) -> str:
        holder = f"process {pid}" if pid is not None else "another process"
        return (
            f"another training run ({holder}) is writing to {self.path.parent} (it holds {self.path}); "
            "wait for it to finish or choose another --out"
        )

    @staticmethod
    def _read_pid(path: Path) -> int | None:
        try:
            text = path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None


def _same_inode(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except OSError:
        return False


def claim_run_folder(out: str | os.PathLike[str], *, resume: str | os.PathLike[str] | None, overwrite: bool) -> RunLock:
    """Lock ``out`` for this run, then check it holds no other run's checkpoint (see :func:`check_not_another_run`).

    The lock comes first, so that a live run's ``last.pt`` is reported as a live run, not as an interrupted one.

    Returns:
        The held lock: release it (or use it as a context manager) when the run's files are written.

    Raises:
        ConfigError: Another live run holds the folder, or it holds another run's ``last.pt``/``model.pt``.
    """
    lock = RunLock(out)
    lock.acquire()
    try:
        check_not_another_run(out, resume=resume, overwrite=overwrite)
    except BaseException:
        lock.release()
        raise
    return lock
