"""The predict command's answers as a stream: files read one by one, classified in batches, memory flat in their number."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from mnist_cnn.checkpoint import LoadedCheckpoint
from mnist_cnn.digits.inference import Opener, Prediction, classify_results, read_digit
from mnist_cnn.tooling.safety.images import read_image_file


def iter_predictions(
    checkpoint: LoadedCheckpoint,
    files: Iterable[str | os.PathLike[str] | Prediction],
    top_k: int = 3,
    batch_size: int = 256,
    keep_steps: bool = False,
    opener: Opener = read_image_file,
) -> Iterator[Prediction]:
    """Classify image files as a stream; a file that fails does not stop the others.

    Each image is reduced to its 28x28 digit as soon as it is read (:func:`~mnist_cnn.digits.inference.read_digit`),
    and only that digit is kept until its batch is full and classified.

    Args:
        checkpoint: A loaded model (:func:`mnist_cnn.checkpoint.load_checkpoint`).
        files: Image files, read one by one as the stream is consumed. A directory is not looked into: it fails like
            any other file that is no image (:func:`~mnist_cnn.tooling.cli.sources.prediction_inputs` expands them).
            A :class:`Prediction` among them, e.g. one carrying why a directory could not be listed, is passed
            through in its place.
        top_k: How many of the most likely digits to list (1-10).
        batch_size: Images per forward pass (and most results held back at once).
        keep_steps: Also keep every preprocessing step in :attr:`Prediction.steps` (for plots; full-size arrays).
        opener: Opens each file (by default within the bounds of :func:`read_image_file`).

    Yields:
        One :class:`Prediction` per file, in order; failed ones have ``error`` set.
    """
    batch_size = max(1, int(batch_size))
    pending: list[Prediction] = []
    waiting = 0
    for item in files:
        result = item if isinstance(item, Prediction) else read_digit(Path(item), keep_steps, opener)
        waiting += result.image is not None and result.digit is None
        if not waiting:
            yield result  # nothing ahead of it waits for the model: report it at once
            continue
        pending.append(result)
        if waiting >= batch_size:
            classify_results(checkpoint.model, checkpoint.input_scaling, pending, top_k, batch_size)
            yield from pending
            pending, waiting = [], 0
    classify_results(checkpoint.model, checkpoint.input_scaling, pending, top_k, batch_size)
    yield from pending
