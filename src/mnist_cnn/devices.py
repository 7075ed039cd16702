"""Choosing the device to compute on (CUDA, Apple's MPS or the CPU) and whether it runs bf16 natively."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mnist_cnn.errors import ConfigError

if TYPE_CHECKING:
    import torch

#: Values of ``--device`` besides ``cuda:N``; importing this module does not import torch, so argument parsers stay fast.
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
#: CPU feature flags of native bf16 arithmetic (AMX, AVX-512-BF16); elsewhere bf16 is emulated, 4-12x slower than fp32.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def select_device(name: str | None = "auto") -> torch.device:
    """Pick the device to run on: ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Raises:
        ConfigError: The name is unknown or that device is not available here.
    """
    name = (name or "auto").lower()
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):  # a typo is answered before torch loads (seconds)
        raise ConfigError(f"unknown device {name!r}: choose one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
    import torch

    mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    if name in ("cpu", "mps"):
        if name == "mps" and not mps:
            raise ConfigError("device 'mps' was requested but Apple's MPS backend is not available on this machine")
        return torch.device(name)
    # "cuda" or "cuda:N", the only names left
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was requested but CUDA is not available on this machine")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is no such file, e.g. macOS)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


def bf16_is_native(device: torch.device, flags: set[str] | None = None) -> bool:
    """Whether ``device`` runs bf16 autocast on native instructions, so that it pays (docs/benchmarks.md); ``flags``: the CPU's."""
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu" or not NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else set(flags)):
        return False
    # oneDNN's own check also honours ONEDNN_MAX_CPU_ISA, so a CPU restricted to AVX2 counts as one
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
