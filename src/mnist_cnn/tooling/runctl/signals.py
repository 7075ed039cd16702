"""Stopping training at a safe point when the user presses Ctrl-C or the process is sent SIGTERM or SIGHUP."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

from mnist_cnn.engine import Callback, Run
from mnist_cnn.errors import TrainingInterrupted
from mnist_cnn.tooling.runctl.distributed import SINGLE_PROCESS, DistributedContext, any_process

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


class StopOnRequest(Callback):
    """Stops training after the current batch once ``should_stop()`` is true in any process.

    The model then holds a partial epoch, which is discarded: the last checkpoint is the state to resume from.
    Every process asks after the same batch, so in a multi-process run all stop together. It is asked last
    (``order`` 90), after the other callbacks have seen the step.

    Args:
        should_stop: Asked after every batch, e.g. a :class:`StopRequest`.
        context: The processes that must agree on stopping (default: this one alone).
    """

    order = 90

    def __init__(self, should_stop: Callable[[], bool], context: DistributedContext = SINGLE_PROCESS) -> None:
        self.should_stop = should_stop
        self.context = context

    def _check(self, run: Run, where: str) -> None:
        if any_process(bool(self.should_stop()), self.context):
            raise TrainingInterrupted(f"training interrupted {where}", epoch=run.state.epoch + 1)

    def before_epoch(self, run: Run) -> None:
        self._check(run, "between epochs")

    def after_step(self, run: Run) -> None:
        self._check(run, "during an epoch")
