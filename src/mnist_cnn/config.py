"""The training configuration: :class:`TrainConfig`, every setting that defines a run, checked in one place."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from mnist_cnn.errors import ConfigError
from mnist_cnn.model_options import check_options

#: How pixels are scaled for the model (``data.scale_images``).
INPUT_SCALINGS: tuple[str, ...] = ("unit", "standard")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "onecycle")
PIPELINES = ("memory", "torchvision")

#: Settings that must be finite numbers, with their ranges (label smoothing below 1: at 1 the target says nothing).
NUMBER_RANGES = (("lr", 0.0, math.inf), ("label_smoothing", 0.0, 1.0), ("weight_decay", 0.0, math.inf), ("momentum", 0.0, 1.0))


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
    #: Steps of the fast-training ladder (docs/benchmarks.md), each off unless a recipe turns it on: the first
    #: convolution started from the training patches' whitened principal directions, the later ones started as
    #: the identity, and batch-norm parameters trained at this multiple of the learning rate.
    whiten: bool = False
    identity_init: bool = False
    norm_lr_scale: float = 1.0
    eval_batch_size: int = 1000
    seed: int = 42
    #: Treat denormal floats as zero on the CPU. Weights that drift towards zero otherwise produce denormals,
    #: which CPUs compute up to 10x slower; the seed preset keeps PyTorch's default (off) to stay the original.
    flush_denormal: bool = True
    #: Use only the first N training / validation / test images (quick checks and tests); ``None`` for all.
    train_size: int | None = None
    test_size: int | None = None
    val_size: int | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work."""
        if not _whole(self.epochs) or self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        for name, size in (("train_size", self.train_size), ("val_size", self.val_size), ("test_size", self.test_size)):
            if size is not None and size < 1:
                raise ConfigError(f"{name} must be at least 1, got {size}")
        if self.pipeline == "torchvision" and (self.train_size or self.test_size or self.val_size):
            raise ConfigError("train_size/val_size/test_size need the in-memory pipeline, not 'torchvision'")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {min(self.batch_size, self.eval_batch_size)}")
        for name in ("epochs", "batch_size", "eval_batch_size", "seed"):
            if not _whole(getattr(self, name)):
                raise ConfigError(f"{name} must be a whole number, got {getattr(self, name)!r}")
        for name, low, high in (
            ("lr", 0.0, math.inf),
            ("label_smoothing", 0.0, 1.0),
            ("weight_decay", 0.0, math.inf),
            ("momentum", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if not _real(value) or not (low <= value < high if name == "label_smoothing" else low <= value <= high):
                raise ConfigError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")
        for name in ("whiten", "identity_init", "bf16", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not _real(self.norm_lr_scale) or not 0 < self.norm_lr_scale <= 1000:
            raise ConfigError(f"norm_lr_scale must be a number above 0 and at most 1000, got {self.norm_lr_scale!r}")
        if self.whiten and self.pipeline == "torchvision":
            raise ConfigError("whiten needs the in-memory pipeline, not 'torchvision'")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be above 0, got {self.lr}")
        check_options(self.arch, self.model_options)  # bounded before any model is built
        for name, value, choices in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("pipeline", self.pipeline, PIPELINES),
            ("input scaling", self.input_scaling, INPUT_SCALINGS),
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


# The notebooks' recipe: the seed's VGG with one batch norm per block, in-memory data, bf16 autocast and
# channels-last where the CPU runs bf16 natively, Nesterov SGD under a one-cycle schedule, label smoothing and
# small random shifts/rotations. One batch norm per block (after the pool) instead of one per convolution: the
# same validation accuracy (benchmarks/recipe_sweep.py) in about 0.75 of the step time.


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
