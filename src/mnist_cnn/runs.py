"""A training run from start to finish: :func:`fit` is :func:`prepare`, the loop of :func:`mnist_cnn.engine.train` and
:func:`finish` (the test set measured once). The command line plugs into the seams ``fit`` offers: steps between preparing
and training (resuming), callbacks (per-epoch checkpoint, signals, thread policy) and :class:`Processes` (``torchrun``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mnist_cnn import engine
from mnist_cnn.callbacks import PrintEpochs, ProgressBar, progress_wanted
from mnist_cnn.config import TrainConfig
from mnist_cnn.devices import select_device
from mnist_cnn.engine import Callback, Reduce, Run
from mnist_cnn.errors import TrainingDiverged, TrainingStopped
from mnist_cnn.recipe import build_parts, model_for
from mnist_cnn.reproducibility import deterministic_mode, seed_everything
from mnist_cnn.results import TrainResult, result_from
from mnist_cnn.run_data import load_data


@dataclass(frozen=True)
class Processes:
    """Where this process stands among those that train one model together (one, unless told otherwise).

    Attributes:
        rank: This process's index; process 0 prints and writes files.
        world_size: Number of processes; each trains on its share of every batch.
        reduce: Averages one process's metrics with the others' (``None``: nothing to average).
        wrap: Wraps the model for training in several processes (e.g. in ``DistributedDataParallel``).
    """

    rank: int = 0
    world_size: int = 1
    reduce: Reduce | None = None
    wrap: Callable[[nn.Module], nn.Module] | None = None

    @property
    def is_main(self) -> bool:
        """True for the process that prints and writes files."""
        return self.rank == 0


#: A step :func:`fit` takes between preparing a run and training it (restoring a checkpoint's state is one).
Step = Callable[[Run], None]


@dataclass
class RunOptions:
    """How :func:`fit` runs a recipe (what it trains is the :class:`~mnist_cnn.config.TrainConfig`).

    Attributes:
        data_dir: MNIST root (default: ``$MNIST_DATA_DIR``, else ``data/``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``.
        quiet: No progress bars or per-epoch lines (by default: bars in terminals and notebooks, lines always).
        deterministic: Deterministic kernels (``None``: on for the CPU, where they cost little), restored afterwards.
        steps: Taken in order between preparing and training, each with the :class:`~mnist_cnn.engine.Run`.
    """

    data_dir: str | None = None
    device: str | torch.device = "auto"
    quiet: bool = False
    deterministic: bool | None = None
    steps: Sequence[Step] = ()
    processes: Processes = field(default_factory=Processes)


def fit(config: TrainConfig, options: RunOptions | None = None, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train a model as ``config`` says, judging it on the validation split, then measure it once on the test set.

    Args:
        config: A preset from :func:`~mnist_cnn.presets.get_preset` or a custom :class:`~mnist_cnn.config.TrainConfig`.
        callbacks: More :class:`~mnist_cnn.engine.Callback` s, after a progress bar and a line per epoch unless ``quiet``.

    Returns:
        The trained model, its metrics (``val_accuracy``, ``val_loss``, ``test_accuracy``, ``test_loss``,
        ``train_seconds`` for the training passes alone, ``load_seconds``, ``validation``...) and its state.

    Raises:
        TrainingStopped: The loss diverged or a callback stopped training; its ``checkpoint_path`` and
            ``checkpoint_epoch`` name the last resumable checkpoint (``run.checkpoint``; ``None`` if there is none).
    """
    options = options or RunOptions()
    config.validate()
    device = options.device if isinstance(options.device, torch.device) else select_device(options.device)
    deterministic = device.type == "cpu" if options.deterministic is None else options.deterministic
    with deterministic_mode(deterministic), keeping_threads():
        run, data = prepare(config, options, device)
        run.facts["deterministic"] = deterministic
        for step in options.steps:
            step(run)
        if options.processes.is_main and not options.quiet:
            run.callbacks += [ProgressBar()] if progress_wanted() else []
            run.callbacks.append(PrintEpochs())
        run.callbacks.extend(callbacks)
        try:
            engine.train(run, data.train, data.val)
            return finish(run, data.test)
        except TrainingStopped as error:
            raise error.with_checkpoint(*(run.checkpoint or (None, None))) from None


def prepare(config: TrainConfig, options: RunOptions, device: torch.device) -> tuple[Run, Any]:
    """Random state, data, model and training parts for ``config``: the :class:`~mnist_cnn.engine.Run` and its data."""
    processes = options.processes
    generator = seed_everything(config.seed)
    torch.set_flush_denormal(config.flush_denormal)
    started = time.perf_counter()
    data = load_data(config, options.data_dir, generator, processes.rank, processes.world_size)
    facts = {
        "load_seconds": time.perf_counter() - started,
        "device": str(device),
        "threads": {"policy": "fixed", "changes": [[0, torch.get_num_threads()]]},
        "world_size": processes.world_size,
        "validation": data.validation,
    }
    # building the model draws from torch's generator; a resumed run restores it afterwards, so its stream continues
    model = model_for(config, device, getattr(data.train, "images", None))
    parts = build_parts(config, model, len(data.train), device, generator)  # type: ignore[arg-type]
    run = Run(
        processes.wrap(model) if processes.wrap is not None else model,
        parts,
        config.epochs,
        config=config,
        generator=generator,
        steps_per_epoch=len(data.train),  # type: ignore[arg-type]
        reduce=processes.reduce,
        facts=facts,
    )
    return run, data


def finish(run: Run, test_batches: engine.Batches) -> TrainResult:
    """Measure the test set once and gather the result; a NaN or infinite test loss raises TrainingDiverged (nothing to save)."""
    test_loss, test_accuracy = engine.measure(run, test_batches)
    if not (math.isfinite(test_loss) and math.isfinite(test_accuracy)):
        raise TrainingDiverged("training diverged: the test loss is NaN or infinite", epoch=run.state.epoch)
    result = result_from(run)
    result.metrics.update(test_accuracy=test_accuracy, test_loss=test_loss)
    return result


@contextlib.contextmanager
def keeping_threads() -> Iterator[None]:
    """Put torch's CPU thread count and denormal handling back afterwards (a notebook kernel goes on after training)."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)
        # a recipe may flush denormals to zero (a processor-wide setting, with no getter): back to IEEE's default
        torch.set_flush_denormal(False)
