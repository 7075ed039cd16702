"""The optional parts of a training run, each a :class:`~mnist_cnn.engine.Callback` a run can add or leave out.

======================  ==========  ====================================================================
callback                ``order``   what it does, and at which events
======================  ==========  ====================================================================
:class:`ProgressBar`    0           a tqdm bar over each epoch's batches (``before_epoch``, ``after_step``, ``after_fit``)
:class:`PrintEpochs`    0           one line of losses and accuracies per epoch (``after_epoch``)
:class:`LivePlot`       0           redraws the learning curves in a notebook (``after_step``, ``after_epoch``)
:class:`SaveCheckpoint` 50          writes a resumable checkpoint at every epoch boundary (``after_epoch``)
======================  ==========  ====================================================================

The command line adds two of its own (:mod:`mnist_cnn.tooling.runctl`): stopping on Ctrl-C and other signals
(order 90, asked last) and the opt-in adaptive thread policy (order -10, first).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mnist_cnn.checkpoint import save_checkpoint
from mnist_cnn.engine import Callback, Run
from mnist_cnn.run_record import run_metrics, run_payload, snapshot


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
    """One line per epoch: training and validation loss and accuracy, and the epoch's seconds.

    Args:
        log: Receives each line (default: ``print``).
    """

    def __init__(self, log: Callable[[str], Any] = print) -> None:
        self.log = log

    def after_epoch(self, run: Run) -> None:
        h = run.state.history
        self.log(
            f"epoch {h['epoch'][-1]:>2} | train loss {h['train_loss'][-1]:.4f} acc {h['train_acc'][-1]:.4f}"
            f" | val loss {h['val_loss'][-1]:.4f} acc {h['val_acc'][-1]:.4f} | {h['seconds'][-1]:.1f}s"
        )


class SaveCheckpoint(Callback):
    """Writes a resumable checkpoint (model, recipe, curves, optimizer, schedule, random states) after every epoch,
    and records it as ``run.checkpoint``, the state to resume from if training stops.

    It runs after the callbacks that change the run (``order`` 50), so what they recorded in ``run.facts`` is saved.

    Args:
        path: Where to write; replaced atomically each time.
    """

    order = 50

    def __init__(self, path: Path) -> None:
        self.path = path

    def after_epoch(self, run: Run) -> None:
        if run.config is None:
            raise ValueError("SaveCheckpoint needs a run that knows its recipe: build the Run with config=...")
        state = snapshot(run.state, run.parts, run.generator, run.facts)
        metrics = run_metrics(run.config, run.state, run.facts)
        save_checkpoint(self.path, run_payload(run.network, run.config, state, metrics))
        run.checkpoint = (self.path, run.state.epoch)


class LivePlot(Callback):
    """Learning curves redrawn in place in a notebook while training runs.

    It redraws :func:`mnist_cnn.plots.plot_history` every ``every`` new per-step rows (but no more often than
    every ``min_seconds``) and at every epoch's end, replacing one output in the notebook (IPython's
    ``display_id``), so nbconvert and nbval keep the last drawing. Outside IPython it draws nothing until
    :meth:`figure` is asked for.

    Args:
        every: Redraw after this many new per-step rows (each row is ``log_every`` steps).
        label_smoothing: Passed on to :func:`~mnist_cnn.plots.plot_history` for the loss label.
        min_seconds: Least time between two redraws within an epoch: redrawing every 50 steps made an epoch
            of ``default`` in notebook 3 about a quarter slower than without the plot.
    """

    def __init__(self, every: int = 5, label_smoothing: float | None = None, min_seconds: float = 3.0) -> None:
        self.every = every
        self.label_smoothing = label_smoothing
        self.min_seconds = min_seconds
        self.draws = 0
        self._handle: Any = None
        self._drawn_at = (-1, -1)
        self._drawn_time = -math.inf

    def after_step(self, run: Run) -> None:
        self._maybe_draw(run, epoch_ended=False)

    def after_epoch(self, run: Run) -> None:
        self._maybe_draw(run, epoch_ended=True)

    def _maybe_draw(self, run: Run, epoch_ended: bool) -> None:
        rows, epochs = len(run.state.step_history["step"]), len(run.state.history["epoch"])
        too_soon = rows - self._drawn_at[0] < self.every or time.monotonic() - self._drawn_time < self.min_seconds
        if not epoch_ended and too_soon:
            return
        self._drawn_at, self._drawn_time = (rows, epochs), time.monotonic()
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
