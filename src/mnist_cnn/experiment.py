"""Training configurations, the named presets, and ``fit()``: data, model, optimizer and loop wired together."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mnist_cnn import data as mnist_data
from mnist_cnn.augment import RandomAffine
from mnist_cnn.checkpoint import LoadedCheckpoint, build_payload, load_checkpoint, save_checkpoint
from mnist_cnn.config import MODELS_DIR
from mnist_cnn.engine import History, train
from mnist_cnn.errors import ConfigError
from mnist_cnn.model import build_model
from mnist_cnn.utils import seed_everything, select_device, supports_bf16_autocast, write_json

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "onecycle")
PIPELINES = ("memory", "torchvision")


@dataclass
class TrainConfig:
    """Everything that defines a training run. Presets are instances of this; CLI flags override fields."""

    preset: str = "custom"
    arch: str = "vgg"
    model_options: dict[str, Any] = field(default_factory=lambda: {"hidden_units": 16})
    input_scaling: str = "unit"
    pipeline: str = "memory"
    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: str = "constant"
    onecycle_pct_start: float = 0.25
    cycle_momentum: bool = True
    label_smoothing: float = 0.0
    augment: dict[str, float] | None = None
    bf16: bool = False
    channels_last: bool = False
    eval_batch_size: int = 1000
    seed: int = 42
    #: Use only the first N training / test images (quick checks and tests); ``None`` for all.
    train_size: int | None = None
    test_size: int | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work."""
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        for name, size in (("train_size", self.train_size), ("test_size", self.test_size)):
            if size is not None and size < 1:
                raise ConfigError(f"{name} must be at least 1, got {size}")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {min(self.batch_size, self.eval_batch_size)}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be above 0, got {self.lr}")
        for name, value, choices in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("pipeline", self.pipeline, PIPELINES),
            ("input scaling", self.input_scaling, mnist_data.INPUT_SCALINGS),
        ):
            if value not in choices:
                raise ConfigError(f"unknown {name} {value!r}: choose one of {', '.join(choices)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-container form, stored in checkpoints and metrics."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output, ignoring keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.betas = tuple(config.betas)  # type: ignore[assignment]
        return config


PRESETS: dict[str, TrainConfig] = {
    # The seed project's recipe, unchanged: per-image ToTensor pipeline, batch 32, plain SGD, 5 epochs.
    "seed": TrainConfig(
        preset="seed", arch="vgg", model_options={"hidden_units": 16}, input_scaling="unit", pipeline="torchvision",
        epochs=5, batch_size=32, optimizer="sgd", lr=0.01,
    ),
    # The notebooks' recipe: the seed's VGG with batch norm, in-memory data, bf16 autocast and channels-last,
    # Nesterov SGD under a one-cycle schedule with label smoothing.
    "default": TrainConfig(
        preset="default", arch="vgg", model_options={"hidden_units": 16, "batch_norm": True}, input_scaling="standard",
        epochs=3, batch_size=128, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
        schedule="onecycle", onecycle_pct_start=0.25, label_smoothing=0.1, bf16=True, channels_last=True,
    ),
    # A small two-convolution CNN with batch norm and one pass over the data, for when seconds matter most.
    "fast": TrainConfig(
        preset="fast", arch="small_cnn", model_options={"channels1": 16, "channels2": 32, "fc_units": 128, "batch_norm": True},
        input_scaling="standard", epochs=1, batch_size=256, optimizer="adam", lr=1e-2, betas=(0.7, 0.9),
        schedule="onecycle", onecycle_pct_start=0.3, cycle_momentum=False, bf16=True, channels_last=True,
    ),
    # A wider VGG with batch norm, random shifts/rotations/scalings and a longer schedule (a few minutes on a CPU).
    "best": TrainConfig(
        preset="best", arch="vgg", model_options={"hidden_units": 32, "batch_norm": True}, input_scaling="standard",
        epochs=12, batch_size=128, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
        schedule="onecycle", onecycle_pct_start=0.25, label_smoothing=0.1,
        augment={"max_shift": 2.0, "max_rotation": 10.0, "max_scale": 0.1}, bf16=True, channels_last=True,
    ),
}


def get_preset(name: str, **overrides: Any) -> TrainConfig:
    """A copy of the named preset with some fields replaced.

    Args:
        name: One of :data:`PRESETS`.
        **overrides: Fields to change; ``None`` values are ignored.

    Raises:
        ConfigError: Unknown preset or field.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    try:
        config = dataclasses.replace(PRESETS[name], **changes)
    except TypeError as error:
        raise ConfigError(f"bad option for preset {name!r}: {error}") from None
    config.model_options = dict(config.model_options)
    config.validate()
    return config


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


@dataclass
class TrainResult:
    """What :func:`fit` produces."""

    model: nn.Module
    config: TrainConfig
    history: History
    metrics: dict[str, Any]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None


def fit(
    config: TrainConfig,
    data_dir: str | None = None,
    device: str | torch.device | None = "auto",
    progress: bool | None = None,
    log: Callable[[str], Any] | None = print,
    on_epoch_end: Callable[[int, History], Any] | None = None,
) -> TrainResult:
    """Train a model as ``config`` says and measure it on the MNIST test set.

    Args:
        config: A preset from :func:`get_preset` or a custom :class:`TrainConfig`.
        data_dir: MNIST root (default: ``$MNIST_DATA_DIR``, else ``data/``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"`` or a ``torch.device``.
        progress: tqdm bars (``None``: only in terminals and notebooks).
        log: Receives one summary line per epoch (``None`` for silence).
        on_epoch_end: Called after each epoch with ``(epoch, history)``.

    Returns:
        The trained model, its history and final metrics (``test_accuracy``, ``test_loss``,
        ``train_seconds`` for the training passes alone, ``load_seconds`` for reading the data).
    """
    config.validate()
    device = device if isinstance(device, torch.device) else select_device(device)
    generator = seed_everything(config.seed)
    # Weights that drift towards zero produce denormal floats, which CPUs compute up to 10x slower.
    torch.set_flush_denormal(True)

    load_started = time.perf_counter()
    if config.pipeline == "torchvision":
        if config.train_size or config.test_size:
            raise ConfigError("train_size/test_size need the in-memory pipeline, not 'torchvision'")
        train_batches = mnist_data.torchvision_loader("train", config.batch_size, data_dir, shuffle=True, generator=generator)
        test_batches = mnist_data.torchvision_loader("test", config.eval_batch_size, data_dir)
    else:
        train_split = mnist_data.load_split("train", data_dir).head(config.train_size)
        test_split = mnist_data.load_split("test", data_dir).head(config.test_size)
        train_batches = mnist_data.memory_batches(train_split, config.batch_size, config.input_scaling, shuffle=True, generator=generator)
        test_batches = mnist_data.memory_batches(test_split, config.eval_batch_size, config.input_scaling)
    load_seconds = time.perf_counter() - load_started

    model = build_model(config.arch, **config.model_options).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(config, model)
    scheduler = build_scheduler(config, optimizer, len(train_batches))
    augment = RandomAffine(**config.augment, generator=generator) if config.augment else None
    autocast_dtype = autocast_dtype_for(config, device)

    history = train(
        model, train_batches, test_batches,
        nn.CrossEntropyLoss(label_smoothing=config.label_smoothing), optimizer, config.epochs, device,
        scheduler=scheduler, augment=augment, autocast_dtype=autocast_dtype, channels_last=config.channels_last,
        progress=progress, on_epoch_end=on_epoch_end, log=log,
    )
    metrics = {
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
    }
    return TrainResult(model, config, history, metrics, optimizer, scheduler)


def save_run(result: TrainResult, out: Path, extra_metrics: dict | None = None) -> tuple[Path, Path]:
    """Write ``<out>/model.pt`` and ``<out>/metrics.json`` for a finished run.

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
