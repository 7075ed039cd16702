"""The output folder of a training run: one live run per folder, never over another run's files unless asked.

A command's output folder is first checked writable (:func:`ensure_writable_dir`), so it fails before its work, not
after. Then three guards, used by ``python -m mnist_cnn.train``:

- :func:`check_not_another_run` refuses to start a new run in a folder that already holds a run's
  ``last.pt`` (an interrupted run) or ``model.pt`` (a finished one), unless the user resumes it or says
  ``--overwrite``;
- :class:`RunLock` holds an exclusive ``fcntl.flock`` on ``<out>/.train.lock`` for as long as the run
  lasts. The kernel drops the lock when the process ends, however it ends (even ``kill -9``), so a lock
  file left by a dead process is stale by construction and the next run simply takes it over; a refused
  run names the holder as the kernel lists it (``/proc/locks``), not the pid written in the file. The lock
  file is never followed through a link: a ``.train.lock`` that is a symbolic link, a hard link or not a
  plain file is refused untouched;
- with ``--overwrite``, the old run's ``model.pt`` and ``metrics.json`` are moved aside (renamed to
  ``.replaced.<name>``) as soon as the folder is claimed, so the folder never shows the old results beside
  the new run's ``last.pt``. When the lock is released they are deleted if the new run wrote a checkpoint,
  or put back if it wrote nothing (it failed on its data, say): the user asked to replace a run, not to lose
  one for nothing.

``python -m mnist_cnn.evaluate`` uses :func:`check_not_a_run_folder`: a report never goes into a folder that holds
a run (its ``metrics.json`` is the run's record), nor one whose set-aside run waits to be restored.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from mnist_cnn import LAST_FILE, MODEL_FILE
from mnist_cnn.errors import ConfigError
from mnist_cnn.text import display_name
from mnist_cnn.tooling.safety.regular_files import FileTooLarge, read_regular

try:  # POSIX only; without it (Windows) runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: The lock file's name inside the output folder.
LOCK_NAME = ".train.lock"
#: Files that mean "a run lives here", in the order they are reported.
RUN_FILES = (LAST_FILE, MODEL_FILE)
#: A finished run's results, moved aside when ``--overwrite`` starts a new run over them.
RESULT_FILES = (MODEL_FILE, "metrics.json")
#: What a result file moved aside is renamed to: ``.replaced.model.pt``, hidden from listings and from compare.
ASIDE_PREFIX = ".replaced."


def ensure_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and check files can be written there.

    Raises:
        ConfigError: The directory cannot be created or written to.
    """
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ConfigError(f"cannot write to output directory {directory}: {error.strerror or error}") from None
    return directory


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
        if name == LAST_FILE:
            hint = f"it is an interrupted run: continue it with --resume {display_name(path)}"
        else:
            hint = f"it is a finished run: train it further with --resume {display_name(path)} --epochs N"
        raise ConfigError(
            f"{display_name(folder)} already holds another run's {name} ({hint}); pass --overwrite to replace it, or choose another --out"
        )


def _same_file_key(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of an existing file, to compare paths spelled differently; ``None`` when absent."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


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
        #: The result files this run moved aside, and the key of ``last.pt`` when it did.
        self._aside: list[str] = []
        self._last_key: tuple[int, int] | None = None
        #: The results moved aside were found, left by a killed run this one continues: never put back beside it.
        self._adopted = False

    def __enter__(self) -> RunLock:
        if self._fd is None:  # claim_run_folder hands over a lock already taken
            self.acquire()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock or raise :class:`ConfigError` naming the process that holds it.

        The lock file is opened without following a symbolic link and without truncating it, and checked to be a
        plain file with no other name; only then, with the lock held, is the pid written into it.
        """
        if fcntl is None:  # pragma: no cover - Windows has no flock; the folder is then not locked
            return
        for _ in range(10):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                pid = holder_pid(fd)
                os.close(fd)
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise ConfigError(self._busy_message(pid)) from None
            # the holder may have removed the file between our open and our lock: then we hold a lock on a
            # file nobody else can see, and must try again on the one now at this path
            if _same_inode(fd, self.path):
                self.stale_pid = _read_pid(fd)
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                self._fd = fd
                return
            os.close(fd)
        raise ConfigError(f"cannot lock {display_name(self.path)}: it keeps being replaced by another process")

    def _open(self) -> int:
        """Open (or create) the lock file itself, never what a link points to; refuse anything but a plain file."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.EMLINK, errno.ENXIO, errno.EISDIR):  # a link, a socket, a folder
                raise ConfigError(self._not_plain_message()) from None
            raise
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or found.st_nlink != 1:  # a fifo, a device, or a file also known by another name
            os.close(fd)
            raise ConfigError(self._not_plain_message())
        return fd

    def _not_plain_message(self) -> str:
        return (
            f"{display_name(self.path)} is not a plain lock file (a link, a folder or a special file); it was left untouched: "
            "remove it, or choose another --out"
        )

    def release(self) -> None:
        """Settle the results moved aside, remove the lock file and drop the lock (safe to call twice)."""
        if self._fd is None:
            return
        try:
            self._settle_aside()
        finally:
            with contextlib.suppress(OSError):
                if _same_inode(self._fd, self.path):
                    self.path.unlink()
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def set_aside_results(self) -> None:
        """Move the old run's :data:`RESULT_FILES` aside (atomic renames), so the folder never mixes two runs.

        Called with the lock held, when ``--overwrite`` starts a new run; :meth:`release` deletes them once
        the new run has written a checkpoint, or puts them back if it wrote nothing.
        """
        folder = self.path.parent
        self._last_key = _same_file_key(folder / LAST_FILE)
        for name in RESULT_FILES:
            source = folder / name
            if source.is_file() and not source.is_symlink():
                os.replace(source, folder / f"{ASIDE_PREFIX}{name}")
                self._aside.append(name)

    def adopt_aside(self, names: list[str]) -> None:
        """Take over results a killed ``--overwrite`` run had moved aside, when this run continues that one.

        The overwrite the user asked for then completes as it would have: they are deleted once this run writes a
        checkpoint, and otherwise left aside as found.
        """
        self._aside, self._adopted = list(names), True
        self._last_key = _same_file_key(self.path.parent / LAST_FILE)

    def _settle_aside(self) -> None:
        if not self._aside:
            return
        folder = self.path.parent
        last = _same_file_key(folder / LAST_FILE)
        wrote = (last is not None and last != self._last_key) or any((folder / name).exists() for name in RESULT_FILES)
        for name in self._aside:
            aside = folder / f"{ASIDE_PREFIX}{name}"
            with contextlib.suppress(FileNotFoundError):
                if wrote:
                    aside.unlink()
                elif not self._adopted:
                    os.replace(aside, folder / name)
        self._aside = []

    def _busy_message(self, pid: int | None) -> str:
        holder = f"process {pid}" if pid is not None else "another process"
        return (
            f"another training run ({holder}) is writing to {display_name(self.path.parent)} (it holds {display_name(self.path)}); "
            "wait for it to finish or choose another --out"
        )


def holder_pid(fd: int) -> int | None:
    """The process that holds the ``flock`` on the open file ``fd``, as the kernel lists it in ``/proc/locks``; ``None`` if unknown.

    The pid written inside a lock file is only what its writer said (it may be stale, or forged); the kernel's table
    names the process that holds the lock now. Where there is no such table (not Linux), the holder is not named.
    """
    found = os.fstat(fd)
    where = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    try:
        table = Path("/proc/locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in table.splitlines():
        fields = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF" ("->" marks a waiter, not a holder)
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == where and fields[4].isdigit():
            return int(fields[4])
    return None


def _read_pid(fd: int) -> int | None:
    """The pid written in an open lock file, read from the open file (never by name, which may have changed)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _same_inode(fd: int, path: Path) -> bool:
    try:
        mine, named = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (named.st_dev, named.st_ino)


def claim_run_folder(out: str | os.PathLike[str], *, resume: str | os.PathLike[str] | None, overwrite: bool) -> RunLock:
    """Lock ``out`` for this run, then check it holds no other run's checkpoint (see :func:`check_not_another_run`).

    The lock comes first, so that a live run's ``last.pt`` is reported as a live run, not as an interrupted one.
    With ``overwrite``, a new run (not one continuing in its own folder) then moves the old results aside
    (:meth:`RunLock.set_aside_results`). Results a killed ``--overwrite`` run had moved aside are settled first
    (:func:`_settle_leftovers`): put back, carried on by the run that continues it, or the run is refused.

    Returns:
        The held lock: release it (or use it as a context manager) when the run's files are written.

    Raises:
        ConfigError: Another live run holds the folder, it holds another run's ``last.pt``/``model.pt``, or results
            set aside by a killed ``--overwrite`` lie beside newer files.
    """
    lock = RunLock(out)
    lock.acquire()
    try:
        continuing = resume is not None and _same_file_key(Path(resume).parent) == _same_file_key(Path(out))
        _settle_leftovers(lock, Path(out), continuing)
        check_not_another_run(out, resume=resume, overwrite=overwrite)
        if overwrite and not continuing:
            lock.set_aside_results()
    except BaseException:
        lock.release()
        raise
    return lock


def set_aside_leftovers(folder: Path) -> list[str]:
    """The names of the results (``model.pt``, ``metrics.json``) a killed ``--overwrite`` run left moved aside in ``folder``."""
    return [name for name in RESULT_FILES if os.path.lexists(folder / f"{ASIDE_PREFIX}{name}")]


def _settle_leftovers(lock: RunLock, folder: Path, continuing: bool) -> None:
    """Results a killed ``--overwrite`` run moved aside: put back, carried on, or kept until the user decides.

    Put back when the folder shows nothing newer (the killed run wrote nothing); taken over by a run that continues
    the killed one in its own folder (:meth:`RunLock.adopt_aside`); otherwise the run is refused, whatever its
    options, so neither a fresh start nor another ``--overwrite`` can delete the old run unseen.

    Raises:
        ConfigError: Results set aside lie beside newer files and this run does not continue the killed one.
    """
    leftovers = set_aside_leftovers(folder)
    if not leftovers:
        return
    newer = [name for name in (LAST_FILE, *RESULT_FILES) if os.path.lexists(folder / name)]
    if not newer:
        for name in leftovers:
            os.replace(folder / f"{ASIDE_PREFIX}{name}", folder / name)
    elif continuing:
        lock.adopt_aside(leftovers)
    else:
        hint = f"; or continue the run that replaced it with --resume {display_name(folder / LAST_FILE)}" if LAST_FILE in newer else ""
        raise ConfigError(
            f"{display_name(folder)} holds a run set aside by an --overwrite that did not finish ({ASIDE_PREFIX}{leftovers[0]}) "
            f"beside newer files; nothing was changed: rename it back (without '{ASIDE_PREFIX}') to keep it, or delete it{hint}"
        )


#: A run's own ``metrics.json`` has these; an evaluation report has none of them.
RUN_RECORD_KEYS = ("config", "history")
#: Larger than any run's ``metrics.json``: a bigger file is not read to find out whose it is.
MAX_RECORD_BYTES = 64 << 20


def check_not_a_run_folder(out: str | os.PathLike[str]) -> None:
    """Refuse to write a report into a training run's folder, where it would replace the run's ``metrics.json``.

    Args:
        out: The report folder asked for.

    Raises:
        ConfigError: ``out`` holds a ``model.pt`` or ``last.pt``, a run's results set aside by an ``--overwrite``
            that did not finish, or a ``metrics.json`` with a run's configuration or history.
    """
    folder = Path(out)
    found = [name for name in (MODEL_FILE, LAST_FILE) if (folder / name).is_file()]
    found += [f"{ASIDE_PREFIX}{name}, set aside by an --overwrite that did not finish" for name in set_aside_leftovers(folder)]
    if not found and _is_run_record(folder / "metrics.json"):
        found = ["metrics.json with the run's history"]
    if found:
        raise ConfigError(
            f"{display_name(folder)} holds a training run ({found[0]}): the report's metrics.json would replace the run's record; "
            "choose another --out (for example reports/<run>)"
        )


def _is_run_record(path: Path) -> bool:
    try:
        loaded = json.loads(read_regular(path, MAX_RECORD_BYTES).decode("utf-8"))
    except FileTooLarge:
        return True  # too large to be a report of ours: keep it
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):  # a FIFO is refused unread, never waited on
        return False  # nothing readable to lose: a previous report cut short, say
    return isinstance(loaded, dict) and any(key in loaded for key in RUN_RECORD_KEYS)
