"""A training run from start to finish: :func:`fit` prepares a recipe's parts, runs the loop with its callbacks,
then measures the test set once; :func:`save_run` writes the result and :func:`load_or_train` reads it back.

``fit()`` reads in three parts: :func:`prepare` (settings, random state, data, model, parts), the epoch loop of
:func:`mnist_cnn.engine.train` with the run's callbacks, and :func:`finish` (the test set, measured once, after every
choice was made on the validation split). The command line plugs its controls into seams ``fit`` offers: steps
taken between preparing and training (resuming a checkpoint), callbacks (signals, the thread policy) and
:class:`Processes` (several processes under ``torchrun``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_cnn import MODEL_FILE, MODELS_DIR, engine
from mnist_cnn.callbacks import PrintEpochs, ProgressBar, SaveCheckpoint, progress_wanted
from mnist_cnn.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from mnist_cnn.config import TrainConfig
from mnist_cnn.devices import select_device
from mnist_cnn.engine import Callback, History, Reduce, Run, single_process
from mnist_cnn.errors import TrainingDiverged, TrainingStopped
from mnist_cnn.files import write_json
from mnist_cnn.presets import get_preset
from mnist_cnn.recipe import build_parts, model_for
from mnist_cnn.reproducibility import deterministic_mode, seed_everything
from mnist_cnn.run_data import load_data
from mnist_cnn.run_record import run_metrics, run_payload, snapshot


@dataclass(frozen=True)
class Processes:
    """Where this process stands among the processes that train one model together (one, unless told otherwise).

    Attributes:
        rank: This process's index, 0 to ``world_size - 1``; process 0 prints and writes files.
        world_size: Number of processes; each trains on its share of every batch.
        reduce: Averages one process's metrics with the others'.
        wrap: Wraps the model for training in several processes (e.g. in ``DistributedDataParallel``).
    """

    rank: int = 0
    world_size: int = 1
    reduce: Reduce = single_process
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
        checkpoint_path: Where to write a resumable checkpoint at every epoch boundary (``None``: nowhere).
        deterministic: Deterministic kernels (``None``: on for the CPU, off elsewhere); restored afterwards.
        steps: Taken in order between preparing and training, each with the :class:`~mnist_cnn.engine.Run`
            (the command line's ``--resume`` restores a checkpoint's state this way).
        processes: This process's place among several (default: the only one).
    """

    data_dir: str | None = None
    device: str | torch.device = "auto"
    quiet: bool = False
    checkpoint_path: Path | None = None
    deterministic: bool | None = None
    steps: Sequence[Step] = ()
    processes: Processes = field(default_factory=Processes)


@dataclass
class TrainResult:
    """What :func:`fit` produces: the model, its recipe, final metrics and the resumable state after the last epoch."""

    model: nn.Module
    config: TrainConfig
    metrics: dict[str, Any]
    #: Counters, curves, optimizer, schedule and random states (:func:`mnist_cnn.run_record.snapshot`).
    training_state: dict[str, Any]

    @property
    def history(self) -> History:
        """One row per epoch (:data:`mnist_cnn.engine.HISTORY_KEYS`)."""
        return self.training_state["history"]

    @property
    def step_history(self) -> History:
        """Training loss and learning rate every few steps."""
        return self.training_state["step_history"]


def default_deterministic(device: torch.device) -> bool:
    """Whether :func:`fit` runs in deterministic mode when not told: on the CPU yes (it costs little there), elsewhere no."""
    return device.type == "cpu"


def fit(config: TrainConfig, options: RunOptions | None = None, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train a model as ``config`` says, judging it on the validation split, then measure it once on the test set.

    Args:
        config: A preset from :func:`~mnist_cnn.presets.get_preset` or a custom :class:`~mnist_cnn.config.TrainConfig`.
        options: Where and how to run (:class:`RunOptions`; default: all defaults).
        callbacks: More :class:`~mnist_cnn.engine.Callback` s (e.g. :class:`~mnist_cnn.callbacks.LivePlot`).

    Returns:
        The trained model, its metrics (``val_accuracy``, ``val_loss``, ``test_accuracy``, ``test_loss``,
        ``train_seconds`` for the training passes alone, ``load_seconds``, ``validation``...) and its state.

    Raises:
        TrainingStopped: The loss diverged or a callback stopped training; its ``checkpoint_path`` and
            ``checkpoint_epoch`` name the last resumable checkpoint (``None`` if there is none).
    """
    options = options or RunOptions()
    config.validate()
    device = options.device if isinstance(options.device, torch.device) else select_device(options.device)
    deterministic = default_deterministic(device) if options.deterministic is None else options.deterministic
    with deterministic_mode(deterministic), keeping_threads():
        run, data = prepare(config, options, device)
        run.facts["deterministic"] = deterministic
        for step in options.steps:
            step(run)
        add_callbacks(run, options, callbacks)
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


def add_callbacks(run: Run, options: RunOptions, extra: Sequence[Callback]) -> None:
    """Give the run the callbacks ``options`` asks for, then ``extra`` (each runs by its ``order``)."""
    main = options.processes.is_main
    if main and not options.quiet:
        if progress_wanted():
            run.callbacks.append(ProgressBar())
        run.callbacks.append(PrintEpochs())
    if main and options.checkpoint_path is not None:
        run.callbacks.append(SaveCheckpoint(Path(options.checkpoint_path)))
    run.callbacks.extend(extra)


def finish(run: Run, test_batches: engine.Batches) -> TrainResult:
    """Measure the test set once, after every choice was made on the validation split, and gather the result.

    Raises:
        TrainingDiverged: The test loss is NaN or infinite: the model is not a result to save.
    """
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


def result_from(run: Run) -> TrainResult:
    """A :class:`TrainResult` for the run as it stands: trained by :func:`fit`, or step by step (notebook 3).

    Its metrics hold the validation numbers of the last epoch; the test set is not measured here.

    Args:
        run: The run the loop trained; its ``config`` is the recipe it was trained with, and its ``generator``
            (if any) makes the saved run resumable.
    """
    if run.config is None:
        raise ValueError("result_from() needs a run that knows its recipe: build the Run with config=...")
    facts = {
        "device": str(run.parts.device),
        "precision": "bf16-autocast" if run.parts.autocast_dtype is not None else "fp32",
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        **run.facts,
    }
    metrics = run_metrics(run.config, run.state, facts)
    return TrainResult(run.network, run.config, metrics, snapshot(run.state, run.parts, run.generator, facts))


def save_run(result: TrainResult, out: Path, extra_metrics: dict | None = None) -> tuple[Path, Path]:
    """Write ``<out>/model.pt`` and ``<out>/metrics.json`` for a finished run.

    ``model.pt`` carries the run's training state, so the run can be continued later
    (``python -m mnist_cnn.train --resume <out>/model.pt --epochs N``).

    Returns:
        The two paths.
    """
    metrics = {**result.metrics, **(extra_metrics or {})}
    model_path = save_checkpoint(out / MODEL_FILE, run_payload(result.model, result.config, result.training_state, metrics))
    metrics_path = out / "metrics.json"
    write_json(metrics_path, {**metrics, "config": result.config.to_dict(), "history": result.history, "step_history": result.step_history})
    return model_path, metrics_path


def load_or_train(
    preset: str = "default",
    path: str | Path | None = None,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load ``models/<preset>/model.pt``, training and saving it first if it does not exist yet.

    Lets a notebook that needs a trained model run on its own, in any order.

    Args:
        preset: Preset to train with when the file is missing.
        path: Checkpoint path (default: ``models/<preset>/model.pt``).
        data_dir: MNIST root, as for :func:`fit`.
        device: Where to put the loaded model.
    """
    path = Path(path) if path is not None else MODELS_DIR / preset / MODEL_FILE
    if not path.exists():
        print(f"{path} not found: training preset {preset!r} first")
        save_run(fit(get_preset(preset), RunOptions(data_dir=data_dir)), path.parent)
    return load_checkpoint(path, device=device)
