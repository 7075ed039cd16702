"""MNIST for the study: its facts and four files (from :mod:`mnist_cnn.mnist`), the validation hold-out, batches."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from mnist_cnn.config import INPUT_SCALINGS
from mnist_cnn.errors import ConfigError, DataError
from mnist_cnn.mnist import (
    CLASS_NAMES,
    IMAGE_SIZE,
    MNIST_MEAN,
    MNIST_STD,
    NUM_CLASSES,
    RAW_FILES,
    SPLITS,
    MNISTArrays,
    find_mnist,
    load_split,
    raw_folder,
    resolve_data_dir,
)

#: What notebooks import from here: MNIST's facts and files (kept in :mod:`mnist_cnn.mnist`, which loads
#: without torch) and this module's split and batches.
__all__ = [
    "CLASS_NAMES",
    "IMAGE_SIZE",
    "MNIST_MEAN",
    "MNIST_STD",
    "NUM_CLASSES",
    "RAW_FILES",
    "SPLITS",
    "InMemoryBatches",
    "MNISTArrays",
    "describe_validation",
    "find_mnist",
    "load_split",
    "memory_batches",
    "raw_folder",
    "resolve_data_dir",
    "scale_images",
    "torchvision_loader",
    "validation_indices",
    "validation_split",
]

#: The validation split: this many training images of each digit are held out of training, chosen with
#: this seed. Both are constants, independent of a run's ``--seed``, so every run holds out the same images.
VALIDATION_PER_CLASS = 500
VALIDATION_SEED = 20_240_801


def validation_indices(labels: torch.Tensor, per_class: int = VALIDATION_PER_CLASS, seed: int = VALIDATION_SEED) -> torch.Tensor:
    """Indices of a balanced, seeded hold-out: ``per_class`` random examples of each digit, in ascending order.

    Args:
        labels: The training labels (int64 ``[N]``).
        per_class: Examples to hold out per digit.
        seed: Seed of the draw (a constant, not the run's seed, so the split never changes).

    Raises:
        DataError: A digit has fewer than ``per_class`` examples.
    """
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for digit in range(int(labels.max()) + 1 if len(labels) else 0):
        members = (labels == digit).nonzero().squeeze(1)
        if len(members) < per_class:
            raise DataError(f"digit {digit} has {len(members)} training images, fewer than the {per_class} the validation split holds out")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.long)


def validation_split(train: MNISTArrays) -> tuple[MNISTArrays, MNISTArrays]:
    """Split the 60,000 training images into the images to train on (55,000) and the validation hold-out (5,000).

    The hold-out is :func:`validation_indices`: 500 of each digit, the same for every run. Per-epoch
    curves and every choice of recipe are judged on it; the test set is measured once, after training.

    Args:
        train: The full training split from :func:`load_split`.

    Returns:
        ``(train_rest, validation)``, both in the original order.
    """
    held_out = validation_indices(train.labels)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[held_out] = False
    return (
        MNISTArrays(images=train.images[keep], labels=train.labels[keep]),
        MNISTArrays(images=train.images[held_out], labels=train.labels[held_out]),
    )


def describe_validation(train: MNISTArrays, held_out: bool = True) -> dict[str, Any]:
    """What identifies the validation split, recorded in checkpoints and ``metrics.json``.

    Args:
        train: The full training split the hold-out is drawn from.
        held_out: Whether the run trained without these images (``False`` for the ``seed`` preset,
            which trains on all 60,000, so its validation numbers are measured on images it has seen).

    Returns:
        ``size``, ``per_class``, ``seed``, ``indices_sha256`` (of the int64 indices) and ``held_out``.
    """
    indices = validation_indices(train.labels)
    return {
        "size": len(indices),
        "per_class": VALIDATION_PER_CLASS,
        "seed": VALIDATION_SEED,
        "indices_sha256": hashlib.sha256(indices.to(torch.int64).numpy().tobytes()).hexdigest(),
        "held_out": held_out,
    }


def scale_images(images: torch.Tensor, scaling: str = "unit") -> torch.Tensor:
    """Turn uint8 images ``[N, 28, 28]`` (or ``[N, 1, 28, 28]``) into the model's float input ``[N, 1, 28, 28]``.

    Args:
        images: uint8 pixel values 0-255.
        scaling: ``"unit"`` for [0, 1] (as ``ToTensor``), ``"standard"`` for MNIST mean/std normalisation.
    """
    if scaling not in INPUT_SCALINGS:
        raise ConfigError(f"unknown input scaling {scaling!r}: choose one of {', '.join(INPUT_SCALINGS)}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    scaled = images.float().div_(255.0)
    if scaling == "standard":
        scaled.sub_(MNIST_MEAN).div_(MNIST_STD)
    return scaled


def pixel_statistics(images: torch.Tensor) -> dict[str, float]:
    """Summary statistics of uint8 images on the [0, 1] scale (mean, std, share of zero and of saturated pixels)."""
    scaled = images.float() / 255.0
    return {
        "mean": scaled.mean().item(),
        "std": scaled.std().item(),
        "min": scaled.min().item(),
        "max": scaled.max().item(),
        "zero_fraction": (images == 0).float().mean().item(),
        "saturated_fraction": (images == 255).float().mean().item(),
    }


@dataclass(eq=False, repr=False)
class InMemoryBatches:
    """Batches sliced from tensors already in memory, shuffled by index each epoch.

    Iterating yields ``(images, labels)``; ``len()`` is the number of batches. Shuffling draws
    from ``generator`` so the order is reproducible and independent of the model's random state.

    With ``world_size > 1`` (multi-process training) this process serves only its shard: every
    process draws the same permutation from an identically seeded generator and takes every
    ``world_size``-th example from position ``rank``, so shards are disjoint. A shuffled (training)
    split drops the last ``N % world_size`` examples of each permutation so that every process runs
    the same number of batches, which ``DistributedDataParallel`` needs; an unshuffled (evaluation)
    split keeps them all.
    """

    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    shuffle: bool = False
    generator: torch.Generator | None = None
    drop_last: bool = False
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if len(self.images) != len(self.labels):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels")
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is not within a world of {self.world_size} process(es)")

    @property
    def dataset_size(self) -> int:
        """Number of examples (in the whole split, not this process's shard)."""
        return len(self.labels)

    @property
    def num_examples(self) -> int:
        """Examples this process serves per pass (before ``drop_last``): its shard of the split."""
        n = len(self.labels)
        if self.world_size == 1:
            return n
        if self.shuffle:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        full, rest = divmod(self.num_examples, self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator)
            if self.world_size > 1:
                order = order[: self.num_examples * self.world_size][self.rank :: self.world_size]
            images, labels = self.images[order], self.labels[order]
        elif self.world_size > 1:
            images, labels = self.images[self.rank :: self.world_size], self.labels[self.rank :: self.world_size]
        else:
            images, labels = self.images, self.labels
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield images[start : start + self.batch_size], labels[start : start + self.batch_size]


def memory_batches(split: MNISTArrays, batch_size: int, scaling: str = "unit", **order: Any) -> InMemoryBatches:
    """Scale a split once and serve it as :class:`InMemoryBatches` (this process's shard when ``world_size > 1``).

    Args:
        split: Images and labels as loaded (uint8 images).
        batch_size: Examples per batch.
        scaling: Input scaling (:func:`scale_images`).
        **order: :class:`InMemoryBatches`' ``shuffle``, ``generator``, ``drop_last``, ``rank`` and ``world_size``.

    Returns:
        The batches.
    """
    return InMemoryBatches(scale_images(split.images, scaling), split.labels, batch_size, **order)


def torchvision_loader(
    split: str,
    batch_size: int,
    data_dir: str | os.PathLike[str] | None = None,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
) -> DataLoader:
    """The seed project's pipeline: ``torchvision.datasets.MNIST`` with per-image ``ToTensor`` in a ``DataLoader``.

    Kept for the ``seed`` preset so its timing stays comparable with the original project.
    """
    from torchvision import datasets, transforms

    root = find_mnist(data_dir, splits=[split])
    dataset = datasets.MNIST(root, train=split == "train", download=False, transform=transforms.ToTensor())
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator)
