"""Classifying digit images (files, drawings) with a trained model, each answer with the "not a digit?" rule's verdict."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from mnist_cnn.analysis import predict as run_model
from mnist_cnn.checkpoint import LoadedCheckpoint
from mnist_cnn.data import InMemoryBatches, scale_images
from mnist_cnn.digits.decode import load_image
from mnist_cnn.digits.not_a_digit import digit_scores, ink_features, not_a_digit_reason
from mnist_cnn.digits.preprocess import PreprocessedImage, preprocess
from mnist_cnn.errors import ImageError
from mnist_cnn.mnist import NUM_CLASSES
from mnist_cnn.text import display_name, escape_text

#: Opens an image file, or raises :class:`ImageError` beginning with the file's name.
Opener = Callable[[Path], Image.Image]


@dataclass
class Prediction:
    """The model's answer for one file or drawing, or why there is none.

    Attributes:
        file: The path as given, unescaped (print :func:`display_name` of it); ``""`` for a drawing.
        digit: The predicted digit, and its softmax ``probability`` (the confidence); ``None`` when the input failed.
        top_k: ``(digit, probability)`` pairs, most likely first.
        error: Why the input could not be classified, else ``None``.
        not_a_digit: Why the input looks unlike any digit (:func:`not_a_digit_reason`), else ``None``.
        image: The ``[28, 28]`` uint8 model input (``None`` when the input failed).
        steps: The preprocessing steps when kept (``keep_steps=True``; always for a drawing).
        probabilities: All ten softmax probabilities.
    """

    file: str = ""
    digit: int | None = None
    probability: float | None = None
    top_k: list[tuple[int, float]] = field(default_factory=list)
    error: str | None = None
    not_a_digit: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    steps: PreprocessedImage | None = field(default=None, repr=False)
    probabilities: np.ndarray | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when the input was classified."""
        return self.error is None


def classify_digits(model: nn.Module, input_scaling: str, digits: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax probabilities ``[N, 10]``, on the CPU, of ``[N, 28, 28]`` uint8 MNIST-style digits, in batches.

    Args:
        input_scaling: The scaling ``model`` was trained with (``"unit"`` or ``"standard"``).
        digits: E.g. :attr:`PreprocessedImage.digit` stacked.
    """
    images = torch.as_tensor(np.asarray(digits, dtype=np.uint8))
    if len(images) == 0:
        return torch.empty(0, NUM_CLASSES)
    batches = InMemoryBatches(scale_images(images, input_scaling), torch.zeros(len(images), dtype=torch.long), batch_size)
    return run_model(model, batches, next(model.parameters()).device).probabilities


def read_digit(path: Path, keep_steps: bool = False, opener: Opener = load_image) -> Prediction:
    """A file's result before the model: its 28x28 digit (the full-size steps only when kept), or why it cannot be read."""
    result = Prediction(file=str(path))
    try:
        steps = preprocess(opener(path))
    except ImageError as failure:
        result.error = str(failure).removeprefix(f"{path}: ")
    else:
        result.image, result.steps = steps.digit, steps if keep_steps else None
    return result


def classify_results(model: nn.Module, input_scaling: str, results: list[Prediction], top_k: int = 3, batch_size: int = 256) -> None:
    """Fill in the model's answer and the "not a digit?" verdict of each result whose ``image`` awaits the model.

    Args:
        input_scaling: The scaling ``model`` was trained with.
        top_k: How many of the most likely digits to list (1-10).
    """
    good = [result for result in results if result.image is not None and result.digit is None]
    if not good:
        return
    digits = np.stack([result.image for result in good])
    probabilities = classify_digits(model, input_scaling, digits, batch_size)
    values, ranked = probabilities.topk(max(1, min(int(top_k), NUM_CLASSES)), dim=1)
    rows = zip(good, probabilities.numpy(), values.tolist(), ranked.tolist(), digit_scores(digits).tolist(), strict=True)
    for result, row, row_values, row_digits, score in rows:
        result.probabilities, result.top_k = row, list(zip(row_digits, row_values, strict=True))
        result.digit, result.probability = result.top_k[0]
        result.not_a_digit = not_a_digit_reason(ink_features(result.image), result.probability, score)


def predict_files(
    checkpoint: LoadedCheckpoint,
    files: Iterable[str | os.PathLike[str] | Prediction],
    top_k: int = 3,
    batch_size: int = 256,
    keep_steps: bool = False,
    opener: Opener = load_image,
) -> list[Prediction]:
    """Classify image files: one :class:`Prediction` each, in order; one that fails gets ``error`` and does not stop the others.

    Args:
        files: Image files; a :class:`Prediction` among them (e.g. why a folder could not be listed) is passed through.
        top_k: How many of the most likely digits to list (1-10).
        keep_steps: Keep every preprocessing step in :attr:`Prediction.steps` (e.g. to plot them).
        opener: Opens each file (the predict command passes a guarded one).
    """
    results = [item if isinstance(item, Prediction) else read_digit(Path(item), keep_steps, opener) for item in files]
    classify_results(checkpoint.model, checkpoint.input_scaling, results, top_k, batch_size)
    return results


def format_prediction(result: Prediction) -> str:
    """One line for a human: ``file: digit (probability)   top k: ...``, then ``   not a digit? reason`` when flagged.

    The file name and the error are escaped (:func:`display_name`), so the line is always exactly one line.
    """
    name = display_name(result.file)
    if not result.ok:
        return f"{name}: error: {escape_text(result.error or '')}"
    ranked = ", ".join(f"{d} {p:.1%}" for d, p in result.top_k)
    line = f"{name}: {result.digit} ({result.probability:.1%})   top {len(result.top_k)}: {ranked}"
    return line + f"   not a digit? {result.not_a_digit}" if result.not_a_digit else line
