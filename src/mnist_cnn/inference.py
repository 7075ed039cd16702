"""Classifying digit images with a trained model: MNIST-style preprocessing, then batched softmax probabilities."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mnist_cnn.checkpoint import LoadedCheckpoint
from mnist_cnn.config import NUM_CLASSES
from mnist_cnn.data import InMemoryBatches, scale_images
from mnist_cnn.engine import predict as run_model
from mnist_cnn.errors import ImageError
from mnist_cnn.preprocess import PreprocessedImage, expand_paths, preprocess


@dataclass
class Prediction:
    """The model's answer for one file, or why there is none.

    Attributes:
        file: The path as given (or as found in a directory).
        digit: The predicted digit, ``None`` when the file failed.
        probability: Softmax probability of ``digit``.
        top_k: ``(digit, probability)`` pairs, most likely first.
        error: Why the file could not be classified, else ``None``.
        steps: The preprocessing steps (not part of :meth:`to_dict`).
    """

    file: str
    digit: int | None = None
    probability: float | None = None
    top_k: list[tuple[int, float]] = field(default_factory=list)
    error: str | None = None
    steps: PreprocessedImage | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when the file was classified."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``file``, ``digit``, ``probability``, ``top_k`` (list of dicts) and ``error``."""
        return {
            "file": self.file,
            "digit": self.digit,
            "probability": self.probability,
            "top_k": [{"digit": d, "probability": p} for d, p in self.top_k],
            "error": self.error,
        }


def classify_digits(
    model: nn.Module, input_scaling: str, digits: np.ndarray | torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """Softmax probabilities for 28x28 digits, in batches.

    Args:
        model: A trained network.
        input_scaling: The scaling it was trained with (``"unit"`` or ``"standard"``).
        digits: ``[N, 28, 28]`` uint8 MNIST-style images (e.g. :attr:`PreprocessedImage.digit` stacked).
        batch_size: Images per forward pass.

    Returns:
        ``[N, 10]`` probabilities on the CPU.
    """
    images = torch.as_tensor(np.asarray(digits, dtype=np.uint8))
    if len(images) == 0:
        return torch.empty(0, NUM_CLASSES)
    device = next(model.parameters()).device
    batches = InMemoryBatches(scale_images(images, input_scaling), torch.zeros(len(images), dtype=torch.long), batch_size)
    return run_model(model, batches, device).probabilities


def predict_files(
    checkpoint: LoadedCheckpoint, paths: Iterable[str | os.PathLike[str]], top_k: int = 3, batch_size: int = 256
) -> list[Prediction]:
    """Classify image files and directories of them; a file that fails does not stop the others.

    Args:
        checkpoint: A loaded model (:func:`mnist_cnn.checkpoint.load_checkpoint`).
        paths: Image files and directories (expanded with :func:`expand_paths`).
        top_k: How many of the most likely digits to list (1-10).
        batch_size: Images per forward pass.

    Returns:
        One :class:`Prediction` per file, in order; failed ones have ``error`` set.
    """
    top_k = max(1, min(int(top_k), NUM_CLASSES))
    results: list[Prediction] = []
    for path in expand_paths(paths):
        try:
            results.append(Prediction(file=str(path), steps=preprocess(path)))
        except ImageError as error:
            results.append(Prediction(file=str(path), error=str(error).removeprefix(f"{path}: ")))
    good = [r for r in results if r.ok]
    if good:
        probabilities = classify_digits(checkpoint.model, checkpoint.input_scaling, np.stack([r.steps.digit for r in good]), batch_size)
        values, digits = probabilities.topk(top_k, dim=1)
        for result, row_values, row_digits in zip(good, values.tolist(), digits.tolist(), strict=True):
            result.top_k = list(zip(row_digits, row_values, strict=True))
            result.digit, result.probability = result.top_k[0]
    return results


def format_prediction(result: Prediction) -> str:
    """One line for a human: ``file: digit (probability)  top k: ...``."""
    if not result.ok:
        return f"{result.file}: error: {result.error}"
    ranked = ", ".join(f"{d} {p:.1%}" for d, p in result.top_k)
    return f"{result.file}: {result.digit} ({result.probability:.1%})   top {len(result.top_k)}: {ranked}"
