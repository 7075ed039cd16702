"""Numerics chosen for the machine: bf16 autocast and channels-last from what the CPU really has, and CPU threads
that give way when other programs need the cores.

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

import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

#: CPU classes, best bf16 support first.
CPU_CLASSES = ("amx-bf16", "avx512-bf16", "avx512", "avx2", "other")
#: Classes whose bf16 runs on native instructions (elsewhere it is emulated and slower than fp32).
NATIVE_BF16_CLASSES = ("amx-bf16", "avx512-bf16")


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is no such file, e.g. macOS)."""
    text = cpuinfo if cpuinfo is not None else _read("/proc/cpuinfo")
    for line in text.splitlines():
        if line.startswith(("flags", "Features")):
            return set(line.split(":", 1)[1].split())
    return set()


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
    capability = str(torch.backends.cpu.get_cpu_capability())
    autocast, reason = "fp32", "the recipe asks for fp32"
    if wants_bf16 and device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            autocast, reason = "bf16", f"{torch.cuda.get_device_name(device)} runs bf16 natively"
        else:
            reason = "this GPU has no bf16; fp32 (fp16 would need loss scaling)"
    elif wants_bf16 and device.type == "cpu":
        # oneDNN's own check also honours ONEDNN_MAX_CPU_ISA, so a CPU restricted to AVX2 counts as one.
        onednn_bf16 = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if kind in NATIVE_BF16_CLASSES and onednn_bf16:
            autocast, reason = "bf16", f"{kind} CPU: bf16 runs natively and measured faster than fp32"
        else:
            reason = f"{kind} CPU without native bf16 (oneDNN bf16: {onednn_bf16}): emulated bf16 measured 4-12x slower than fp32"
    elif wants_bf16:
        reason = f"bf16 autocast is not used on {device.type}"
    return Numerics(
        device=str(device),
        cpu_model=cpu_model(info),
        cpu_class=kind,
        cpu_capability=capability,
        autocast=autocast,
        channels_last=wants_channels_last,
        reason=reason,
    )


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


# --- threads -----------------------------------------------------------------------------------------------------

#: ``MNIST_CNN_THREADS``: ``adaptive`` (the default) or a fixed number of threads.
THREADS_VARIABLE = "MNIST_CNN_THREADS"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_setting(requested: int | str | None = None) -> int | None:
    """The fixed thread count asked for, or ``None`` for the adaptive policy.

    Args:
        requested: A number of threads, ``"adaptive"``, or ``None`` to read ``$MNIST_CNN_THREADS``.

    Raises:
        ValueError: Neither ``adaptive`` nor a whole number from 1 up.
    """
    value = os.environ.get(THREADS_VARIABLE, "adaptive") if requested is None else requested
    if isinstance(value, str) and value.strip().lower() in ("", "adaptive", "auto"):
        return None
    try:
        threads = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"threads must be 'adaptive' or a whole number from 1, got {value!r}") from None
    if threads < 1:
        raise ValueError(f"threads must be 'adaptive' or a whole number from 1, got {value!r}")
    return threads


def _busy_ticks(cores: set[int], stat: str) -> int:
    """Busy clock ticks (user, nice, system, irq, softirq) summed over ``cores`` from ``/proc/stat``'s text."""
    total = 0
    for line in stat.splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in rest.split()[:7])
            total += user + nice + system + irq + softirq
    return total


def _own_ticks(stat: str) -> int:
    """This process's user + system clock ticks, all threads, from ``/proc/self/stat``'s text."""
    # the command name (field 2) may hold spaces; the fields after its closing parenthesis are fixed
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@dataclass
class ThreadGovernor:
    """Keeps torch's CPU threads to the cores other programs leave free, so training shares a busy CPU gracefully.

    Torch's threads busy-wait for work between operations, which is the fastest way to run alone; beside
    another busy program, two spinning threads on two cores fight it and a training step took 3.5x as long,
    where one thread gave way (1.04x) but ran 1.55x slower alone. So: every ``interval`` seconds, measure how
    much CPU time other programs took (``/proc/stat`` minus this process's own ``/proc/self/stat``) and use
    the cores they left (at least one). Only :func:`torch.set_num_threads` is used, which works at any time,
    in a notebook kernel too (OpenMP environment variables set after start-up come too late).

    Results depend on the thread count (reductions split differently), so a run that must be bit-identical to
    another fixes it: ``--threads N`` or ``MNIST_CNN_THREADS=N``. ``changes`` records what was used.

    Attributes:
        cores: Cores this process may use.
        interval: Seconds between measurements.
        enabled: Whether to adapt at all (``False``: torch's threads are left alone).
        changes: ``[step, threads]`` each time the count was set, starting with the first.
    """

    cores: int = field(default_factory=usable_cores)
    interval: float = 1.0
    enabled: bool = True
    changes: list[list[int]] = field(default_factory=list)
    _core_ids: set[int] = field(default_factory=set, repr=False)
    _last: tuple[float, int, int] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        try:
            self._core_ids = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self._core_ids = set(range(self.cores))
        self.enabled = self.enabled and Path("/proc/stat").exists() and Path("/proc/self/stat").exists()

    def other_programs_cores(self) -> float | None:
        """Cores' worth of CPU time other programs used since the last call (``None`` on the first call)."""
        now = time.monotonic()
        busy = _busy_ticks(self._core_ids, _read("/proc/stat"))
        own = _own_ticks(_read("/proc/self/stat"))
        last, self._last = self._last, (now, busy, own)
        if last is None or now <= last[0]:
            return None
        ticks_per_second = os.sysconf("SC_CLK_TCK")
        return max(0.0, ((busy - last[1]) - (own - last[2])) / ticks_per_second / (now - last[0]))

    def threads_for(self, others: float) -> int:
        """Threads to use when other programs keep ``others`` cores busy: the cores they leave, at least one."""
        # a program using half a core or more takes a core: time-sliced with it, a spinning thread loses more than it gains
        return max(1, min(self.cores, self.cores - int(others + 0.5)))

    def start(self, step: int = 0) -> None:
        """Take the first measurement (over a short sample) and set the threads for the start of training."""
        if not self.enabled:
            return
        self.other_programs_cores()
        time.sleep(0.1)
        self._apply(step, self.other_programs_cores() or 0.0)

    def update(self, step: int) -> None:
        """Called after every training step; measures and adjusts at most every ``interval`` seconds."""
        if not self.enabled or self._last is None or time.monotonic() - self._last[0] < self.interval:
            return
        others = self.other_programs_cores()
        if others is not None:
            self._apply(step, others)

    def _apply(self, step: int, others: float) -> None:
        threads = self.threads_for(others)
        if not self.changes or self.changes[-1][1] != threads:
            torch.set_num_threads(threads)
            self.changes.append([step, threads])


def fixed_threads(threads: int) -> ThreadGovernor:
    """A governor that sets ``threads`` once and never adapts (for reproducible runs)."""
    torch.set_num_threads(threads)
    return ThreadGovernor(enabled=False, changes=[[0, threads]])
