"""What a run records about its numerics: the CPU, its class, and why bf16 autocast was or was not used.

The choice itself is the study's (:func:`mnist_cnn.devices.bf16_is_native`, read by :func:`mnist_cnn.recipe.autocast_dtype_for`);
the commands record this description of it in ``metrics.json``.

Measured on 2 cores of an AMD EPYC (Zen 4: AVX-512 with BF16 dot products, no AMX), ms per training step of the
``default`` recipe (see the README's "Speed" section for the commands and the full tables):

* AVX-512-BF16: bf16 autocast with channels-last runs a step in about 0.35-0.45 of fp32 NCHW, and channels-last
  helps in both precisions.
* AVX2 only (the same CPU with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``): bf16 is emulated and a
  step takes 4-12x as long as fp32, so such CPUs train in fp32; channels-last still pays (0.5-0.7 of NCHW).
* AMX-BF16 (Intel Sapphire Rapids and later): bf16 was measured to pay most there when the presets were first
  tuned; no such CPU was available to re-measure this version.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mnist_cnn.devices import NATIVE_BF16_FLAGS, bf16_is_native, cpu_flags
from mnist_cnn.engine import Run

#: CPU classes, best bf16 support first.
CPU_CLASSES = ("amx-bf16", "avx512-bf16", "avx512", "avx2", "other")


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's model name, e.g. ``"AMD EPYC"`` (``"unknown CPU"`` where it cannot be read)."""
    text = cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo")
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def cpu_class(flags: Iterable[str]) -> str:
    """The class of CPU that decides the numerics: one of :data:`CPU_CLASSES`.

    Args:
        flags: Feature flags as ``/proc/cpuinfo`` names them (``amx_bf16``, ``avx512_bf16``, ``avx512f``, ``avx2``).
    """
    flags = set(flags)
    if "amx_bf16" in flags:
        return "amx-bf16"
    if "avx512_bf16" in flags:
        return "avx512-bf16"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "other"


@dataclass
class Numerics:
    """How a run computes, and why.

    Attributes:
        device: Where it computes (``"cpu"``, ``"cuda"``...).
        cpu_model: The CPU's model name.
        cpu_class: One of :data:`CPU_CLASSES`.
        cpu_capability: The vector instructions torch's own kernels use (``torch.backends.cpu.get_cpu_capability()``).
        autocast: ``"bf16"`` (bf16 autocast) or ``"fp32"``.
        channels_last: Whether images and weights are in channels-last memory format.
        reason: One sentence on the precision chosen.
    """

    device: str
    cpu_model: str
    cpu_class: str
    cpu_capability: str
    autocast: str
    channels_last: bool
    reason: str

    @property
    def precision(self) -> str:
        """``"bf16-autocast"`` or ``"fp32"``, as ``metrics.json`` names it."""
        return "bf16-autocast" if self.autocast == "bf16" else "fp32"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """``torch.bfloat16`` for bf16 autocast, ``None`` for plain fp32."""
        return torch.bfloat16 if self.autocast == "bf16" else None

    def to_dict(self) -> dict[str, Any]:
        """Plain-container form, recorded in ``metrics.json``."""
        return asdict(self)


def choose_numerics(wants_bf16: bool, wants_channels_last: bool, device: torch.device, flags: Iterable[str] | None = None) -> Numerics:
    """bf16 autocast only where it runs natively; channels-last as the recipe asks (it paid on every CPU class measured).

    Args:
        wants_bf16: The recipe asks for bf16 autocast where it pays.
        wants_channels_last: The recipe asks for channels-last memory.
        device: Where the run computes.
        flags: CPU feature flags (default: this machine's).

    Returns:
        The numerics to use, with the CPU described.
    """
    info = _read("/proc/cpuinfo")
    flags = cpu_flags(info) if flags is None else set(flags)
    kind = cpu_class(flags)
    native = wants_bf16 and bf16_is_native(device, flags)
    autocast, reason = "fp32", "the recipe asks for fp32"
    if native:
        where = f"{kind} CPU" if device.type == "cpu" else torch.cuda.get_device_name(device)
        autocast, reason = "bf16", f"{where}: bf16 runs natively and measured faster than fp32"
    elif wants_bf16:
        if device.type == "cuda":
            reason = "this GPU has no bf16; fp32 (fp16 would need loss scaling)"
        elif device.type == "cpu":
            native_flags = ", ".join(sorted(NATIVE_BF16_FLAGS))
            reason = f"{kind} CPU without native bf16 ({native_flags}): emulated bf16 measured 4-12x slower than fp32"
        else:
            reason = f"bf16 autocast is not used on {device.type}"
    return Numerics(
        device=str(device),
        cpu_model=cpu_model(info),
        cpu_class=kind,
        cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
        autocast=autocast,
        channels_last=wants_channels_last,
        reason=reason,
    )


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def record_numerics(run: Run) -> None:
    """A step for :func:`~mnist_cnn.runs.fit` (``RunOptions.steps``): the run's numerics, described in ``run.facts``."""
    config = run.config
    numerics = choose_numerics(bool(config and config.bf16), bool(config and config.channels_last), run.parts.device)
    run.facts["numerics"] = numerics.to_dict()
