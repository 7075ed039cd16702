"""MNIST's fixed facts: ten classes of 28x28 images, and the mean and spread of their pixels."""

from __future__ import annotations

NUM_CLASSES = 10
IMAGE_SIZE = 28
CLASS_NAMES: tuple[str, ...] = tuple(str(d) for d in range(NUM_CLASSES))

#: Mean and standard deviation of MNIST training pixels on a [0, 1] scale.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
