"""A training run from start to finish: ``fit()`` wires data, model, optimizer and loop; saving, resuming, loading."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_cnn import data as mnist_data
from mnist_cnn.augment import RandomAffine
from mnist_cnn.checkpoint import LoadedCheckpoint, build_payload, load_checkpoint, save_checkpoint, validate_training_state
from mnist_cnn.config import MODELS_DIR
from mnist_cnn.distributed import SINGLE_PROCESS, DistributedContext, any_process, device_for, init_process_group, weighted_mean
from mnist_cnn.engine import History, train
from mnist_cnn.errors import CheckpointError, ConfigError, TrainingDiverged, TrainingInterrupted
from mnist_cnn.model import build_model
from mnist_cnn.presets import TrainConfig, get_preset
from mnist_cnn.utils import (
    deterministic_mode,
    rng_state,
    seed_everything,
    select_device,
    set_rng_state,
    supports_bf16_autocast,
    write_json,
)


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


def autocast_dtype_for(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 when the config asks for it and the device runs it natively; otherwise fp32 (``None``)."""
    return torch.bfloat16 if config.bf16 and supports_bf16_autocast(device) else None


def default_deterministic(device: torch.device) -> bool:
    """Whether :func:`fit` runs in deterministic mode when not told: on the CPU yes (it costs little there), elsewhere no."""
    return device.type == "cpu"


@dataclass
class TrainResult:
    """What :func:`fit` produces."""

    model: nn.Module
    config: TrainConfig
    history: History
    metrics: dict[str, Any]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    #: Optimizer, scheduler and RNG state after the last epoch, so that :func:`save_run` writes a resumable file.
    training_state: dict[str, Any] | None = None


def _run_metrics(
    config: TrainConfig, history: History, load_seconds: float, device: torch.device,
    autocast_dtype: torch.dtype | None, deterministic: bool, world_size: int,
) -> dict[str, Any]:
    return {
        "preset": config.preset,
        "epochs": config.epochs,
        "test_accuracy": history["test_acc"][-1],
        "test_loss": history["test_loss"][-1],
        "train_accuracy": history["train_acc"][-1],
        "train_loss": history["train_loss"][-1],
        "train_seconds": sum(history["seconds"]),
        "load_seconds": load_seconds,
        "device": str(device),
        "precision": "bf16-autocast" if autocast_dtype is not None else "fp32",
        "seed": config.seed,
        "deterministic": deterministic,
        "world_size": world_size,
    }


def training_state_of(checkpoint: LoadedCheckpoint) -> dict[str, Any]:
    """The resumable state stored in a checkpoint written by :func:`fit` or :func:`save_run`.

    Raises:
        CheckpointError: The checkpoint holds no training state (a seed-format file, or one saved without it).
    """
    state = checkpoint.payload.get("training_state")
    if not isinstance(state, dict) or "epoch" not in state or not checkpoint.config:
        raise CheckpointError(
            f"cannot resume from {checkpoint.path}: it holds a model but no training state "
            "(optimizer, schedule, random generators); only checkpoints written by mnist_cnn.train can be resumed"
        )
    # issue 11: every field checked before use, so a tampered file fails now, naming the field, not mid-training
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
) -> TrainResult:
    """Train a model as ``config`` says and measure it on the MNIST test set.

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
        deterministic: Use deterministic kernels (see :func:`mnist_cnn.utils.deterministic_mode`);
            ``None`` chooses :func:`default_deterministic`. Settings are restored afterwards.
        should_stop: Asked after every batch; when true, training stops (see below).
        distributed: This process's place in a multi-process run (default: single process).

    Returns:
        The trained model, its history and final metrics (``test_accuracy``, ``test_loss``,
        ``train_seconds`` for the training passes alone, ``load_seconds`` for reading the data).

    Raises:
        TrainingDiverged: The loss became NaN or infinite.
        TrainingInterrupted: ``should_stop`` asked to stop. Both carry ``checkpoint_path`` and
            ``checkpoint_epoch``: the last resumable checkpoint (``None`` if there is none) and its epoch.
    """
    config.validate()
    device = device if isinstance(device, torch.device) else select_device(device)
    context = distributed or SINGLE_PROCESS
    device = device_for(context, device)
    if deterministic is None:
        deterministic = default_deterministic(device)
    with deterministic_mode(deterministic):
        return _fit(config, data_dir, device, progress, log, on_epoch_end, resume,
                    Path(checkpoint_path) if checkpoint_path is not None else None, deterministic, should_stop, context)


def _fit(
    config: TrainConfig,
    data_dir: str | None,
    device: torch.device,
    progress: bool | None,
    log: Callable[[str], Any] | None,
    on_epoch_end: Callable[[int, History], Any] | None,
    resume: LoadedCheckpoint | None,
    checkpoint_path: Path | None,
    deterministic: bool,
    should_stop: Callable[[], bool] | None,
    context: DistributedContext,
) -> TrainResult:
    state = training_state_of(resume) if resume is not None else None
    if context.enabled:
        if config.pipeline != "memory":
            raise ConfigError(f"multi-process training needs the in-memory pipeline, not {config.pipeline!r}")
        if config.batch_size % context.world_size:
            raise ConfigError(
                f"batch size {config.batch_size} must divide evenly among {context.world_size} processes "
                "(it is the total over all processes)"
            )
        init_process_group(context, device)
        if not context.is_main:
            log, progress = None, False
    generator = seed_everything(config.seed)
    torch.set_flush_denormal(config.flush_denormal)

    load_started = time.perf_counter()
    if config.pipeline == "torchvision":
        if config.train_size or config.test_size:
            raise ConfigError("train_size/test_size need the in-memory pipeline, not 'torchvision'")
        train_batches = mnist_data.torchvision_loader("train", config.batch_size, data_dir, shuffle=True, generator=generator)
        test_batches = mnist_data.torchvision_loader("test", config.eval_batch_size, data_dir)
    else:
        train_split = mnist_data.load_split("train", data_dir).head(config.train_size)
        test_split = mnist_data.load_split("test", data_dir).head(config.test_size)
        # batch_size is the total over all processes, so the optimisation matches a single process's
        shard = {"rank": context.rank, "world_size": context.world_size}
        train_batches = mnist_data.memory_batches(
            train_split, config.batch_size // context.world_size, config.input_scaling, shuffle=True, generator=generator, **shard
        )
        test_batches = mnist_data.memory_batches(test_split, config.eval_batch_size, config.input_scaling, **shard)
    load_seconds = time.perf_counter() - load_started

    model = build_model(config.arch, **config.model_options).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if resume is not None:
        model.load_state_dict(resume.model.state_dict())
    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer, len(train_batches))
    augment = RandomAffine(**config.augment, generator=generator) if config.augment else None
    autocast_dtype = autocast_dtype_for(config, device)
    history: History | None = None
    start_epoch = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler") is not None:
            scheduler.load_state_dict(state["scheduler"])
        # after building the model (which drew from torch's generator), so the stream continues where it stopped
        set_rng_state(state["rng"], generator)
        history = {key: list(values) for key, values in resume.history.items()}  # type: ignore[union-attr]
        start_epoch = int(state["epoch"])
        if log:
            log(f"resuming {resume.path} after epoch {start_epoch} of {config.epochs}")  # type: ignore[union-attr]

    train_model: nn.Module = model
    if context.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def current_state(epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "rng": rng_state(generator),
            "deterministic": deterministic,
            "world_size": context.world_size,
        }

    saved: dict[str, Any] = {"path": resume.path if resume is not None else None, "epoch": start_epoch if resume is not None else None}

    def save_state(epoch: int, history: History) -> None:
        if checkpoint_path is None or not context.is_main:
            return
        metrics = _run_metrics(config, history, load_seconds, device, autocast_dtype, deterministic, context.world_size)
        payload = build_payload(
            model, arch=config.arch, model_options=config.model_options, input_scaling=config.input_scaling,
            config=config.to_dict(), history=history, metrics=metrics, training_state=current_state(epoch),
        )
        save_checkpoint(checkpoint_path, payload)
        saved.update(path=checkpoint_path, epoch=epoch)

    stop = should_stop
    if should_stop is not None and context.enabled:
        # every process must stop after the same batch, or the others would wait for it forever
        def stop() -> bool:
            return any_process(should_stop(), context)

    def reduce(metrics: tuple[float, float], batches: Any) -> tuple[float, float]:
        loss, accuracy = weighted_mean(metrics, batches.num_examples, context)
        return loss, accuracy

    try:
        history = train(
            train_model, train_batches, test_batches,
            nn.CrossEntropyLoss(label_smoothing=config.label_smoothing), optimizer, config.epochs, device,
            scheduler=scheduler, augment=augment, autocast_dtype=autocast_dtype, channels_last=config.channels_last,
            progress=progress, on_epoch_end=on_epoch_end, log=log, history=history, start_epoch=start_epoch,
            eval_model=model, should_stop=stop, checkpoint_hook=save_state,
            reduce_metrics=reduce if context.enabled else None,
        )
    except (TrainingInterrupted, TrainingDiverged) as error:
        error.checkpoint_path, error.checkpoint_epoch = saved["path"], saved["epoch"]  # type: ignore[attr-defined]
        raise
    metrics = _run_metrics(config, history, load_seconds, device, autocast_dtype, deterministic, context.world_size)
    return TrainResult(model, config, history, metrics, optimizer, scheduler, training_state=current_state(config.epochs))


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
        metrics=metrics,
        training_state=result.training_state,
    )
    model_path = save_checkpoint(out / "model.pt", payload)
    metrics_path = out / "metrics.json"
    write_json(metrics_path, {**metrics, "config": result.config.to_dict(), "history": result.history})
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
