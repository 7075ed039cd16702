"""A training run from start to finish: :func:`fit` in three parts (:func:`prepare`, the loop of
:func:`mnist_cnn.engine.train`, :func:`finish`: the test set measured once), what a run records (:func:`result_from`),
:func:`save_run` and :func:`load_or_train`. The command line plugs its controls into the seams ``fit`` offers: steps
between preparing and training (resuming), callbacks (the per-epoch checkpoint, signals, the thread policy) and
:class:`Processes` (several processes under ``torchrun``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_cnn import MODEL_FILE, MODELS_DIR, engine
from mnist_cnn.callbacks import PrintEpochs, ProgressBar, progress_wanted
from mnist_cnn.checkpoint import LoadedCheckpoint, build_payload, load_checkpoint, save_checkpoint
from mnist_cnn.config import TrainConfig
from mnist_cnn.devices import select_device
from mnist_cnn.engine import Callback, History, Reduce, Run
from mnist_cnn.errors import TrainingDiverged, TrainingStopped
from mnist_cnn.files import write_json
from mnist_cnn.presets import get_preset
from mnist_cnn.recipe import build_parts, model_for
from mnist_cnn.reproducibility import deterministic_mode, rng_state, seed_everything
from mnist_cnn.run_data import load_data


@dataclass(frozen=True)
class Processes:
    """Where this process stands among the processes that train one model together (one, unless told otherwise).

    Attributes:
        rank: This process's index, 0 to ``world_size - 1``; process 0 prints and writes files.
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


#: The metrics a run records from its last epoch, and the history key each comes from.
LAST_EPOCH_METRICS = {"val_accuracy": "val_acc", "val_loss": "val_loss", "train_accuracy": "train_acc", "train_loss": "train_loss"}
#: A step :func:`fit` takes between preparing a run and training it (restoring a checkpoint's state is one).
Step = Callable[[Run], None]


@dataclass
class RunOptions:
    """How :func:`fit` runs a recipe (what it trains is the :class:`~mnist_cnn.config.TrainConfig`).

    Attributes:
        data_dir: MNIST root (default: ``$MNIST_DATA_DIR``, else ``data/``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``.
        quiet: No progress bars or per-epoch lines (by default: bars in terminals and notebooks, lines always).
        deterministic: Deterministic kernels (``None``: on for the CPU, where they cost little, off elsewhere);
            restored afterwards.
        steps: Taken in order between preparing and training, each with the :class:`~mnist_cnn.engine.Run`.
        processes: This process's place among several (default: the only one).
    """

    data_dir: str | None = None
    device: str | torch.device = "auto"
    quiet: bool = False
    deterministic: bool | None = None
    steps: Sequence[Step] = ()
    processes: Processes = field(default_factory=Processes)


@dataclass
class TrainResult:
    """What :func:`fit` produces: the model, its recipe, its metrics and the state to resume from after the last epoch."""

    model: nn.Module
    config: TrainConfig
    metrics: dict[str, Any]
    #: Counters, curves, optimizer, schedule and random states (what ``--resume`` restores).
    training_state: dict[str, Any]

    @property
    def history(self) -> History:
        """One row per epoch (:data:`mnist_cnn.engine.HISTORY_KEYS`)."""
        return self.training_state["history"]

    @property
    def step_history(self) -> History:
        """Training loss and learning rate every few steps."""
        return self.training_state["step_history"]


def fit(config: TrainConfig, options: RunOptions | None = None, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train a model as ``config`` says, judging it on the validation split, then measure it once on the test set.

    Args:
        config: A preset from :func:`~mnist_cnn.presets.get_preset` or a custom :class:`~mnist_cnn.config.TrainConfig`.
        options: Where and how to run (default: all defaults).
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
    """Measure the test set once and gather the result.

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
    """A :class:`TrainResult` for the run as it stands, trained by :func:`fit` or step by step (notebook 3).

    Its metrics hold the last epoch's validation numbers and the run's ``facts`` (the test set is not measured here);
    its ``training_state`` holds the counters, optimizer, schedule and random states, so the saved run can resume.

    Args:
        run: The trained run; its ``config`` is the recipe it was trained with.
    """
    if run.config is None:
        raise ValueError("result_from() needs a run that knows its recipe: build the Run with config=...")
    config, parts, history = run.config, run.parts, run.state.history
    facts = {
        "device": str(parts.device),
        "precision": "bf16-autocast" if parts.autocast_dtype is not None else "fp32",
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        **run.facts,
    }
    metrics = {"preset": config.preset, "seed": config.seed, "epochs": config.epochs}
    metrics.update({name: history[key][-1] for name, key in LAST_EPOCH_METRICS.items()}, train_seconds=sum(history["seconds"]), **facts)
    state = {
        **dataclasses.asdict(run.state),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict() if parts.scheduler is not None else None,
        "rng": rng_state(run.generator),
        "deterministic": bool(facts["deterministic"]),
        "world_size": int(facts.get("world_size", 1)),
    }
    return TrainResult(run.network, config, metrics, state)


def checkpoint_payload(result: TrainResult) -> dict[str, Any]:
    """The checkpoint of a result (the one place it is built): weights, recipe, curves, metrics and resumable state."""
    config, state = result.config, result.training_state
    return build_payload(
        result.model,
        arch=config.arch,
        model_options=config.model_options,
        input_scaling=config.input_scaling,
        config=config.to_dict(),
        history=state["history"],
        step_history=state["step_history"],
        metrics=result.metrics,
        training_state=state,
    )


def save_run(result: TrainResult, out: Path, extra_metrics: dict | None = None) -> tuple[Path, Path]:
    """Write ``<out>/model.pt`` and ``<out>/metrics.json`` for a finished run, with ``extra_metrics`` added to its metrics.

    ``model.pt`` carries the run's training state, so the run can be continued later
    (``python -m mnist_cnn.train --resume <out>/model.pt --epochs N``).

    Returns:
        The two paths.
    """
    result = dataclasses.replace(result, metrics={**result.metrics, **(extra_metrics or {})})
    model_path = save_checkpoint(out / MODEL_FILE, checkpoint_payload(result))
    metrics_path = out / "metrics.json"
    write_json(
        metrics_path, {**result.metrics, "config": result.config.to_dict(), "history": result.history, "step_history": result.step_history}
    )
    return model_path, metrics_path


def load_or_train(
    preset: str = "default",
    path: str | Path | None = None,
    data_dir: str | None = None,
    device: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Load ``models/<preset>/model.pt``, training and saving it first if it does not exist yet, so that a notebook
    that needs a trained model runs on its own, in any order.

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
