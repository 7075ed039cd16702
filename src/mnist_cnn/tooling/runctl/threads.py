"""CPU threads for training: a fixed count (the reproducible default), or an opt-in policy that gives cores to busy programs."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_cnn.engine import Callback, Run

if TYPE_CHECKING:
    import torch

#: ``MNIST_CNN_THREADS``: a fixed number of threads, or ``adaptive``; unset: torch's own count.
THREADS_VARIABLE = "MNIST_CNN_THREADS"
ADAPTIVE = "adaptive"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_setting(requested: int | str | None = None, cores: int | None = None) -> int | str:
    """The thread policy asked for: a fixed number of threads, or :data:`ADAPTIVE`.

    Args:
        requested: A number of threads, ``"adaptive"``, or ``None`` to read ``$MNIST_CNN_THREADS`` (unset or
            empty: torch's current count, so the same command on the same machine gives the same weights).
        cores: The most threads allowed (default: this process's cores): more only slows training down, and
            tens of thousands make OpenMP fail to create them.

    Returns:
        A whole number from 1 to ``cores``, or ``"adaptive"``.

    Raises:
        ValueError: Neither ``adaptive`` nor a whole number in that range.
    """
    cores = cores or usable_cores()
    value = os.environ.get(THREADS_VARIABLE, "") if requested is None else requested
    text = str(value).strip().lower()
    if text in ("adaptive", "auto"):
        return ADAPTIVE
    if text == "" and requested is None:
        import torch  # here, so that argument parsers can use this module without importing torch

        return torch.get_num_threads()
    # plain digits only: int() would also take "1_000", "+3" or " 2 "
    if isinstance(value, bool) or not text.isdigit() or not 1 <= int(text) <= cores:
        raise ValueError(f"threads must be 'adaptive' or a whole number from 1 to {cores} (this machine's cores), got {value!r}")
    return int(text)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


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


class OtherProgramsLoad:
    """Measures the cores' worth of CPU time other programs used since the last call, from ``/proc``.

    ``/proc/stat`` (busy ticks of this process's cores) minus ``/proc/self/stat`` (this process's own ticks).
    """

    def __init__(self) -> None:
        try:
            self.core_ids = set(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            self.core_ids = set(range(usable_cores()))
        self.available = Path("/proc/stat").exists() and Path("/proc/self/stat").exists()
        self._last: tuple[float, int, int] | None = None

    def __call__(self) -> float | None:
        """Cores other programs kept busy since the last call (``None`` on the first call, or without ``/proc``)."""
        if not self.available:
            return None
        now = time.monotonic()
        busy, own = _busy_ticks(self.core_ids, _read("/proc/stat")), _own_ticks(_read("/proc/self/stat"))
        last, self._last = self._last, (now, busy, own)
        if last is None or now <= last[0]:
            return None
        return max(0.0, ((busy - last[1]) - (own - last[2])) / os.sysconf("SC_CLK_TCK") / (now - last[0]))


@dataclass
class ThreadGovernor:
    """Keeps torch's CPU threads to the cores other programs leave free, so training shares a busy CPU gracefully.

    Torch's threads busy-wait for work between operations, which is the fastest way to run alone; beside
    another busy program, spinning threads on every core fight it and a training step took several times as
    long, where one thread fewer gave way. So: every ``interval`` seconds, read how much CPU other programs
    took and use the cores they left (at least one). Only :func:`torch.set_num_threads` is used, which works
    at any time, in a notebook kernel too (OpenMP environment variables set after start-up come too late).

    Attributes:
        cores: Cores this process may use.
        interval: Seconds between readings.
        load: Returns the cores' worth of CPU other programs used since its last call, or ``None`` when it cannot
            tell (default: :class:`OtherProgramsLoad`; tests feed readings).
        clock: Seconds, for the interval (default: ``time.monotonic``).
        changes: ``[step, threads]`` each time the count was set, starting with the first.
    """

    cores: int = field(default_factory=usable_cores)
    interval: float = 1.0
    load: Callable[[], float | None] = field(default_factory=OtherProgramsLoad)
    clock: Callable[[], float] = time.monotonic
    changes: list[list[int]] = field(default_factory=list)
    _read_at: float = field(default=-float("inf"), repr=False)

    def threads_for(self, others: float) -> int:
        """Threads to use when other programs keep ``others`` cores busy: the cores they leave, at least one."""
        # a program using half a core or more takes a core: time-sliced with it, a spinning thread loses more than it gains
        return max(1, min(self.cores, self.cores - int(others + 0.5)))

    def start(self, step: int = 0, sample_seconds: float = 0.1) -> None:
        """Take a first reading over a short sample and set the threads for the start of training."""
        self.load()
        time.sleep(sample_seconds)
        self._read_at = self.clock()
        self._apply(step, self.load() or 0.0)

    def update(self, step: int) -> None:
        """Called after every training step; reads the load and adjusts at most every ``interval`` seconds."""
        if self.clock() - self._read_at < self.interval:
            return
        self._read_at = self.clock()
        others = self.load()
        if others is not None:
            self._apply(step, others)

    def _apply(self, step: int, others: float) -> None:
        threads = self.threads_for(others)
        if not self.changes or self.changes[-1][1] != threads:
            import torch

            torch.set_num_threads(threads)
            self.changes.append([step, threads])


class FixedThreads(Callback):
    """Trains with a fixed number of CPU threads (the reproducible policy) and records it in ``run.facts["threads"]``.

    Args:
        count: Threads to use from the start of training.
    """

    order = -10

    def __init__(self, count: int) -> None:
        self.count = count

    def before_fit(self, run: Run) -> None:
        import torch

        torch.set_num_threads(self.count)
        run.facts["threads"] = {"policy": "fixed", "cores": usable_cores(), "changes": [[0, self.count]]}


class AdaptiveThreads(Callback):
    """Opt-in: keeps torch's CPU threads to the cores other programs leave free (:class:`ThreadGovernor`).

    Results then depend on the machine's load (reductions split differently with the thread count), so runs
    are not bit-identical; ``run.facts["threads"]`` records every count used, as ``[step, threads]``.

    Args:
        governor: The policy (default: one for this process's cores).
    """

    order = -10

    def __init__(self, governor: ThreadGovernor | None = None) -> None:
        self.governor = governor if governor is not None else ThreadGovernor()

    def before_fit(self, run: Run) -> None:
        self.governor.start(run.state.step)
        self._record(run)

    def after_step(self, run: Run) -> None:
        seen = len(self.governor.changes)
        self.governor.update(run.state.step)
        if len(self.governor.changes) != seen:
            self._record(run)

    def _record(self, run: Run) -> None:
        changes = [list(change) for change in self.governor.changes]
        run.facts["threads"] = {"policy": ADAPTIVE, "cores": self.governor.cores, "changes": changes}


def thread_policy(requested: int | str | None, device: torch.device) -> Callback | None:
    """The callback that applies the thread policy asked for, or ``None`` off the CPU.

    Args:
        requested: A number of threads, ``"adaptive"``, or ``None`` for ``$MNIST_CNN_THREADS`` (else torch's count).
        device: Where training runs; threads matter on the CPU only.

    Raises:
        ConfigError: ``requested`` (or ``$MNIST_CNN_THREADS``) is neither ``adaptive`` nor a whole number within the cores.
    """
    from mnist_cnn.errors import ConfigError

    if device.type != "cpu":
        return None
    try:
        setting = thread_setting(requested)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return AdaptiveThreads() if setting == ADAPTIVE else FixedThreads(int(setting))
