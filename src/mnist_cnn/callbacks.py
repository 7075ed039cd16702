"""The optional parts of a training run, each a :class:`~mnist_cnn.engine.Callback` a run can add or leave out.

=====================  =====================================================================================
callback               what it does, and at which events
=====================  =====================================================================================
:class:`ProgressBar`   a tqdm bar over each epoch's batches (``before_epoch``, ``after_step``, ``after_fit``)
:class:`PrintEpochs`   one line of losses and accuracies per epoch (``after_epoch``)
:class:`StopOnRequest` stops after the current batch when asked, e.g. by Ctrl-C (``before_epoch``, ``after_step``)
:class:`SaveCheckpoint` writes a resumable checkpoint at every epoch boundary (``after_epoch``)
:class:`AdaptiveThreads` gives CPU cores to other busy programs, opt-in (``before_fit``, ``after_step``)
:class:`LivePlot`      redraws the learning curves in a notebook (``after_step``, ``after_epoch``)
=====================  =====================================================================================
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from mnist_cnn.checkpoint import save_checkpoint
from mnist_cnn.config import TrainConfig
from mnist_cnn.tooling.runctl.distributed import any_process
from mnist_cnn.engine import Callback, Run
from mnist_cnn.errors import TrainingInterrupted
from mnist_cnn.run_record import run_metrics, run_payload, snapshot
from mnist_cnn.tooling.runctl.threads import ThreadGovernor


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


class StopOnRequest(Callback):
    """Stops training after the current batch once ``should_stop()`` is true in any process.

    The model then holds a partial epoch, which is discarded: the last checkpoint is the state to resume from.
    Every process asks after the same batch, so in a multi-process run all stop together.

    Args:
        should_stop: Asked after every batch, e.g. a :class:`mnist_cnn.tooling.runctl.signals.StopRequest`.
    """

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop

    def _check(self, run: Run, where: str) -> None:
        if any_process(bool(self.should_stop()), run.context):
            raise TrainingInterrupted(f"training interrupted {where}", epoch=run.state.epoch + 1)

    def before_epoch(self, run: Run) -> None:
        self._check(run, "between epochs")

    def after_step(self, run: Run) -> None:
        self._check(run, "during an epoch")


class SaveCheckpoint(Callback):
    """Writes a resumable checkpoint (model, recipe, curves, optimizer, schedule, random states) after every epoch.

    Args:
        path: Where to write; replaced atomically each time.
        config: The recipe, recorded in the file.
        generator: The data generator, whose state is recorded.
        facts: The run's unchanging facts, recorded in the metrics.

    Attributes:
        saved_path: The last checkpoint written (``None`` until there is one).
        saved_epoch: The epoch it ends with.
    """

    def __init__(self, path: Path, config: TrainConfig, generator: torch.Generator, facts: dict[str, Any]) -> None:
        self.path, self.config, self.generator, self.facts = path, config, generator, facts
        self.saved_path: Path | None = None
        self.saved_epoch: int | None = None

    def after_epoch(self, run: Run) -> None:
        model = getattr(run.model, "module", run.model)  # the network, not its multi-process wrapper
        state = snapshot(run.state, run.parts, self.generator, self.facts)
        save_checkpoint(self.path, run_payload(model, self.config, state, run_metrics(self.config, run.state, self.facts)))
        self.saved_path, self.saved_epoch = self.path, run.state.epoch


class AdaptiveThreads(Callback):
    """Opt-in: keeps torch's CPU threads to the cores other programs leave free (:class:`mnist_cnn.tooling.runctl.threads.ThreadGovernor`).

    Results then depend on the machine's load (reductions split differently with the thread count), so runs
    are not bit-identical; ``governor.changes`` records what was used.

    Args:
        governor: The policy (default: one for this process's cores).
    """

    def __init__(self, governor: ThreadGovernor | None = None) -> None:
        self.governor = governor if governor is not None else ThreadGovernor()

    def before_fit(self, run: Run) -> None:
        self.governor.start(run.state.step)

    def after_step(self, run: Run) -> None:
        self.governor.update(run.state.step)


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
