"""Seeding, device selection and small helpers shared by the notebooks and the command line."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import random
import secrets
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from mnist_cnn.config import DEVICE_CHOICES
from mnist_cnn.errors import ConfigError


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's and torch's random generators.

    Args:
        seed: Any integer.

    Returns:
        A fresh ``torch.Generator`` seeded with ``seed``, for data shuffling that does not
        depend on how many random numbers model initialisation consumed.
    """
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Capture every random state training draws from, as tensors and plain lists (safe for ``weights_only`` loading).

    Args:
        generator: The data-shuffling/augmentation generator, if any.

    Returns:
        ``{"torch": ..., "cuda": [...] or None, "python": [version, [ints], gauss], "generator": ... or None}``.
    """
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        # only when CUDA was used: querying it would otherwise initialise CUDA for nothing
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "python": [version, list(internal), gauss],
        "generator": generator.get_state() if generator is not None else None,
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` captured (the CUDA part only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Within the block, make torch pick deterministic kernels (or not), then restore the previous settings.

    Enabled: ``torch.use_deterministic_algorithms(True, warn_only=True)`` (an op without a deterministic
    kernel warns rather than stopping a long run), cuDNN deterministic with autotuning off, and the
    cuBLAS workspace setting CUDA needs for reproducible matrix products. Torch's filling of every new
    ``torch.empty`` tensor with NaN, which deterministic mode also switches on, is left off: it only
    exposes reads of uninitialised memory (none here) and costs about a tenth of the CPU time.

    Args:
        enabled: Turn deterministic mode on (``False`` leaves torch's defaults in place).
    """
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.utils.deterministic.fill_uninitialized_memory,  # type: ignore[attr-defined]
    )
    if enabled:
        # must be set before cuBLAS initialises; harmless on machines without CUDA
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2], previous[3]
        torch.utils.deterministic.fill_uninitialized_memory = previous[4]  # type: ignore[attr-defined]


#: The signals that ask training to stop at a safe point: Ctrl-C, ``kill``/cluster schedulers, a closing terminal.
STOP_SIGNALS: tuple[int, ...] = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
#: How many stop signals force an immediate ``KeyboardInterrupt`` (the first asks politely, the second is forgiven).
FORCE_AFTER = 3


class StopRequest:
    """A flag that SIGINT, SIGTERM and SIGHUP set instead of killing the process, so training can stop at a safe point.

    Use as a context manager around training; call the instance to ask whether a stop was requested.
    The first signal asks to stop after the current batch; a second one (a habitual double Ctrl-C) is
    only counted, so the save and the resume hint still happen; a third raises ``KeyboardInterrupt`` at
    once (unless ``repeat_interrupts`` is false: under ``torchrun`` the launcher forwards signals, so
    workers may receive several). The last finished epoch is on disk in every case.

    Args:
        repeat_interrupts: Let a third signal interrupt immediately.
        signals: The signals to catch (default: :data:`STOP_SIGNALS`).
        linger: Once a stop was requested, ignore these signals after the block instead of restoring the
            previous handlers, so that a late second press cannot kill the process while it prints how to resume
            and exits (Python restores the default handlers while shutting down, but leaves ignored signals
            ignored). For command lines, which exit right after; a notebook wants its Ctrl-C back (the default).
    """

    def __init__(self, repeat_interrupts: bool = True, signals: tuple[int, ...] = STOP_SIGNALS, linger: bool = False) -> None:
        self.requested = False
        self.repeat_interrupts = repeat_interrupts
        self.signals = signals
        self.linger = linger
        #: The first signal received (``None`` until one arrives).
        self.signum: int | None = None
        self.count = 0
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.requested

    @property
    def exit_status(self) -> int:
        """The conventional status for a process stopped by :attr:`signum`: 128 + its number (130 for Ctrl-C)."""
        return 128 + (self.signum if self.signum is not None else signal.SIGINT)

    @property
    def signal_name(self) -> str:
        """``"SIGTERM"`` etc. for the first signal received (``"SIGINT"`` when none was)."""
        return signal.Signals(self.signum if self.signum is not None else signal.SIGINT).name

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum
        self.requested = True
        if self.count >= FORCE_AFTER and self.repeat_interrupts:
            raise KeyboardInterrupt

    def __enter__(self) -> StopRequest:
        # signal handlers can only be installed from the main thread (e.g. not in some notebook executors)
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.linger and self.requested and self._previous:
            for signum in self._previous:
                signal.signal(signum, signal.SIG_IGN)
            self._previous = {}
            return
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}


def select_device(name: str | None = "auto") -> torch.device:
    """Pick the device to run on.

    Args:
        name: ``"auto"`` (cuda, then mps, then cpu), or one of ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.

    Returns:
        The chosen ``torch.device``.

    Raises:
        ConfigError: The name is unknown or that device is not available here.
    """
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ConfigError("device 'mps' was requested but Apple's MPS backend is not available on this machine")
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} was requested but CUDA is not available on this machine")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return device
    raise ConfigError(f"unknown device {name!r}: choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")


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


def _temporary_beside(target: Path) -> tuple[Path, int]:
    """Create an empty, new temporary file next to ``target`` (mode 0666 less the umask, like any new file)."""
    for _ in range(100):
        candidate = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            return candidate, os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "cannot create a temporary file", str(target.parent))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the complete new one.

    The bytes go to a temporary file beside ``path`` (created with mode 0666 less the umask, so 0644
    usually, like files other programs write), which is flushed to disk and renamed over ``path``.
    On any failure (a full disk, a permission, an interrupt) the temporary file is removed and
    ``path`` is left as it was.

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
                written = os.write(fd, view)
                view = view[written:]
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
    """``value`` with every NaN or infinite float (also inside dicts, lists and tuples) replaced by ``None``.

    Strict JSON has no NaN or Infinity; Python's ``json`` would write them as bare words other parsers refuse.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json_value(item) for item in value]
    return value


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented, strict JSON (non-finite numbers become ``null``), atomically."""
    text = json.dumps(strict_json_value(payload), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())
