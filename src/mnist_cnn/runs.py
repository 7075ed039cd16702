"""A training run from start to finish: :func:`fit` prepares a recipe's parts, runs the loop with its callbacks,
then measures the test set once; :func:`save_run` writes the result.

``fit()`` reads in three parts: :func:`prepare` (settings, random state, data, model, parts, a resumed state),
the epoch loop of :func:`mnist_cnn.engine.train` with the run's callbacks, and :func:`finish` (the test set,
measured once, after every choice was made on the validation split).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_cnn import engine
from mnist_cnn.callbacks import AdaptiveThreads, PrintEpochs, ProgressBar, SaveCheckpoint, progress_wanted
from mnist_cnn.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from mnist_cnn.config import TrainConfig
from mnist_cnn.devices import select_device
from mnist_cnn.tooling.runctl.distributed import SINGLE_PROCESS, DistributedContext, device_for, init_process_group
from mnist_cnn.engine import Callback, History, Run, TrainingState
from mnist_cnn.errors import ConfigError, TrainingStopped
from mnist_cnn.files import write_json
from mnist_cnn import MODELS_DIR
from mnist_cnn.presets import get_preset
from mnist_cnn.recipe import build_parts, model_for, numerics_for
from mnist_cnn.reproducibility import deterministic_mode, seed_everything
from mnist_cnn.tooling.runctl.resume import restore
from mnist_cnn.run_data import RunData, load_data
from mnist_cnn.run_record import run_metrics, run_payload, snapshot
from mnist_cnn.tooling.runctl.threads import ADAPTIVE, ThreadGovernor, thread_setting, usable_cores


@dataclass
class RunOptions:
    """How :func:`fit` runs a recipe (what it trains is the :class:`~mnist_cnn.config.TrainConfig`).

    Attributes:
        data_dir: MNIST root (default: ``$MNIST_DATA_DIR``, else ``data/``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a ``torch.device``.
        quiet: No progress bars or per-epoch lines (by default: bars in terminals and notebooks, lines always).
        checkpoint_path: Where to write a resumable checkpoint at every epoch boundary (``None``: nowhere).
        resume: Continue this checkpoint's run; the config should come from :func:`mnist_cnn.tooling.runctl.resume.resume_config`.
        deterministic: Deterministic kernels (``None``: on for the CPU, off elsewhere); restored afterwards.
        threads: CPU threads: a fixed number, or ``"adaptive"`` (:class:`~mnist_cnn.callbacks.AdaptiveThreads`);
            ``None`` reads ``$MNIST_CNN_THREADS``, else keeps torch's count. Restored afterwards.
        distributed: This process's place in a multi-process run (default: single process).
    """

    data_dir: str | None = None
    device: str | torch.device = "auto"
    quiet: bool = False
    checkpoint_path: Path | None = None
    resume: LoadedCheckpoint | None = None
    deterministic: bool | None = None
    threads: int | str | None = None
    distributed: DistributedContext = field(default_factory=lambda: SINGLE_PROCESS)


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


@dataclass
class Prepared:
    """Everything :func:`prepare` sets up: the :class:`~mnist_cnn.engine.Run`, its data, its generator and its facts."""

    run: Run
    data: RunData
    generator: torch.Generator
    facts: dict[str, Any]


def default_deterministic(device: torch.device) -> bool:
    """Whether :func:`fit` runs in deterministic mode when not told: on the CPU yes (it costs little there), elsewhere no."""
    return device.type == "cpu"


def fit(config: TrainConfig, options: RunOptions | None = None, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train a model as ``config`` says, judging it on the validation split, then measure it once on the test set.

    Args:
        config: A preset from :func:`~mnist_cnn.presets.get_preset` or a custom :class:`~mnist_cnn.config.TrainConfig`.
        options: Where and how to run (:class:`RunOptions`; default: all defaults).
        callbacks: More :class:`~mnist_cnn.engine.Callback` s, called after the ones ``options`` asks for
            (e.g. :class:`~mnist_cnn.callbacks.StopOnRequest` or :class:`~mnist_cnn.callbacks.LivePlot`).

    Returns:
        The trained model, its metrics (``val_accuracy``, ``val_loss``, ``test_accuracy``, ``test_loss``,
        ``train_seconds`` for the training passes alone, ``load_seconds``, ``validation``...) and its state.

    Raises:
        TrainingStopped: The loss diverged or a callback stopped training; its ``checkpoint_path`` and
            ``checkpoint_epoch`` name the last resumable checkpoint (``None`` if there is none).
    """
    options = options or RunOptions()
    config.validate()
    context = options.distributed
    device = device_for(context, options.device if isinstance(options.device, torch.device) else select_device(options.device))
    deterministic = default_deterministic(device) if options.deterministic is None else options.deterministic
    with deterministic_mode(deterministic), keeping_threads():
        prepared = prepare(config, options, device, deterministic)
        saver = add_callbacks(prepared, config, options, callbacks)
        resumed_at = prepared.run.state.epoch if options.resume is not None else None
        try:
            engine.train(prepared.run, prepared.data.train, prepared.data.val)
        except TrainingStopped as error:
            path, epoch = (options.resume.path, resumed_at) if options.resume is not None else (None, None)
            if saver is not None and saver.saved_path is not None:
                path, epoch = saver.saved_path, saver.saved_epoch
            raise error.with_checkpoint(path, epoch) from None
        return finish(prepared, config)


def prepare(config: TrainConfig, options: RunOptions, device: torch.device, deterministic: bool) -> Prepared:
    """Settings, random state, data, model and training parts for ``config``, restored from ``options.resume`` if given."""
    context = options.distributed
    if context.enabled:
        check_distributed(config, context)
        init_process_group(context, device)
    numerics = numerics_for(config, device)
    threads = set_threads(options.threads, device)
    generator = seed_everything(config.seed)
    torch.set_flush_denormal(config.flush_denormal)
    started = time.perf_counter()
    data = load_data(config, options.data_dir, generator, context)
    load_seconds = time.perf_counter() - started
    # building the model draws from torch's generator; a resumed run restores it afterwards, so its stream continues
    model = model_for(config, device, getattr(data.train, "images", None))
    parts = build_parts(config, model, len(data.train), device, generator, numerics)  # type: ignore[arg-type]
    state = restore(options.resume, model, parts, generator) if options.resume is not None else TrainingState()
    facts = {
        "load_seconds": load_seconds,
        "device": str(device),
        "precision": numerics.precision,
        "numerics": numerics.to_dict(),
        "threads": threads,
        "deterministic": deterministic,
        "world_size": context.world_size,
        "validation": data.validation,
    }
    run = Run(wrap_for_processes(model, context, device), parts, config.epochs, state, context=context)
    return Prepared(run, data, generator, facts)


def add_callbacks(prepared: Prepared, config: TrainConfig, options: RunOptions, extra: Sequence[Callback]) -> SaveCheckpoint | None:
    """Give the run the callbacks ``options`` asks for, then ``extra``; returns the checkpoint writer, if any."""
    run, main = prepared.run, options.distributed.is_main
    saver = None
    if options.threads == ADAPTIVE or (options.threads is None and prepared.facts["threads"]["policy"] == ADAPTIVE):
        governor = ThreadGovernor()
        run.callbacks.append(AdaptiveThreads(governor))
        prepared.facts["threads"]["changes"] = governor.changes  # recorded as the policy changes it
    if main and not options.quiet:
        if progress_wanted():
            run.callbacks.append(ProgressBar())
        run.callbacks.append(PrintEpochs())
        if options.resume is not None:
            print(f"resuming {options.resume.path} after epoch {run.state.epoch} of {config.epochs}")
    if main and options.checkpoint_path is not None:
        saver = SaveCheckpoint(Path(options.checkpoint_path), config, prepared.generator, prepared.facts)
        run.callbacks.append(saver)
    run.callbacks.extend(extra)
    return saver


def finish(prepared: Prepared, config: TrainConfig) -> TrainResult:
    """Measure the test set once, after every choice was made on the validation split, and gather the result."""
    run = prepared.run
    test_loss, test_accuracy = engine.measure(run, prepared.data.test)
    metrics = {**run_metrics(config, run.state, prepared.facts), "test_accuracy": test_accuracy, "test_loss": test_loss}
    model = getattr(run.model, "module", run.model)
    return TrainResult(model, config, metrics, snapshot(run.state, run.parts, prepared.generator, prepared.facts))


def set_threads(requested: int | str | None, device: torch.device) -> dict[str, Any]:
    """Set torch's CPU threads as asked and describe the policy for ``metrics.json``.

    Raises:
        ConfigError: ``requested`` (or ``$MNIST_CNN_THREADS``) is neither ``adaptive`` nor a whole number within the cores.
    """
    if device.type != "cpu":
        return {"policy": "device", "cores": usable_cores(), "changes": []}
    try:
        setting = thread_setting(requested)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if setting == ADAPTIVE:
        return {"policy": ADAPTIVE, "cores": usable_cores(), "changes": []}
    torch.set_num_threads(int(setting))
    return {"policy": "fixed", "cores": usable_cores(), "changes": [[0, int(setting)]]}


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


def result_from(run: Run, config: TrainConfig, generator: torch.Generator | None = None) -> TrainResult:
    """A :class:`TrainResult` for a model trained outside :func:`fit` (e.g. step by step in notebook 3), for :func:`save_run`.

    Its metrics hold the validation numbers of the last epoch; the test set is not measured here.

    Args:
        run: The run the loop trained.
        config: The recipe it was trained with.
        generator: The data generator, whose state makes the saved run resumable.
    """
    facts = {
        "device": str(run.parts.device),
        "precision": "bf16-autocast" if run.parts.autocast_dtype is not None else "fp32",
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "world_size": run.context.world_size,
    }
    model = getattr(run.model, "module", run.model)
    return TrainResult(model, config, run_metrics(config, run.state, facts), snapshot(run.state, run.parts, generator, facts))


def check_distributed(config: TrainConfig, context: DistributedContext) -> None:
    """Refuse a multi-process run that cannot work.

    Raises:
        ConfigError: The pipeline is not in-memory, or the batch does not divide among the processes.
    """
    if config.pipeline != "memory":
        raise ConfigError(f"multi-process training needs the in-memory pipeline, not {config.pipeline!r}")
    if config.batch_size % context.world_size:
        raise ConfigError(
            f"batch size {config.batch_size} must divide evenly among {context.world_size} processes (it is the total over all processes)"
        )


def wrap_for_processes(model: nn.Module, context: DistributedContext, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when there are several processes, else ``model`` itself."""
    if not context.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def save_run(result: TrainResult, out: Path, extra_metrics: dict | None = None) -> tuple[Path, Path]:
    """Write ``<out>/model.pt`` and ``<out>/metrics.json`` for a finished run.

    ``model.pt`` carries the run's training state, so the run can be continued later
    (``python -m mnist_cnn.train --resume <out>/model.pt --epochs N``).

    Returns:
        The two paths.
    """
    metrics = {**result.metrics, **(extra_metrics or {})}
    model_path = save_checkpoint(out / "model.pt", run_payload(result.model, result.config, result.training_state, metrics))
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
    path = Path(path) if path is not None else MODELS_DIR / preset / "model.pt"
    if not path.exists():
        print(f"{path} not found: training preset {preset!r} first")
        save_run(fit(get_preset(preset), RunOptions(data_dir=data_dir)), path.parent)
    return load_checkpoint(path, device=device)
