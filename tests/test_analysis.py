"""The evaluation helpers, tested directly on hand-made predictions (no model, no MNIST)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnist_cnn import analysis, data
from mnist_cnn.analysis import Predictions
from mnist_cnn.tooling.cli import measure


def predictions(targets: list[int], predicted: list[int], confidence: list[float]) -> Predictions:
    """Predictions whose winning class has the given probability and the rest share what is left."""
    probabilities = torch.zeros(len(targets), 10)
    for row, (guess, sure) in enumerate(zip(predicted, confidence, strict=True)):
        probabilities[row] = (1 - sure) / 9
        probabilities[row, guess] = sure
    return Predictions(targets=torch.tensor(targets), predicted=torch.tensor(predicted), probabilities=probabilities)


CASE = predictions(targets=[0, 1, 2, 3, 3, 7], predicted=[0, 7, 2, 5, 3, 1], confidence=[0.9, 0.6, 0.8, 0.95, 0.7, 0.5])


def test_confusion_counts_true_rows_against_predicted_columns() -> None:
    matrix = analysis.confusion(CASE)
    assert matrix.shape == (10, 10) and matrix.sum() == 6 and np.trace(matrix) == 3
    assert matrix[1, 7] == 1 and matrix[3, 5] == 1 and matrix[7, 1] == 1 and matrix[3, 3] == 1


def test_per_class_report_gives_precision_recall_and_support() -> None:
    report = analysis.per_class_report(CASE)
    assert list(report.index) == [str(d) for d in range(10)]
    assert report.loc["3", "recall"] == 0.5 and report.loc["3", "support"] == 2
    assert report.loc["1", "precision"] == 0.0 and report.loc["0", "f1-score"] == 1.0
    assert report.loc["9", "support"] == 0 and report.loc["9", "recall"] == 0.0, "absent digits do not raise"


def test_most_confident_mistakes_are_wrong_and_sorted() -> None:
    wrong = analysis.most_confident_mistakes(CASE)
    assert wrong.tolist() == [3, 1, 5]
    assert analysis.most_confident_mistakes(CASE, count=2).tolist() == [3, 1]


def test_mistakes_gathers_images_labels_predictions_and_confidence() -> None:
    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1).expand(6, 28, 28)
    gallery = measure.mistakes(CASE, images, count=2)
    assert len(gallery) == 2 and gallery.indices.tolist() == [3, 1]
    assert gallery.images[:, 0, 0].tolist() == [3, 1], "each image belongs to its mistake"
    assert gallery.labels.tolist() == [3, 1] and gallery.predicted.tolist() == [5, 7]
    assert gallery.confidence.tolist() == pytest.approx([0.95, 0.6])


def test_pixel_statistics() -> None:
    images = torch.tensor([[[0, 255], [0, 51]]], dtype=torch.uint8)
    stats = data.pixel_statistics(images)
    assert stats["zero_fraction"] == 0.5 and stats["saturated_fraction"] == 0.25
    assert stats["max"] == 1.0 and stats["mean"] == pytest.approx((255 + 51) / 255 / 4)


def test_evaluation_result_counts() -> None:
    result = measure.EvaluationResult(
        loss=0.1, accuracy=0.5, predictions=CASE, confusion=analysis.confusion(CASE), report=analysis.per_class_report(CASE)
    )
    assert result.correct == 3 and result.total == 6


def test_wilson_interval_matches_a_worked_example_and_stays_in_range() -> None:
    low, high = analysis.wilson_interval(81, 263)  # p = 0.308; worked out by hand: 0.3107 ± 0.0555
    assert low == pytest.approx(0.2553, abs=1e-3) and high == pytest.approx(0.3662, abs=1e-3)
    low, high = analysis.wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and 0.65 < low < 0.75, "all correct still gives a lower bound below 1"
    assert analysis.wilson_interval(0, 10)[0] == 0.0
    with pytest.raises(ValueError):
        analysis.wilson_interval(11, 10)


def test_most_confused_pairs_are_off_diagonal_largest_first() -> None:
    matrix = np.diag([50, 50, 50])
    matrix[2, 1], matrix[0, 2], matrix[1, 0] = 4, 7, 4
    assert analysis.most_confused_pairs(matrix) == [(0, 2, 7), (1, 0, 4), (2, 1, 4)]
    assert analysis.most_confused_pairs(matrix, count=1) == [(0, 2, 7)]
    assert analysis.most_confused_pairs(np.diag([3, 3])) == []


def test_top_losses_rank_by_the_true_digits_probability() -> None:
    losses = analysis.example_losses(CASE)
    true_probs = CASE.probabilities[torch.arange(6), CASE.targets]
    assert torch.allclose(losses, -true_probs.log())
    order = analysis.top_losses(CASE)
    assert order[0].item() == 3, "the 3 called a 5 at 95 % leaves the true digit the least"
    assert (losses[order].diff() <= 0).all() and len(analysis.top_losses(CASE, count=2)) == 2
