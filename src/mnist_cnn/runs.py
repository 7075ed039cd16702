"""A training run from start to finish: ``fit()`` wires data, model, optimizer and loop; saving, resuming, loading.

``fit()`` reads top to bottom: settings, random state, data (training, validation, test), model, training
parts, resumed state, the epoch loop of :func:`mnist_cnn.engine.train` with a checkpoint at every epoch
boundary, then the test set, measured once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_cnn import data as mnist_data
from mnist_cnn import engine
from mnist_cnn.augment import RandomAffine
from mnist_cnn.checkpoint import LoadedCheckpoint, build_payload, load_checkpoint, save_checkpoint, validate_training_state
from mnist_cnn.config import TrainConfig
from mnist_cnn.devices import select_device
from mnist_cnn.distributed import SINGLE_PROCESS, DistributedContext, device_for, init_process_group
from mnist_cnn.engine import Batches, History, Loop, TrainingState, TrainParts
from mnist_cnn.errors import CheckpointError, ConfigError, TrainingStopped
from mnist_cnn.files import write_json
from mnist_cnn.model import build_model
from mnist_cnn.numerics import Numerics, choose_numerics
from mnist_cnn.paths import MODELS_DIR
from mnist_cnn.presets import get_preset
from mnist_cnn.reproducibility import deterministic_mode, seed_everything, set_rng_state
from mnist_cnn.threads import ThreadGovernor, fixed_threads, thread_setting


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer the config names."""
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def build_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-batch learning-rate schedule, or ``None`` for a constant rate."""
    total_steps = config.epochs * steps_per_epoch
    # OneCycle needs at least two steps in each phase; tiny smoke runs keep a constant rate instead.
    if config.schedule == "constant" or total_steps < 4:
        return None
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        total_steps=total_steps,
        pct_start=min(max(config.onecycle_pct_start, 2 / total_steps), 0.5),
        cycle_momentum=config.cycle_momentum and config.optimizer == "sgd" and config.momentum > 0,
    )


def numerics_for(config: TrainConfig, device: torch.device) -> Numerics:
    """bf16 autocast when the config asks for it and the device runs it natively (else fp32), channels-last as asked."""
    return choose_numerics(config.bf16, config.channels_last, device)


@contextlib.contextmanager
def _restoring_threads(count: int) -> Any:
    """Put torch's CPU thread count back afterwards (a notebook kernel goes on after training)."""
    try:
        yield
    finally:
        torch.set_num_threads(count)


def thread_governor_for(device: torch.device, threads: int | str | None) -> ThreadGovernor | None:
    """On the CPU, the thread policy asked for: ``threads`` (or ``$MNIST_CNN_THREADS``) fixed, else adaptive.

    Raises:
        ConfigError: ``threads`` is neither a positive whole number nor ``"adaptive"``.
    """
    if device.type != "cpu":
        return None
    try:
        fixed = thread_setting(threads)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    return fixed_threads(fixed) if fixed is not None else ThreadGovernor()


def default_deterministic(device: torch.device) -> bool:
    """Whether :func:`fit` runs in deterministic mode when not told: on the CPU yes (it costs little there), elsewhere no."""
    return device.type == "cpu"


def model_for(config: TrainConfig, device: torch.device) -> nn.Module:
    """The network ``config`` names, freshly initialised on ``device``, in channels-last memory when it asks for that.

    Args:
        config: The recipe (``arch``, ``model_options``, ``channels_last``).
        device: Where the parameters live.
    """
    model = build_model(config.arch, **config.model_options).to(device)
    return model.to(memory_format=torch.channels_last) if config.channels_last else model


def build_parts(
    config: TrainConfig,
    model: nn.Module,
    steps_per_epoch: int,
    device: torch.device,
    generator: torch.Generator,
    numerics: Numerics | None = None,
) -> TrainParts:
    """The loss, optimizer, schedule, augmentation and precision ``config`` names, for ``model`` on ``device``.

    Args:
        config: The recipe.
        model: The network the optimizer updates.
        steps_per_epoch: Batches per epoch (the one-cycle schedule is planned over all epochs).
        device: Where to compute.
        generator: The run's data generator (augmentation draws from it).
        numerics: The precision already chosen for ``config`` on ``device`` (default: :func:`numerics_for`).
    """
    optimizer = build_optimizer(config, model)
    return TrainParts(
        loss_fn=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        optimizer=optimizer,
        scheduler=build_scheduler(config, optimizer, steps_per_epoch),
        augment=RandomAffine(**config.augment, generator=generator) if config.augment else None,
        device=device,
        autocast_dtype=(numerics or numerics_for(config, device)).autocast_dtype,
        channels_last=config.channels_last,
    )


@dataclass
class RunData:
    """The batches of one run: training, validation (per-epoch curves and choices) and test (measured once, at the end).

    Attributes:
        train: Training batches: the 55,000 images outside the validation split (all 60,000 for the
            ``seed`` preset's torchvision pipeline).
        val: The 5,000 validation images, this process's shard.
        test: The 10,000 test images, this process's shard.
        validation: What identifies the validation split (:func:`mnist_cnn.data.describe_validation`).
    """

    train: Batches
    val: mnist_data.InMemoryBatches
    test: mnist_data.InMemoryBatches
    validation: dict[str, Any]


def load_data(
    config: TrainConfig, data_dir: str | None, generator: torch.Generator, context: DistributedContext = SINGLE_PROCESS
) -> RunData:
    """Read MNIST and serve it as ``config`` says, holding the validation split out of the training images.

    Args:
        config: Pipeline, batch sizes, input scaling and the optional ``train_size``/``val_size``/``test_size`` slices.
        data_dir: MNIST root (default: ``$MNIST_DATA_DIR``, else ``data/``).
        generator: Shuffles the training batches.
        context: This process's shard (``batch_size`` is the total over all processes).
    """
    full_train = mnist_data.load_split("train", data_dir)
    train_rest, validation = mnist_data.validation_split(full_train)
    shard = {"rank": context.rank, "world_size": context.world_size}
    evaluation = {"scaling": config.input_scaling, **shard}
    if config.pipeline == "torchvision":
        # the seed project's pipeline, unchanged: ToTensor over all 60,000 training images
        train: Batches = mnist_data.torchvision_loader("train", config.batch_size, data_dir, shuffle=True, generator=generator)
    else:
        train = mnist_data.memory_batches(
            train_rest.head(config.train_size),
            config.batch_size // context.world_size,
            config.input_scaling,
            shuffle=True,
            generator=generator,
            **shard,
        )
    return RunData(
        train=train,
        val=mnist_data.memory_batches(validation.head(config.val_size), config.eval_batch_size, **evaluation),
        test=mnist_data.memory_batches(
            mnist_data.load_split("test", data_dir).head(config.test_size), config.eval_batch_size, **evaluation
        ),
        validation=mnist_data.describe_validation(full_train, held_out=config.pipeline != "torchvision"),
    )


@dataclass
class TrainResult:
    """What :func:`fit` produces."""

    model: nn.Module
    config: TrainConfig
    history: History
    metrics: dict[str, Any]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    #: Optimizer, scheduler and RNG state after the last epoch (:meth:`TrainingState.to_dict`), so that
    #: :func:`save_run` writes a resumable file.
    training_state: dict[str, Any] | None = None
    #: Training loss and learning rate every few steps.
    step_history: History = field(default_factory=engine.new_step_history)


def run_metrics(config: TrainConfig, state: TrainingState, facts: dict[str, Any]) -> dict[str, Any]:
    """The summary ``metrics.json`` and checkpoints carry: the last epoch's numbers and the run's ``facts``.

    Args:
        config: The recipe.
        state: The run so far.
        facts: What does not change while it trains: ``load_seconds``, ``device``, ``precision``,
            ``deterministic``, ``world_size``, ``validation``.
    """
    history = state.history
    return {
        "preset": config.preset,
        "seed": config.seed,
        "epochs": config.epochs,
        "val_accuracy": history["val_acc"][-1],
        "val_loss": history["val_loss"][-1],
        "train_accuracy": history["train_acc"][-1],
        "train_loss": history["train_loss"][-1],
        "train_seconds": sum(history["seconds"]),
        **facts,
    }


@dataclass
class EpochCheckpoints:
    """:func:`fit`'s epoch-end hook: writes a resumable checkpoint and remembers the last one written.

    Attributes:
        path: Where to write (``None``: nowhere, e.g. on processes other than rank 0).
        model: The network (not its multi-process wrapper).
        config: The recipe.
        parts: The optimizer and schedule whose state is saved.
        generator: The data generator whose state is saved.
        facts: The run's unchanging metrics (:func:`run_metrics`).
        user_hook: The caller's ``on_epoch_end(epoch, history)``, called after each trained epoch.
        saved_path: The last checkpoint written, once there is one.
        saved_epoch: The epoch it ends with.
    """

    path: Path | None
    model: nn.Module
    config: TrainConfig
    parts: TrainParts
    generator: torch.Generator
    facts: dict[str, Any]
    user_hook: Callable[[int, History], Any] | None = None
    saved_path: Path | None = None
    saved_epoch: int | None = None

    def __call__(self, state: TrainingState) -> None:
        if self.path is not None:
            state.capture(self.parts, self.generator)
            save_checkpoint(self.path, run_payload(self.model, self.config, state, run_metrics(self.config, state, self.facts)))
            self.saved_path, self.saved_epoch = self.path, state.epoch
        if self.user_hook is not None and state.epoch > 0:
            self.user_hook(state.epoch, state.history)


def run_payload(model: nn.Module, config: TrainConfig, state: TrainingState, metrics: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of a run: the model, its recipe, history, metrics and resumable state."""
    return build_payload(
        model,
        arch=config.arch,
        model_options=config.model_options,
        input_scaling=config.input_scaling,
        config=config.to_dict(),
        history=state.history,
        step_history=state.step_history,
        metrics=metrics,
        training_state=state.to_dict(),
    )


def training_state_of(checkpoint: LoadedCheckpoint) -> dict[str, Any]:
    """The resumable state stored in a checkpoint written by :func:`fit` or :func:`save_run`.

    Raises:
        CheckpointError: The checkpoint holds no training state (a seed-format file, or one saved without it), was
            trained before the validation split, or a field of its state is malformed.
    """
    state = checkpoint.payload.get("training_state")
    if not isinstance(state, dict) or "epoch" not in state or not checkpoint.config:
        raise CheckpointError(
            f"cannot resume from {checkpoint.path}: it holds a model but no training state "
            "(optimizer, schedule, random generators); only checkpoints written by mnist_cnn.train can be resumed"
        )
    # before the field checks, which would only say that the history lacks val_* keys
    if checkpoint.history and "val_acc" not in checkpoint.history:
        raise CheckpointError(
            f"cannot resume from {checkpoint.path}: it was trained before the validation split (its curves are on the test set "
            "and it trained on all 60,000 images); start a new run"
        )
    # every field checked before use, so a tampered file fails now, naming the field, not mid-training
    return validate_training_state(state, checkpoint.path, model=checkpoint.model, config=checkpoint.config, history=checkpoint.history)


def resume_config(checkpoint: LoadedCheckpoint, epochs: int | None = None, **requested: Any) -> TrainConfig:
    """The configuration to continue a checkpoint's run with: the recorded one, with ``epochs`` possibly raised.

    Args:
        checkpoint: A checkpoint from :func:`mnist_cnn.checkpoint.load_checkpoint`.
        epochs: New total number of epochs (``None`` keeps the recorded one).
        **requested: Other fields the user asked for (``None`` means not asked); each must equal the
            recorded value, because a resumed run keeps the settings it was started with.

    Returns:
        The configuration.

    Raises:
        CheckpointError: No training state in the checkpoint.
        ConfigError: An option contradicts the checkpoint, or there is nothing left to train.
    """
    state = training_state_of(checkpoint)
    config = TrainConfig.from_dict(checkpoint.config)
    done = int(state["epoch"])
    for name, value in requested.items():
        if value is not None and value != getattr(config, name):
            raise ConfigError(
                f"--{name.replace('_', '-')} {value} contradicts {checkpoint.path}, which was trained with "
                f"{name} {getattr(config, name)!r}: a resumed run keeps its recorded settings (leave the option out, or start a new run)"
            )
    if epochs is not None and epochs != config.epochs:
        if epochs < done:
            raise ConfigError(f"--epochs {epochs} is fewer than the {done} epoch(s) {checkpoint.path} has already trained")
        if state.get("scheduler") is not None:
            raise ConfigError(
                f"cannot change --epochs of {checkpoint.path} from {config.epochs} to {epochs}: its one-cycle learning-rate "
                f"schedule was planned for {config.epochs} epoch(s) (resume without --epochs, or start a new run)"
            )
        config.epochs = epochs
    if done >= config.epochs:
        raise ConfigError(
            f"{checkpoint.path} has already trained all its {done} epoch(s): pass --epochs with a larger number to train further"
        )
    config.validate()
    return config


def fit(
    config: TrainConfig,
    data_dir: str | None = None,
    device: str | torch.device | None = "auto",
    progress: bool | None = None,
    log: Callable[[str], Any] | None = print,
    on_epoch_end: Callable[[int, History], Any] | None = None,
    *,
    resume: LoadedCheckpoint | None = None,
    checkpoint_path: str | Path | None = None,
    deterministic: bool | None = None,
    should_stop: Callable[[], bool] | None = None,
    distributed: DistributedContext | None = None,
    threads: int | str | None = None,
) -> TrainResult:
    """Train a model as ``config`` says, judging it on the validation split, then measure it once on the test set.

    Args:
        config: A preset from :func:`get_preset` or a custom :class:`TrainConfig`.
        data_dir: MNIST root (default: ``$MNIST_DATA_DIR``, else ``data/``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"`` or a ``torch.device``.
        progress: tqdm bars (``None``: only in terminals and notebooks).
        log: Receives one summary line per epoch (``None`` for silence).
        on_epoch_end: Called after each epoch with ``(epoch, history)``.
        resume: Continue this checkpoint's run (its model, optimizer, schedule, random generators and
            history); ``config`` should come from :func:`resume_config`.
        checkpoint_path: Where to save a resumable checkpoint at every epoch boundary (``None``: nowhere).
        deterministic: Use deterministic kernels (see :func:`mnist_cnn.reproducibility.deterministic_mode`);
            ``None`` chooses :func:`default_deterministic`. Settings are restored afterwards.
        should_stop: Asked after every batch; when true, training stops with :class:`TrainingInterrupted`.
        distributed: This process's place in a multi-process run (default: single process).
        threads: CPU threads: a fixed number, or ``"adaptive"`` to use the cores other programs leave free
            (:class:`mnist_cnn.threads.ThreadGovernor`); ``None`` reads ``$MNIST_CNN_THREADS``, else adaptive.
            Torch's thread count is restored afterwards.

    Returns:
        The trained model, its per-epoch and per-step history and final metrics (``val_accuracy``,
        ``val_loss``, ``test_accuracy``, ``test_loss``, ``train_seconds`` for the training passes alone,
        ``load_seconds`` for reading the data, ``validation`` describing the split).

    Raises:
        TrainingStopped: :class:`TrainingDiverged` (the loss became NaN or infinite) or
            :class:`TrainingInterrupted` (``should_stop``); its ``checkpoint_path`` and ``checkpoint_epoch``
            name the last resumable checkpoint (``None`` if there is none).
    """
    config.validate()
    context = distributed or SINGLE_PROCESS
    device = device_for(context, device if isinstance(device, torch.device) else select_device(device))
    deterministic = default_deterministic(device) if deterministic is None else deterministic
    if context.enabled:
        check_distributed(config, context)
        init_process_group(context, device)
    if not context.is_main:
        log, progress = None, False
    numerics = numerics_for(config, device)
    threads_before = torch.get_num_threads()
    governor = thread_governor_for(device, threads)
    with deterministic_mode(deterministic), _restoring_threads(threads_before):
        generator = seed_everything(config.seed)
        torch.set_flush_denormal(config.flush_denormal)

        load_started = time.perf_counter()
        data = load_data(config, data_dir, generator, context)
        load_seconds = time.perf_counter() - load_started

        # building the model draws from torch's generator; a resumed run restores it afterwards, so its stream continues
        model = model_for(config, device)
        parts = build_parts(config, model, len(data.train), device, generator, numerics)  # type: ignore[arg-type]
        state = TrainingState(deterministic=deterministic, world_size=context.world_size)
        if resume is not None:
            state = restore(resume, model, parts, generator)
            state.deterministic, state.world_size = deterministic, context.world_size  # as this run trains, not as recorded
            if log:
                log(f"resuming {resume.path} after epoch {state.epoch} of {config.epochs}")

        facts = {
            "load_seconds": load_seconds,
            "device": str(device),
            "precision": "bf16-autocast" if parts.autocast_dtype is not None else "fp32",
            "numerics": numerics.to_dict(),
            "deterministic": deterministic,
            "world_size": context.world_size,
            "validation": data.validation,
        }
        checkpoints = EpochCheckpoints(
            Path(checkpoint_path) if checkpoint_path is not None and context.is_main else None,
            model,
            config,
            parts,
            generator,
            facts,
            user_hook=on_epoch_end,
            saved_path=resume.path if resume is not None else None,
            saved_epoch=state.epoch if resume is not None else None,
        )
        loop = Loop(
            epochs=config.epochs,
            progress=progress,
            log=log,
            should_stop=should_stop,
            on_epoch_end=checkpoints,
            context=context,
            threads=governor,
        )
        if governor is not None:
            governor.start(state.step)
            facts["threads"] = {"policy": "adaptive" if governor.enabled else "fixed", "cores": governor.cores, "changes": governor.changes}
        try:
            engine.train(wrap_for_processes(model, context, device), data.train, data.val, parts, state, loop)
        except TrainingStopped as error:
            raise error.with_checkpoint(checkpoints.saved_path, checkpoints.saved_epoch) from None

        # the test set, measured once, after every choice was made on the validation split
        test_loss, test_accuracy = loop.average(
            engine.evaluate(model, data.test, device, autocast_dtype=parts.autocast_dtype, channels_last=parts.channels_last), data.test
        )
    metrics = {**run_metrics(config, state, facts), "test_accuracy": test_accuracy, "test_loss": test_loss}
    state.capture(parts, generator)
    return TrainResult(
        model,
        config,
        state.history,
        metrics,
        parts.optimizer,
        parts.scheduler,
        training_state=state.to_dict(),
        step_history=state.step_history,
    )


def result_from(
    model: nn.Module, config: TrainConfig, parts: TrainParts, state: TrainingState, generator: torch.Generator | None = None
) -> TrainResult:
    """A :class:`TrainResult` for a model trained outside :func:`fit` (e.g. step by step in notebook 3), for :func:`save_run`.

    Its metrics hold the validation numbers of the last epoch; the test set is not measured here.

    Args:
        model: The trained network.
        config: The recipe it was trained with.
        parts: Its optimizer, schedule and precision.
        state: Its training state (history, per-step history, epochs).
        generator: The data generator, whose state makes the saved run resumable.
    """
    facts = {
        "device": str(parts.device),
        "precision": "bf16-autocast" if parts.autocast_dtype is not None else "fp32",
        "deterministic": state.deterministic,
        "world_size": state.world_size,
    }
    state.capture(parts, generator)
    return TrainResult(
        model,
        config,
        state.history,
        run_metrics(config, state, facts),
        parts.optimizer,
        parts.scheduler,
        training_state=state.to_dict(),
        step_history=state.step_history,
    )


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


def restore(checkpoint: LoadedCheckpoint, model: nn.Module, parts: TrainParts, generator: torch.Generator) -> TrainingState:
    """Load a checkpoint's weights, optimizer, schedule and random states into a run, and return its training state.

    Args:
        checkpoint: A checkpoint written by :func:`fit` or :func:`save_run`.
        model: The freshly built network (same architecture).
        parts: The freshly built optimizer and schedule.
        generator: The run's data generator.
    """
    state = engine.TrainingState.from_dict(training_state_of(checkpoint), checkpoint.history)
    if not state.step_history["step"] and checkpoint.step_history:
        state.step_history = {k: list(v) for k, v in checkpoint.step_history.items()}
    model.load_state_dict(checkpoint.model.state_dict())
    parts.optimizer.load_state_dict(state.optimizer)  # type: ignore[arg-type]
    if parts.scheduler is not None and state.scheduler is not None:
        parts.scheduler.load_state_dict(state.scheduler)
    set_rng_state(state.rng, generator)  # type: ignore[arg-type]
    return state


def save_run(result: TrainResult, out: Path, extra_metrics: dict | None = None) -> tuple[Path, Path]:
    """Write ``<out>/model.pt`` and ``<out>/metrics.json`` for a finished run.

    ``model.pt`` carries the run's training state when ``result`` has one, so the run can be
    continued later (``python -m mnist_cnn.train --resume <out>/model.pt --epochs N``).

    Returns:
        The two paths.
    """
    metrics = {**result.metrics, **(extra_metrics or {})}
    payload = build_payload(
        result.model,
        arch=result.config.arch,
        model_options=result.config.model_options,
        input_scaling=result.config.input_scaling,
        config=result.config.to_dict(),
        history=result.history,
        step_history=result.step_history,
        metrics=metrics,
        training_state=result.training_state,
    )
    model_path = save_checkpoint(out / "model.pt", payload)
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
        save_run(fit(get_preset(preset), data_dir=data_dir), path.parent)
    return load_checkpoint(path, device=device)
