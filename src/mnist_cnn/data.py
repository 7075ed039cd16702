"""MNIST for the study: each split read into tensors, the validation hold-out, the model's inputs and their batches."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mnist_cnn.errors import ConfigError, DataError
from mnist_cnn.mnist import IMAGE_SIZE, INPUT_SCALINGS, MNIST_MEAN, MNIST_STD, SPLITS, find_mnist, raw_folder, unreadable
from mnist_cnn.text import display_name


@dataclass
class MNISTArrays:
    """One split of MNIST as tensors: ``images`` uint8 ``[N, 28, 28]`` and ``labels`` int64 ``[N]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, count: int | None) -> MNISTArrays:
        """The first ``count`` examples (all of them when ``count`` is ``None``)."""
        return self if count is None else MNISTArrays(images=self.images[:count], labels=self.labels[:count])


def read_idx(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    """Read an IDX file of unsigned bytes that must hold exactly ``shape``, as MNIST's header says.

    Raises:
        DataError: Its header or size is not what ``shape`` makes (a truncated, damaged or foreign file).
    """
    header = b"".join(n.to_bytes(4, "big") for n in (0x800 + len(shape), *shape))  # magic: unsigned bytes, dimensions
    size = len(header) + math.prod(shape)
    with path.open("rb") as handle:
        raw = handle.read(size + 1)  # never more than MNIST's size: one byte past it shows a longer file
    if len(raw) != size or not raw.startswith(header):
        raise DataError(
            f"MNIST file {display_name(path)} is truncated or corrupt (its header or size is not MNIST's): "
            f"run `python -m mnist_cnn.download --data-dir {display_name(path.parents[2])}` to see what is wrong"
        )
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8, offset=len(header)).view(shape)


def load_split(split: str, data_dir: str | os.PathLike[str] | None = None) -> MNISTArrays:
    """Load ``"train"`` (60,000 images) or ``"test"`` (10,000), downloading missing files (:func:`mnist_cnn.mnist.find_mnist`).

    Args:
        data_dir: MNIST root (default: ``$MNIST_DATA_DIR``, else ``data/``).

    Raises:
        ConfigError: An unknown split.
        DataError: The files are missing, unreadable or damaged.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}: choose 'train' or 'test'")
    images_name, labels_name, count = SPLITS[split]
    folder = raw_folder(find_mnist(data_dir, [images_name, labels_name]))
    try:
        images = read_idx(folder / images_name, (count, IMAGE_SIZE, IMAGE_SIZE))
        labels = read_idx(folder / labels_name, (count,))
    except OSError as error:
        raise unreadable(error, folder) from None
    return MNISTArrays(images=images, labels=labels.long())


#: The validation split: this many training images of each digit, drawn with this seed (not the run's ``--seed``,
#: so every run holds out the same images).
VALIDATION_PER_CLASS = 500
VALIDATION_SEED = 20_240_801


def validation_indices(labels: torch.Tensor, per_class: int = VALIDATION_PER_CLASS, seed: int = VALIDATION_SEED) -> torch.Tensor:
    """Indices of a balanced, seeded hold-out from ``labels``: ``per_class`` random examples of each digit, ascending.

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
    """Split the 60,000 training images into ``(train_rest, validation)``: 55,000 to train on, 5,000 held out, in order.

    The hold-out (:func:`validation_indices`) is the same for every run: curves and choices of recipe are judged on it,
    and the test set is measured once, after training.
    """
    held_out = validation_indices(train.labels)
    keep = torch.ones(len(train), dtype=torch.bool)
    keep[held_out] = False
    return MNISTArrays(train.images[keep], train.labels[keep]), MNISTArrays(train.images[held_out], train.labels[held_out])


def describe_validation(train: MNISTArrays, held_out: bool = True) -> dict[str, Any]:
    """What identifies the validation split drawn from the full ``train`` split, for checkpoints and ``metrics.json``.

    Args:
        held_out: Whether the run trained without these images (``False`` for the ``seed`` preset, trained on all 60,000).

    Returns:
        ``size``, ``per_class``, ``seed``, ``indices_sha256`` (of the int64 indices) and ``held_out``.
    """
    indices = validation_indices(train.labels).to(torch.int64)
    sha = hashlib.sha256(indices.numpy().tobytes()).hexdigest()
    return {"size": len(indices), "per_class": VALIDATION_PER_CLASS, "seed": VALIDATION_SEED, "indices_sha256": sha, "held_out": held_out}


def scale_images(images: torch.Tensor, scaling: str = "unit") -> torch.Tensor:
    """Turn uint8 images ``[N, 28, 28]`` (or ``[N, 1, 28, 28]``) into the model's float input ``[N, 1, 28, 28]``.

    Args:
        scaling: ``"unit"`` for [0, 1] (as ``ToTensor``), ``"standard"`` for MNIST mean/std normalisation.
    """
    if scaling not in INPUT_SCALINGS:
        raise ConfigError(f"unknown input scaling {scaling!r}: choose one of {', '.join(INPUT_SCALINGS)}")
    scaled = (images.unsqueeze(1) if images.dim() == 3 else images).float().div_(255.0)
    return scaled.sub_(MNIST_MEAN).div_(MNIST_STD) if scaling == "standard" else scaled


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
    """Batches ``(images, labels)`` sliced from tensors in memory; ``len()`` is the number of batches.

    Shuffling draws a permutation from ``generator`` each epoch: reproducible, and independent of the model's random
    state. With ``world_size > 1`` this process serves its shard: every ``world_size``-th example of the same
    permutation from position ``rank``. A shuffled (training) split drops the last ``N % world_size`` examples so every
    process runs as many batches, as ``DistributedDataParallel`` needs; an evaluation split keeps all.
    """

    images: torch.Tensor
    labels: torch.Tensor
    batch_size: int
    shuffle: bool = False
    generator: torch.Generator | None = None
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
    def num_examples(self) -> int:
        """Examples this process serves per pass: its shard of the split."""
        served = len(self.labels) - (len(self.labels) % self.world_size if self.shuffle else 0)
        return len(range(self.rank, served, self.world_size))

    def __len__(self) -> int:
        return -(-self.num_examples // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.shuffle:
            order = torch.randperm(len(self.labels), generator=self.generator)
            order = order[self.rank : self.num_examples * self.world_size : self.world_size]
            images, labels = self.images[order], self.labels[order]
        else:  # slices: views, no copy
            images, labels = self.images[self.rank :: self.world_size], self.labels[self.rank :: self.world_size]
        for start in range(0, len(labels), self.batch_size):
            yield images[start : start + self.batch_size], labels[start : start + self.batch_size]


def memory_batches(split: MNISTArrays, batch_size: int, scaling: str = "unit", **order: Any) -> InMemoryBatches:
    """Scale a split once and serve it as :class:`InMemoryBatches`; ``order``: its ``shuffle``, ``generator``, ``rank``, ``world_size``."""
    return InMemoryBatches(scale_images(split.images, scaling), split.labels, batch_size, **order)
