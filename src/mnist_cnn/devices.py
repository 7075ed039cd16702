"""Choosing the device to compute on: CUDA, Apple's MPS or the CPU."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mnist_cnn.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: Values of ``--device`` besides ``cuda:N``; importing this module does not import torch, so argument parsers stay fast.
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def select_device(name: str | None = "auto") -> torch.device:
    """Pick the device to run on.

    Args:
        name: ``"auto"`` (cuda, then mps, then cpu), or one of ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.

    Returns:
        The chosen ``torch.device``.

    Raises:
        ConfigError: The name is unknown or that device is not available here.
    """
    import torch

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
