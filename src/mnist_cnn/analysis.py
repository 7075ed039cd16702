"""A model's predictions over a split, and what they show: accuracy with its interval, confusion, per-class metrics, mistakes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mnist_cnn.engine import Batches, autocast
from mnist_cnn.mnist import CLASS_NAMES, NUM_CLASSES

if TYPE_CHECKING:  # pandas and scikit-learn load only where a table or a matrix is made: predict needs neither
    import pandas as pd


@dataclass
class Predictions:
    """Model outputs over a dataset: true labels, predicted labels and softmax probabilities ``[N, 10]``."""

    targets: torch.Tensor
    predicted: torch.Tensor
    probabilities: torch.Tensor

    @property
    def confidence(self) -> torch.Tensor:
        """Probability of the predicted class."""
        return self.probabilities.max(dim=1).values

    @property
    def correct(self) -> torch.Tensor:
        """Boolean mask of correct predictions."""
        return self.predicted == self.targets

    @property
    def accuracy(self) -> float:
        """Fraction classified correctly."""
        return self.correct.float().mean().item()


@torch.inference_mode()
def predict(
    model: nn.Module,
    batches: Batches,
    device: torch.device,
    *,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> Predictions:
    """Run the model over every batch (batched, not one image at a time) and collect its predictions.

    Args:
        model: The network; put in eval mode.
        batches: Iterable of ``(images, labels)``.
        device: Where to compute (the model must be there already).
        autocast_dtype: ``torch.bfloat16`` for mixed precision, else ``None``.
        channels_last: Feed images in channels-last memory format.

    Returns:
        The labels, the predicted digits and the probabilities (float32, on the CPU), in the batches' order.
    """
    model.eval()
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    targets, probabilities = [], []
    for images, labels in batches:
        with autocast(device, autocast_dtype):
            logits = model(images.to(device, non_blocking=True, memory_format=memory_format))
        probabilities.append(torch.softmax(logits.float(), dim=1).cpu())
        targets.append(labels.cpu())
    probs = torch.cat(probabilities)
    return Predictions(targets=torch.cat(targets), predicted=probs.argmax(dim=1), probabilities=probs)


def confusion(predictions: Predictions) -> np.ndarray:
    """``[10, 10]`` counts: row = true digit, column = predicted digit (scikit-learn's convention)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(predictions.targets.numpy(), predictions.predicted.numpy(), labels=list(range(NUM_CLASSES)))


def per_class_report(predictions: Predictions) -> pd.DataFrame:
    """Precision, recall (= per-class accuracy), F1 and support of each digit, from scikit-learn.

    Returns:
        One row per digit, indexed ``"0"`` to ``"9"``.
    """
    import pandas as pd
    from sklearn.metrics import classification_report

    report = classification_report(
        predictions.targets.numpy(),
        predictions.predicted.numpy(),
        labels=list(range(NUM_CLASSES)),
        target_names=list(CLASS_NAMES),
        output_dict=True,
        zero_division=0,
    )
    table = pd.DataFrame({name: report[name] for name in CLASS_NAMES}).T
    table["support"] = table["support"].astype(int)
    table.index.name = "digit"
    return table


def most_confident_mistakes(predictions: Predictions, count: int = 25) -> torch.Tensor:
    """Indices of the misclassified examples, most confident first: the most instructive mistakes.

    Args:
        predictions: A model's predictions with their true labels.
        count: How many to return at most.

    Returns:
        int64 indices into ``predictions``.
    """
    wrong = (~predictions.correct).nonzero().squeeze(1)
    return wrong[predictions.confidence[wrong].argsort(descending=True)][:count]


def wilson_interval(correct: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion such as an accuracy (95 % with the default ``z``).

    Unlike the normal approximation (``p ± z·sqrt(p(1-p)/n)``) it stays inside [0, 1] and keeps its coverage
    when the proportion is close to 1, as a good model's accuracy is.

    Args:
        correct: Successes (e.g. test images classified correctly).
        total: Trials (test images); at least 1.
        z: Standard normal quantile of the confidence level (1.96 for 95 %).

    Returns:
        ``(low, high)``, both in [0, 1].
    """
    if total < 1 or not 0 <= correct <= total:
        raise ValueError(f"need 0 <= correct <= total and total >= 1, got {correct} of {total}")
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * float(np.sqrt(p * (1 - p) / total + z * z / (4 * total * total))) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def most_confused_pairs(confusion_matrix_: np.ndarray, count: int = 5) -> list[tuple[int, int, int]]:
    """The off-diagonal cells of a confusion matrix with the most examples.

    Args:
        confusion_matrix_: ``[C, C]`` counts, row = true class, column = predicted class.
        count: How many pairs at most.

    Returns:
        ``(true, predicted, examples)`` triples, most examples first (ties: lower true class, then lower
        predicted class first); cells with no examples are left out.
    """
    matrix = np.asarray(confusion_matrix_)
    rows, cols = np.nonzero(matrix * (1 - np.eye(*matrix.shape, dtype=matrix.dtype)))
    pairs = [(int(t), int(p), int(matrix[t, p])) for t, p in zip(rows, cols, strict=True)]
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))[:count]


def example_losses(predictions: Predictions) -> torch.Tensor:
    """Each example's cross-entropy, ``-log p(true digit)`` (the probability clamped at 1e-12 so it stays finite)."""
    true_probs = predictions.probabilities.gather(1, predictions.targets[:, None]).squeeze(1)
    return -true_probs.clamp_min(1e-12).log()


def top_losses(predictions: Predictions, count: int = 25) -> torch.Tensor:
    """Indices of the examples with the largest loss (the lowest probability on the true digit), largest first.

    The view fastai calls "top losses": unlike :func:`most_confident_mistakes` it ranks by how little the model
    believed the right answer, so it can include an example classified correctly but only just.

    Args:
        predictions: A model's predictions with their true labels.
        count: How many to return at most.

    Returns:
        int64 indices into ``predictions``.
    """
    return example_losses(predictions).argsort(descending=True, stable=True)[:count]
