"""The named training recipes (``seed``, ``fast``, ``default``, ``best``...), each a :class:`~mnist_cnn.config.TrainConfig`."""

from __future__ import annotations

import dataclasses
from typing import Any

from mnist_cnn.config import TrainConfig
from mnist_cnn.errors import ConfigError

# The notebooks' recipe: a VGG-style network laid out by cost (a stem of one convolution and a pool, so that both
# blocks of two convolutions, 16 and 32 channels, run at 14x14 and 7x7; one batch norm per block), Nesterov SGD
# under a one-cycle schedule, label smoothing, small random shifts. Against the seed's layout (three convolutions
# per block at 28x28 and 14x14) it reached a higher validation accuracy in about half the time
# (benchmarks/design_space.py). Every choice and what it bought is measured in docs/benchmarks.md.
DEFAULT = TrainConfig(
    preset="default",
    arch="vgg",
    model_options={
        "stem_units": 16,
        "hidden_units": 16,
        "block2_units": 32,
        "convs_per_block": 2,
        "batch_norm": True,
        "batch_norm_at": "block",
    },
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
    # the two steps of the fast-training ladder that paid (benchmarks/ladder.py)
    whiten=True,
    norm_lr_scale=4.0,
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
    # A small two-convolution CNN with batch norm and one pass over the data, for when seconds matter most.
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
        whiten=True,
        norm_lr_scale=4.0,
        bf16=True,
        channels_last=True,
    ),
    # A wider VGG and stronger augmentation over a longer schedule; the ladder's steps stay off until measured here.
    "best": dataclasses.replace(
        DEFAULT,
        preset="best",
        model_options={"hidden_units": 32, "block2_units": 64, "batch_norm": True, "batch_norm_at": "block"},
        epochs=15,
        augment={"max_shift": 2.0, "max_rotation": 10.0, "max_scale": 0.1},
        whiten=False,
        norm_lr_scale=1.0,
    ),
}


def get_preset(name: str, **overrides: Any) -> TrainConfig:
    """A validated copy of the preset ``name`` (one of :data:`PRESETS`), with the ``overrides`` that are not ``None``.

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
