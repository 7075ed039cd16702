"""Seeding, device selection and small helpers shared by the notebooks and the command line."""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch

from mnist_cnn.errors import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


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
