"""Seeding, device selection and small helpers shared by the notebooks and the command line."""

from __future__ import annotations

import contextlib
import json
import os
import random
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


class StopRequest:
    """A flag that Ctrl-C (SIGINT) sets instead of raising ``KeyboardInterrupt``, so training can stop at a safe point.

    Use as a context manager around training; call the instance to ask whether a stop was requested.
    A second Ctrl-C raises ``KeyboardInterrupt`` at once (unless ``repeat_interrupts`` is false: under
    ``torchrun`` the launcher forwards the signal, so workers may receive it twice).

    Args:
        repeat_interrupts: Let a second SIGINT interrupt immediately.
    """

    def __init__(self, repeat_interrupts: bool = True) -> None:
        self.requested = False
        self.repeat_interrupts = repeat_interrupts
        self._previous: Any = None

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and self.repeat_interrupts:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> StopRequest:
        # signal handlers can only be installed from the main thread (e.g. not in some notebook executors)
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


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


def supports_bf16_autocast(device: torch.device) -> bool:
    """Whether bf16 autocast is worth using on ``device`` (CUDA with bf16, or a CPU with native bf16 units)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # Without AVX-512 BF16/AMX, bf16 on CPU is emulated and slower than fp32.
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


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


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see either the old file or the complete new one."""
    target = Path(path)
    with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp", delete=False) as handle:
        temporary = Path(handle.name)
        try:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            handle.close()
            temporary.unlink(missing_ok=True)
            raise
    os.replace(temporary, target)


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode())
