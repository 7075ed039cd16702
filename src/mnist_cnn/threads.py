"""CPU threads for training: a fixed count (the reproducible default), or an opt-in policy that gives cores to other busy programs."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


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
