"""Classifying digit image files with a trained model, in batches, as a stream of results."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnist_cnn.analysis import predict as run_model
from mnist_cnn.checkpoint import LoadedCheckpoint
from mnist_cnn.data import InMemoryBatches, scale_images
from mnist_cnn.digits.not_a_digit import digit_scores, ink_features, not_a_digit_reason
from mnist_cnn.digits.preprocess import PreprocessedImage, preprocess
from mnist_cnn.errors import ImageError
from mnist_cnn.mnist import NUM_CLASSES
from mnist_cnn.text import display_name, escape_text


@dataclass
class Prediction:
    """The model's answer for one file, or why there is none.

    Attributes:
        file: The path as given (or as the predict command found it in a directory), unescaped; print
            :func:`display_name` of it.
        digit: The predicted digit, ``None`` when the file failed.
        probability: Softmax probability of ``digit`` (the confidence).
        top_k: ``(digit, probability)`` pairs, most likely first.
        error: Why the file could not be classified, else ``None``.
        not_a_digit: Why the input looks unlike any digit (:func:`not_a_digit_reason`), else ``None``.
        image: The ``[28, 28]`` uint8 model input (``None`` when the file failed).
        steps: The preprocessing steps when asked for (``keep_steps=True``); not part of :meth:`to_dict`.
    """

    file: str
    digit: int | None = None
    probability: float | None = None
    top_k: list[tuple[int, float]] = field(default_factory=list)
    error: str | None = None
    not_a_digit: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)
    steps: PreprocessedImage | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when the file was classified."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``file`` and ``error`` (both escaped), ``digit``, ``probability``, ``top_k`` (list of dicts),
        ``not_a_digit`` (bool) and ``not_a_digit_reason``."""
        return {
            "file": display_name(self.file),
            "digit": self.digit,
            "probability": self.probability,
            "top_k": [{"digit": d, "probability": p} for d, p in self.top_k],
            "not_a_digit": self.not_a_digit is not None,
            "not_a_digit_reason": self.not_a_digit,
            "error": None if self.error is None else escape_text(self.error),
        }


def classify_digits(model: nn.Module, input_scaling: str, digits: np.ndarray | torch.Tensor, batch_size: int = 256) -> torch.Tensor:
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


def _read(path: Path, keep_steps: bool) -> Prediction:
    """A file's result before the model: its 28x28 digit (and every step, when kept), or why it cannot be read."""
    result = Prediction(file=str(path))
    try:
        steps = preprocess(path)
    except ImageError as failure:
        result.error = str(failure).removeprefix(f"{path}: ")
    else:
        # Only the digit is kept unless asked: the full-size arrays go when this returns, not after the next file.
        result.image = steps.digit
        result.steps = steps if keep_steps else None
    return result


def _unclassified(result: Prediction) -> bool:
    """Whether ``result`` holds a digit still waiting for the model."""
    return result.image is not None and result.digit is None


def _classify(checkpoint: LoadedCheckpoint, pending: list[Prediction], top_k: int, batch_size: int) -> None:
    good = [result for result in pending if _unclassified(result)]
    if not good:
        return
    probabilities = classify_digits(checkpoint.model, checkpoint.input_scaling, np.stack([r.image for r in good]), batch_size)
    values, digits = probabilities.topk(top_k, dim=1)
    shapes = digit_scores(np.stack([r.image for r in good])).tolist()
    for result, row_values, row_digits, shape in zip(good, values.tolist(), digits.tolist(), shapes, strict=True):
        result.top_k = list(zip(row_digits, row_values, strict=True))
        result.digit, result.probability = result.top_k[0]
        result.not_a_digit = not_a_digit_reason(ink_features(result.image), result.probability, shape)


def iter_predictions(
    checkpoint: LoadedCheckpoint,
    files: Iterable[str | os.PathLike[str] | Prediction],
    top_k: int = 3,
    batch_size: int = 256,
    keep_steps: bool = False,
) -> Iterator[Prediction]:
    """Classify image files as a stream; a file that fails does not stop the others.

    Each image is reduced to its 28x28 digit as soon as it is read (:func:`~mnist_cnn.digits.preprocess.preprocess`), and
    only that digit is kept until its batch is full and classified, so memory does not grow with the number of
    files.

    Args:
        checkpoint: A loaded model (:func:`mnist_cnn.checkpoint.load_checkpoint`).
        files: Image files, read one by one as the stream is consumed. A directory is not looked into: it fails like
            any other file that is no image (the predict command expands directories before). A
            :class:`Prediction` among them, e.g. one carrying why a directory could not be listed, is passed
            through in its place.
        top_k: How many of the most likely digits to list (1-10).
        batch_size: Images per forward pass (and most results held back at once).
        keep_steps: Also keep every preprocessing step in :attr:`Prediction.steps` (for plots; full-size arrays).

    Yields:
        One :class:`Prediction` per file, in order; failed ones have ``error`` set.
    """
    top_k = max(1, min(int(top_k), NUM_CLASSES))
    batch_size = max(1, int(batch_size))
    pending: list[Prediction] = []
    waiting = 0
    for item in files:
        result = item if isinstance(item, Prediction) else _read(Path(item), keep_steps)
        if _unclassified(result):
            waiting += 1
        if not waiting:
            yield result  # nothing ahead of it waits for the model: report it at once
            continue
        pending.append(result)
        if waiting >= batch_size:
            _classify(checkpoint, pending, top_k, batch_size)
            yield from pending
            pending, waiting = [], 0
    _classify(checkpoint, pending, top_k, batch_size)
    yield from pending


def predict_files(
    checkpoint: LoadedCheckpoint,
    files: Iterable[str | os.PathLike[str] | Prediction],
    top_k: int = 3,
    batch_size: int = 256,
    keep_steps: bool = False,
) -> list[Prediction]:
    """Classify image files; a file that fails does not stop the others.

    A list of :func:`iter_predictions`; use that to handle results as they come.

    Args:
        checkpoint: A loaded model (:func:`mnist_cnn.checkpoint.load_checkpoint`).
        files: Image files (a :class:`Prediction` among them is passed through, as in :func:`iter_predictions`).
        top_k: How many of the most likely digits to list (1-10).
        batch_size: Images per forward pass.
        keep_steps: Keep every preprocessing step in :attr:`Prediction.steps` (e.g. to plot them).

    Returns:
        One :class:`Prediction` per file, in order; failed ones have ``error`` set.
    """
    return list(iter_predictions(checkpoint, files, top_k=top_k, batch_size=batch_size, keep_steps=keep_steps))


def format_prediction(result: Prediction) -> str:
    """One line for a human: ``file: digit (probability)   top k: ...``, then ``   not a digit? reason`` when flagged.

    The file name and the error are escaped (:func:`display_name`), so the line is always exactly one line.
    """
    name = display_name(result.file)
    if not result.ok:
        return f"{name}: error: {escape_text(result.error or '')}"
    ranked = ", ".join(f"{d} {p:.1%}" for d, p in result.top_k)
    line = f"{name}: {result.digit} ({result.probability:.1%})   top {len(result.top_k)}: {ranked}"
    if result.not_a_digit:
        line += f"   not a digit? {result.not_a_digit}"
    return line
