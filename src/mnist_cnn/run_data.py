"""The batches of one run, as its recipe says: training, validation (curves and choices) and test (measured once)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mnist_cnn import data as mnist_data
from mnist_cnn.config import TrainConfig
from mnist_cnn.engine import Batches


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


def load_data(config: TrainConfig, data_dir: str | None, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> RunData:
    """Read MNIST and serve it as ``config`` says, holding the validation split out of the training images.

    Args:
        config: Pipeline, batch sizes, input scaling and the optional ``train_size``/``val_size``/``test_size`` slices.
        data_dir: MNIST root (default: ``$MNIST_DATA_DIR``, else ``data/``).
        generator: Shuffles the training batches.
        rank: This process's index among ``world_size`` processes; each serves its shard of every split.
        world_size: Number of processes (``batch_size`` is the total over all of them).
    """
    full_train = mnist_data.load_split("train", data_dir)
    train_rest, validation = mnist_data.validation_split(full_train)
    shard = {"rank": rank, "world_size": world_size}
    evaluation = {"scaling": config.input_scaling, **shard}
    if config.pipeline == "torchvision":
        # the seed project's pipeline, unchanged: ToTensor over all 60,000 training images
        train: Batches = mnist_data.torchvision_loader("train", config.batch_size, data_dir, shuffle=True, generator=generator)
    else:
        train = mnist_data.memory_batches(
            train_rest.head(config.train_size),
            config.batch_size // world_size,
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
