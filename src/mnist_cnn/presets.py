"""Training settings: :class:`TrainConfig` (everything that defines a run) and the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mnist_cnn.config import INPUT_SCALINGS
from mnist_cnn.errors import ConfigError

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
DEFAULT = TrainConfig(
    preset="default",
    arch="vgg",
    model_options={"hidden_units": 16, "batch_norm": True, "batch_norm_at": "block"},
    input_scaling="standard",
    epochs=3,
    batch_size=128,
    optimizer="sgd",
    lr=0.2,
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    schedule="onecycle",
    onecycle_pct_start=0.25,
    label_smoothing=0.1,
    augment={"max_shift": 2.0, "max_rotation": 8.0, "max_scale": 0.08},
    bf16=True,
    channels_last=True,
)

PRESETS: dict[str, TrainConfig] = {
    # The seed project's recipe, unchanged: per-image ToTensor pipeline, batch 32, plain SGD, 5 epochs.
    "seed": TrainConfig(
        preset="seed",
        arch="vgg",
        model_options={"hidden_units": 16},
        input_scaling="unit",
        pipeline="torchvision",
        epochs=5,
        batch_size=32,
        optimizer="sgd",
        lr=0.01,
        flush_denormal=False,
    ),
    "default": DEFAULT,
    # A small two-convolution CNN with batch norm (after each pool) and one pass over the data, for when seconds
    # matter most; label smoothing bought 0.0016 of validation accuracy in the recipe sweep.
    "fast": TrainConfig(
        preset="fast",
        arch="small_cnn",
        model_options={"channels1": 16, "channels2": 32, "fc_units": 128, "batch_norm": True, "batch_norm_at": "block"},
        input_scaling="standard",
        epochs=1,
        batch_size=256,
        optimizer="adam",
        lr=1e-2,
        betas=(0.7, 0.9),
        schedule="onecycle",
        onecycle_pct_start=0.3,
        cycle_momentum=False,
        label_smoothing=0.1,
        bf16=True,
        channels_last=True,
    ),
    # A wider VGG (32 channels, 64 in the second block) and stronger random shifts/rotations/scalings over a longer
    # schedule (under 10 minutes on a 2-core CPU); every other setting is the default recipe's.
    "best": dataclasses.replace(
        DEFAULT,
        preset="best",
        model_options={"hidden_units": 32, "block2_units": 64, "batch_norm": True, "batch_norm_at": "block"},
        epochs=15,
        augment={"max_shift": 2.0, "max_rotation": 10.0, "max_scale": 0.1},
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
