"""The training configuration: :class:`TrainConfig`, every setting that defines a run, checked in one place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mnist_cnn.checks import check_number, shown
from mnist_cnn.errors import ConfigError
from mnist_cnn.mnist import INPUT_SCALINGS
from mnist_cnn.model_options import check_options

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "onecycle")
PIPELINES = ("memory", "torchvision")

#: Each numeric setting's allowed values, as :func:`~mnist_cnn.checks.check_number`'s keywords. Label smoothing stays
#: below 1 (at 1 the target says nothing); the batch-norm rate multiple is kept to where it still means something.
NUMBER_FIELDS: dict[str, dict[str, Any]] = {
    "epochs": {"whole": True, "low": 1},
    "batch_size": {"whole": True, "low": 1},
    "eval_batch_size": {"whole": True, "low": 1},
    "seed": {"whole": True},
    "lr": {"low": 0, "low_open": True},
    "momentum": {"low": 0, "high": 1},
    "weight_decay": {"low": 0},
    "label_smoothing": {"low": 0, "high": 1, "high_open": True},
    "onecycle_pct_start": {"low": 0, "high": 1},
    "norm_lr_scale": {"low": 0.001, "high": 1000},
}
#: The augmentation's settings and their bounds: a shift of up to 14 pixels (half the image), a quarter turn, half the size.
AUGMENT_FIELDS: dict[str, dict[str, Any]] = {
    "max_shift": {"low": 0, "high": 14},
    "max_rotation": {"low": 0, "high": 90},
    "max_scale": {"low": 0, "high": 0.5},
}
#: How many images to use (quick checks): ``None`` for all, else a whole number of at least 1.
SIZE_FIELDS = ("train_size", "val_size", "test_size")
#: Settings that are true or false, and nothing else (``1`` or ``"yes"`` is a mistake, not a switch).
SWITCHES = ("whiten", "identity_init", "bf16", "channels_last", "nesterov", "cycle_momentum", "flush_denormal")
#: Settings that are names: each must be text.
NAMES = ("preset", "arch")


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
        """Raise a one-line :class:`ConfigError` for values that cannot work.

        Raises:
            ConfigError: A number or model option out of bounds, a switch not true or false, an unknown choice, or settings that clash.
        """
        for name, allowed in NUMBER_FIELDS.items():
            check_number(name, getattr(self, name), **allowed)
        for name in SIZE_FIELDS:
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name), whole=True, low=1)
        for name in SWITCHES:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {shown(getattr(self, name))}")
        for name in NAMES:
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name} must be text, got {shown(getattr(self, name))}")
        self._check_betas_and_augment()
        if self.pipeline == "torchvision" and (self.train_size or self.test_size or self.val_size):
            raise ConfigError("train_size/val_size/test_size need the in-memory pipeline, not 'torchvision'")
        if self.whiten and self.pipeline == "torchvision":
            raise ConfigError("whiten needs the in-memory pipeline, not 'torchvision'")
        check_options(self.arch, self.model_options)  # bounded before any model is built
        for name, value, choices in (
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("schedule", self.schedule, SCHEDULES),
            ("pipeline", self.pipeline, PIPELINES),
            ("input scaling", self.input_scaling, INPUT_SCALINGS),
        ):
            if value not in choices:
                raise ConfigError(f"unknown {name} {shown(value)}: choose one of {', '.join(choices)}")

    def _check_betas_and_augment(self) -> None:
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise ConfigError(f"betas must be two numbers from 0 to below 1, got {shown(self.betas)}")
        for index, beta in enumerate(self.betas):
            check_number(f"betas[{index}]", beta, low=0, high=1, high_open=True)
        if self.augment is None:
            return
        if not isinstance(self.augment, dict) or set(self.augment) - set(AUGMENT_FIELDS):
            raise ConfigError(f"augment must be null or a dict of {', '.join(AUGMENT_FIELDS)}, got {shown(self.augment)}")
        for name, value in self.augment.items():
            check_number(f"augment.{name}", value, **AUGMENT_FIELDS[name])

    def to_dict(self) -> dict[str, Any]:
        """Plain-container form, stored in checkpoints and metrics."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Rebuild from :meth:`to_dict` output, ignoring keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        if isinstance(config.betas, list):  # JSON has no tuples
            config.betas = tuple(config.betas)  # type: ignore[assignment]
        return config
