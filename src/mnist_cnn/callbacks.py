"""The optional parts of a training run, each a :class:`~mnist_cnn.engine.Callback`: a progress bar, a line per epoch and
live learning curves. The command line adds its own (``tooling/runctl``): per-epoch checkpoint, signals, thread policy.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

from mnist_cnn.engine import Callback, Run


def progress_wanted() -> bool:
    """Whether bars help here: in a terminal or a Jupyter kernel yes, in plain logs no."""
    return "ipykernel" in sys.modules or sys.stderr.isatty()


class ProgressBar(Callback):
    """A tqdm bar over each epoch's batches, removed when the epoch ends."""

    def __init__(self) -> None:
        self.bar: Any = None

    def before_epoch(self, run: Run) -> None:
        self.bar = tqdm(total=run.steps_per_epoch, desc=f"epoch {run.state.epoch + 1}/{run.epochs}", leave=False)

    def after_step(self, run: Run) -> None:
        if self.bar is not None:
            self.bar.update()

    def after_epoch(self, run: Run) -> None:
        self.after_fit(run)

    def after_fit(self, run: Run) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class PrintEpochs(Callback):
    """One line per epoch: training and validation loss and accuracy, and the epoch's seconds (to ``log``, default print)."""

    def __init__(self, log: Callable[[str], Any] = print) -> None:
        self.log = log

    def after_epoch(self, run: Run) -> None:
        h = run.state.history
        self.log(
            f"epoch {h['epoch'][-1]:>2} | train loss {h['train_loss'][-1]:.4f} acc {h['train_acc'][-1]:.4f}"
            f" | val loss {h['val_loss'][-1]:.4f} acc {h['val_acc'][-1]:.4f} | {h['seconds'][-1]:.1f}s"
        )


class LivePlot(Callback):
    """Learning curves redrawn in place in a notebook while training runs (:func:`mnist_cnn.plots.plot_history`).

    Each drawing replaces one output (IPython's ``display_id``), so nbconvert and nbval keep the last; outside IPython
    nothing is drawn until :meth:`figure` is asked for.

    Args:
        every: Redraw after this many new per-step rows (each ``log_every`` steps), and at every epoch's end.
        label_smoothing: For the loss axis's label.
        min_seconds: Least time between two redraws within an epoch (redrawing every 50 steps slowed an epoch by a quarter).
    """

    def __init__(self, every: int = 5, label_smoothing: float | None = None, min_seconds: float = 3.0) -> None:
        self.every = every
        self.label_smoothing = label_smoothing
        self.min_seconds = min_seconds
        self.draws = 0
        self._handle: Any = None
        self._drawn_rows, self._drawn_time = -1, -math.inf

    def after_step(self, run: Run) -> None:
        self._maybe_draw(run, epoch_ended=False)

    def after_epoch(self, run: Run) -> None:
        self._maybe_draw(run, epoch_ended=True)

    def _maybe_draw(self, run: Run, epoch_ended: bool) -> None:
        rows = len(run.state.step_history["step"])
        too_soon = rows - self._drawn_rows < self.every or time.monotonic() - self._drawn_time < self.min_seconds
        if not epoch_ended and too_soon:
            return
        self._drawn_rows, self._drawn_time = rows, time.monotonic()
        try:  # IPython comes with Jupyter; the package itself does not need it
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        import matplotlib.pyplot as plt

        fig = self.figure(run)
        if self._handle is None:
            self._handle = display(fig, display_id=True)
        else:
            self._handle.update(fig)
        plt.close(fig)  # shown through the display handle only, not again when the cell ends
        self.draws += 1

    def figure(self, run: Run) -> Any:
        """The curves of ``run`` as they stand now (a matplotlib ``Figure``)."""
        from mnist_cnn.plots import plot_history

        return plot_history(run.state.history, run.state.step_history, self.label_smoothing)
