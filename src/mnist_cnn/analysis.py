"""A model's predictions over a split, and what they show: accuracy and its interval, confusion, per-class metrics, top losses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mnist_cnn.errors import CheckpointError
from mnist_cnn.mnist import CLASS_NAMES, NUM_CLASSES

if TYPE_CHECKING:  # pandas, scikit-learn and scipy load where a table, a matrix or an interval is made: predict needs none
    import pandas as pd

    from mnist_cnn.engine import Batches


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
def predict(model: nn.Module, batches: Batches, device: torch.device) -> Predictions:
    """Run the model (put in eval mode; already on ``device``) over ``(images, labels)`` batches; float32 results on the CPU, in order.

    Raises:
        CheckpointError: The model's outputs are NaN or infinite (weights that overflow): no answer it gives means anything.
    """
    model.eval()
    targets, probabilities = [], []
    for images, labels in batches:
        probabilities.append(torch.softmax(model(images.to(device, non_blocking=True)).float(), dim=1).cpu())
        targets.append(labels.cpu())
    probs = torch.cat(probabilities)
    broken = int((~torch.isfinite(probs).all(dim=1)).sum())
    if broken:
        raise CheckpointError(
            f"the model's outputs are NaN or infinite for {broken:,} of {len(probs):,} images: the model is broken (retrain it)"
        )
    return Predictions(targets=torch.cat(targets), predicted=probs.argmax(dim=1), probabilities=probs)


def confusion(predictions: Predictions) -> np.ndarray:
    """``[10, 10]`` counts: row = true digit, column = predicted digit (scikit-learn's convention)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(predictions.targets.numpy(), predictions.predicted.numpy(), labels=list(range(NUM_CLASSES)))


def per_class_report(predictions: Predictions) -> pd.DataFrame:
    """Precision, recall (= per-class accuracy), F1 and support of each digit (scikit-learn's), one row per digit ``"0"``-``"9"``."""
    import pandas as pd
    from sklearn.metrics import classification_report

    labels = list(range(NUM_CLASSES))
    targets, predicted = predictions.targets.numpy(), predictions.predicted.numpy()
    report = classification_report(targets, predicted, labels=labels, target_names=list(CLASS_NAMES), output_dict=True, zero_division=0)
    table = pd.DataFrame({name: report[name] for name in CLASS_NAMES}).T.astype({"support": int})
    table.index.name = "digit"
    return table


def most_confident_mistakes(predictions: Predictions, count: int = 25) -> torch.Tensor:
    """Indices (int64) of at most ``count`` misclassified examples, most confident first: the most instructive mistakes."""
    wrong = (~predictions.correct).nonzero().squeeze(1)
    return wrong[predictions.confidence[wrong].argsort(descending=True)][:count]


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval ``(low, high)`` of ``correct`` successes in ``total`` trials, such as an accuracy (scipy's).

    Unlike the normal approximation (``p ± z·sqrt(p(1-p)/n)``) it stays inside [0, 1] and keeps its coverage when the
    proportion is close to 1, as a good model's accuracy is. Not ``0 <= correct <= total`` with ``total >= 1``: ``ValueError``.
    """
    from scipy.stats import binomtest

    interval = binomtest(correct, total).proportion_ci(confidence, method="wilson")
    return float(interval.low), float(interval.high)


def most_confused_pairs(matrix: np.ndarray, count: int = 5) -> list[tuple[int, int, int]]:
    """The off-diagonal cells of a confusion matrix (row = true, column = predicted) with the most examples.

    At most ``count`` ``(true, predicted, examples)`` triples, most examples first, then by true and predicted class; empty cells left out.
    """
    matrix = np.asarray(matrix)
    rows, cols = np.nonzero(matrix * (1 - np.eye(*matrix.shape, dtype=matrix.dtype)))
    pairs = [(int(t), int(p), int(matrix[t, p])) for t, p in zip(rows, cols, strict=True)]
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))[:count]


def example_losses(predictions: Predictions) -> torch.Tensor:
    """Each example's cross-entropy, ``-log p(true digit)`` (the probability clamped at 1e-12 so it stays finite)."""
    return -predictions.probabilities.gather(1, predictions.targets[:, None]).squeeze(1).clamp_min(1e-12).log()


def top_losses(predictions: Predictions, count: int = 25) -> torch.Tensor:
    """Indices of the ``count`` examples with the largest loss (the least probability on the true digit), largest first.

    Unlike the most confident mistakes, this ranks by how little the model believed the right answer, so it can
    include an example classified correctly but only just (fastai's "top losses").
    """
    return example_losses(predictions).argsort(descending=True, stable=True)[:count]
