"""The training configuration: :class:`TrainConfig`, every setting that defines a run, checked in one place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mnist_cnn.errors import ConfigError

#: How pixels are scaled for the model (``data.scale_images``).
INPUT_SCALINGS: tuple[str, ...] = ("unit", "standard")
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
    #: Treat denormal floats as zero on the CPU. Weights that drift towards zero otherwise produce denormals,
    #: which CPUs compute up to 10x slower; the seed preset keeps PyTorch's default (off) to stay the original.
    flush_denormal: bool = True
    #: Use only the first N training / validation / test images (quick checks and tests); ``None`` for all.
    train_size: int | None = None
    test_size: int | None = None
    val_size: int | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work."""
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")
        for name, size in (("train_size", self.train_size), ("val_size", self.val_size), ("test_size", self.test_size)):
            if size is not None and size < 1:
                raise ConfigError(f"{name} must be at least 1, got {size}")
        if self.pipeline == "torchvision" and (self.train_size or self.test_size or self.val_size):
            raise ConfigError("train_size/val_size/test_size need the in-memory pipeline, not 'torchvision'")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {min(self.batch_size, self.eval_batch_size)}")
        if not self.lr > 0:
            raise ConfigError(f"learning rate must be above 0, got {self.lr}")
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
