"""The batches of one run, as its recipe says: training, validation (curves and choices) and test (measured once)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from mnist_cnn import data as mnist_data
from mnist_cnn.config import TrainConfig
from mnist_cnn.engine import Batches
from mnist_cnn.mnist import find_mnist


@dataclass
class RunData:
    """The batches of one run and, in ``validation``, what identifies its validation split (:func:`~mnist_cnn.data.describe_validation`).

    ``train`` holds the 55,000 images outside the validation split (all 60,000 for the ``seed`` preset's torchvision
    pipeline); ``val`` the 5,000 validation images and ``test`` the 10,000 test images, each this process's shard.
    """

    train: Batches
    val: mnist_data.InMemoryBatches
    test: mnist_data.InMemoryBatches
    validation: dict[str, Any]


def load_data(config: TrainConfig, data_dir: str | None, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> RunData:
    """Read MNIST from ``data_dir`` and serve it as ``config`` says, holding the validation split out of the training images.

    Args:
        config: Pipeline, batch sizes, input scaling and the optional ``train_size``/``val_size``/``test_size`` slices.
        rank: This process's index among ``world_size`` processes; each serves its shard of every split.
        world_size: Number of processes (``batch_size`` is the total over all of them).
    """
    full_train = mnist_data.load_split("train", data_dir)
    train_rest, validation = mnist_data.validation_split(full_train)
    shard = {"scaling": config.input_scaling, "rank": rank, "world_size": world_size}
    if config.pipeline == "torchvision":  # the seed project's pipeline, unchanged: ToTensor over all 60,000 training images
        train: Batches = torchvision_loader("train", config.batch_size, data_dir, shuffle=True, generator=generator)
    else:
        train = mnist_data.memory_batches(
            train_rest.head(config.train_size), config.batch_size // world_size, shuffle=True, generator=generator, **shard
        )
    test = mnist_data.load_split("test", data_dir).head(config.test_size)
    return RunData(
        train=train,
        val=mnist_data.memory_batches(validation.head(config.val_size), config.eval_batch_size, **shard),
        test=mnist_data.memory_batches(test, config.eval_batch_size, **shard),
        validation=mnist_data.describe_validation(full_train, held_out=config.pipeline != "torchvision"),
    )


def torchvision_loader(split: str, batch_size: int, data_dir: str | os.PathLike[str] | None = None, **order: Any) -> DataLoader:
    """The seed project's pipeline, ``torchvision.datasets.MNIST`` with per-image ``ToTensor`` in a ``DataLoader``.

    Kept for the ``seed`` preset so its timing stays comparable; ``order`` takes the loader's ``shuffle`` and ``generator``.
    """
    from torchvision import datasets, transforms  # over a second to import, and only this pipeline needs it

    root = find_mnist(data_dir)  # torchvision's MNIST wants all four files, whichever split it reads
    dataset = datasets.MNIST(root, train=split == "train", download=False, transform=transforms.ToTensor())
    return DataLoader(dataset, batch_size=batch_size, **order)
