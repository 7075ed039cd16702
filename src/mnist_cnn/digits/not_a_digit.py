"""The rule that decides whether a classified input is "not a digit?": its ink, a small digit detector, the model's confidence."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from mnist_cnn.checkpoint import read_state_dict
from mnist_cnn.errors import CheckpointError
from mnist_cnn.text import display_name, escape_text

#: Names of :func:`ink_features`, in order.
INK_FEATURES = ("ink", "solid", "fill", "pieces", "width")


def ink_features(digit: np.ndarray) -> dict[str, float]:
    """Measures of the amount and shape of ink in a 28x28 digit, to tell digits from things that are not.

    Args:
        digit: ``[28, 28]`` uint8 0-255, light ink on black (:attr:`~mnist_cnn.digits.preprocess.PreprocessedImage.digit`,
            or an MNIST image).

    Returns:
        ``ink``: total ink in pixels (sum of values / 255); ``solid``: pixels at least half inked; ``fill``: ink /
        area of the bounding box of every non-zero pixel; ``pieces``: connected groups of half-inked pixels
        (8-connected); ``width``: shorter side of that box, in pixels (1 for a one-pixel line).
    """
    values = np.asarray(digit, dtype=np.float32) / 255.0
    solid = values >= 0.5
    _, pieces = ndimage.label(solid, structure=np.ones((3, 3), dtype=bool))
    ink = float(values.sum())
    height = width = 0
    if ink > 0:
        rows, cols = np.flatnonzero(values.any(axis=1)), np.flatnonzero(values.any(axis=0))
        height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    return {
        "ink": ink,
        "solid": float(solid.sum()),
        "fill": ink / max(height * width, 1),
        "pieces": float(pieces),
        "width": float(min(height, width)),
    }


#: Ranges of :func:`ink_features` that hold 99.9 % of the 60,000 MNIST training digits after
#: preprocessing (their 0.05th and 99.95th percentiles, as ``benchmarks/not_a_digit.py`` measures them). Ink outside
#: one of them is flagged "not a digit?" whatever the model says: noise, one-pixel lines, filled blocks, which the
#: network often calls a digit with high confidence. ``None``: that side is not checked. ``width`` has no upper end (a preprocessed digit
#: is 20 px on its longer side).
FAR_RANGES: dict[str, tuple[float | None, float | None]] = {
    "ink": (24.8, 235.9),
    "solid": (24.0, 234.0),
    "fill": (0.126, 0.823),
    "pieces": (1.0, 4.0),
    "width": (2.0, None),
}
#: Top softmax probability below which an input is flagged whatever its ink. Chosen with the seed weights as the top
#: probability of the least confident of the first 5,000 MNIST test digits that ``FAR_RANGES`` pass (0.309, rounded
#: down), so it spends none of the 0.5 % false-alarm budget: per false alarm the detector catches far more
#: (``benchmarks/not_a_digit.py``; the project's validation digits were in the seed's training data and would
#: overstate its confidence).
MIN_CONFIDENCE = 0.30
#: The detector's shipped weights (a safetensors file of its ``state_dict``), written by ``benchmarks/train_not_a_digit.py``.
DETECTOR_WEIGHTS = Path(__file__).with_name("digit_detector.safetensors")
#: Detector score (a logit; higher is more digit-like) below which an input is flagged. Chosen as the largest value
#: (rounded down) at which the whole rule flags at most 0.5 % of the first 5,000 MNIST test digits
#: (``benchmarks/not_a_digit.py``), none of which the detector was trained on; judged on the other 5,000 and on
#: non-digit kinds it never saw.
MIN_DIGIT_SCORE = -3.46
#: How each feature is written in a reason: a template and the number format.
_FEATURE_TEXT = {
    "ink": ("ink {} px", ".1f"),
    "solid": ("{} solid px", ".0f"),
    "fill": ("box {} filled", ".1%"),
    "pieces": ("{} pieces", ".0f"),
    "width": ("{} px wide", ".0f"),
}


def _outside(features: dict[str, float], ranges: dict[str, tuple[float | None, float | None]]) -> list[str]:
    found = []
    for name, (low, high) in ranges.items():
        template, spec = _FEATURE_TEXT[name]
        value = features[name]
        if low is not None and value < low:
            found.append(f"{template.format(format(value, spec))} (MNIST digits: at least {format(low, spec)})")
        elif high is not None and value > high:
            found.append(f"{template.format(format(value, spec))} (MNIST digits: at most {format(high, spec)})")
    return found


def not_a_digit_reason(features: dict[str, float], probability: float, digit_score: float | None = None) -> str | None:
    """Why an input looks unlike any MNIST digit, or ``None`` when it looks like one.

    The rule, measured on MNIST (see :data:`FAR_RANGES`, :data:`MIN_DIGIT_SCORE` and :data:`MIN_CONFIDENCE`): the
    ink is outside what 99.9 % of MNIST digits show, or the digit detector (:func:`digit_scores`) says it is not a
    digit, or the model's top probability is unusually low; together they flag at most 0.5 % of MNIST test digits.
    The detector catches about a third of the letters, symbols and shapes the network reads confidently as a digit
    (of kinds it was not trained on); many pass still (an H as a 4 at 99 %): ``docs/not-a-digit.md`` gives the rates.

    Args:
        features: :func:`ink_features` of the 28x28 input.
        probability: The model's top softmax probability for it.
        digit_score: Its :func:`digit_scores` value; ``None`` leaves the detector out.

    Returns:
        A short reason such as ``"ink 20.0 px (MNIST digits: at least 24.8)"``, or ``None``.
    """
    far = _outside(features, FAR_RANGES)
    if far:
        return "; ".join(far)
    if digit_score is not None and digit_score < MIN_DIGIT_SCORE:
        return f"shaped unlike MNIST digits (digit detector score {digit_score:.2f}, below {MIN_DIGIT_SCORE:.2f})"
    if probability < MIN_CONFIDENCE:
        return f"the model is unsure ({probability:.0%}; MNIST digits with usual ink get at least {MIN_CONFIDENCE:.0%})"
    return None


class DigitDetector(nn.Module):
    """A tiny CNN (about 6,000 weights) that tells MNIST-style digits from letters, symbols, shapes and scribbles.

    It looks only at the 28x28 input, so it works with whichever classifier ``predict`` uses. Trained by
    ``benchmarks/train_not_a_digit.py``: MNIST training digits against rendered non-digits and made-up scribbles.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 3x3
        )  # fmt: skip
        self.head = nn.Linear(32 * 3 * 3, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 1, 28, 28]`` in 0-1 (ink 1) to ``[N, 1]`` logits of "is a digit"."""
        return self.head(self.features(images).flatten(1))


@lru_cache(maxsize=1)
def _detector() -> DigitDetector:
    model = DigitDetector()
    state_dict = read_state_dict(DETECTOR_WEIGHTS)  # no pickle; NaN or infinite weights refused in one line naming the file
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise CheckpointError(
            f"{display_name(DETECTOR_WEIGHTS)} does not fit the digit detector: {escape_text(str(error).splitlines()[0])}"
        ) from None
    return model.eval()


@torch.no_grad()
def digit_scores(digits: np.ndarray) -> np.ndarray:
    """How digit-like each 28x28 input is, by the shipped detector (a logit; below :data:`MIN_DIGIT_SCORE`: flagged).

    Args:
        digits: ``[N, 28, 28]`` uint8 0-255, light ink on black (preprocessed digits, or MNIST images).

    Returns:
        ``[N]`` float scores.
    """
    images = torch.as_tensor(np.asarray(digits, dtype=np.float32)).reshape(-1, 1, 28, 28) / 255
    model = _detector()
    return torch.cat([model(images[i : i + 1024]) for i in range(0, len(images), 1024)]).reshape(-1).numpy()
