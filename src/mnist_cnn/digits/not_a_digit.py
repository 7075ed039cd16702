"""The rule that decides whether a classified input is "not a digit?": its ink, a small digit detector, the model's confidence.

Its thresholds are measured on MNIST by ``benchmarks/not_a_digit.py``; ``docs/not-a-digit.md`` gives the rates.
"""

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
#: Ranges of :func:`ink_features` that hold 99.98 % of the 55,000 MNIST training digits outside the validation split
#: after preprocessing (their 0.01st and 99.99th percentiles). Ink outside one is flagged whatever the model says:
#: noise, one-pixel lines and filled blocks, which the network often calls a digit with confidence. Wide, so that
#: they spend little of the false-alarm budget on odd but real digits; the detector judges the rest. ``None``: that
#: side is not checked.
FAR_RANGES: dict[str, tuple[float | None, float | None]] = {
    "ink": (22.0, 265.5),
    "solid": (20.5, 267.5),
    "fill": (0.112, 0.92),
    "pieces": (1.0, 5.0),
    "width": (2.0, None),
}
#: Top softmax probability below which an input is flagged whatever its ink: with the seed weights, that of the least
#: confident of the first 5,000 MNIST test digits inside the ink ranges of the time (0.309, rounded down); it flags
#: none of the 10,000 test digits, so it spends none of the 0.5 % false-alarm budget with those weights.
MIN_CONFIDENCE = 0.30
#: The detector's shipped weights (a safetensors ``state_dict``), written by ``benchmarks/train_not_a_digit.py``.
DETECTOR_WEIGHTS = Path(__file__).with_name("digit_detector.safetensors")
#: Detector score (log-odds of "a digit"; higher is more digit-like) below which an input is flagged: the largest
#: (rounded down) at which the whole rule flags at most 0.25 % of the 5,000 validation digits, which the detector never
#: saw: half the 0.5 % goal, a margin for the test digits' other writers.
MIN_DIGIT_SCORE = -3.71
#: How each feature is written in a reason: a template and the number format.
_FEATURE_TEXT = {
    "ink": ("ink {} px", ".1f"),
    "solid": ("{} solid px", ".0f"),
    "fill": ("box {} filled", ".1%"),
    "pieces": ("{} pieces", ".0f"),
    "width": ("{} px wide", ".0f"),
}


def ink_features(digit: np.ndarray) -> dict[str, float]:
    """Measures of the ink in a ``[28, 28]`` uint8 digit (light on black), to tell digits from things that are not.

    ``ink``: total ink in pixels (sum of values / 255); ``solid``: pixels at least half inked; ``fill``: ink / area of the
    bounding box of every non-zero pixel; ``pieces``: 8-connected groups of half-inked pixels; ``width``: shorter side
    of that box, in pixels (1 for a one-pixel line).
    """
    values = np.asarray(digit, dtype=np.float32) / 255.0
    solid = values >= 0.5
    _, pieces = ndimage.label(solid, structure=np.ones((3, 3), dtype=bool))
    ink, height, width = float(values.sum()), 0, 0
    if ink > 0:
        rows, cols = np.flatnonzero(values.any(axis=1)), np.flatnonzero(values.any(axis=0))
        height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    fill = ink / max(height * width, 1)
    return {"ink": ink, "solid": float(solid.sum()), "fill": fill, "pieces": float(pieces), "width": float(min(height, width))}


def _outside(features: dict[str, float]) -> list[str]:
    found = []
    for name, (low, high) in FAR_RANGES.items():
        template, spec = _FEATURE_TEXT[name]
        value = features[name]
        if low is not None and value < low:
            found.append(f"{template.format(format(value, spec))} (MNIST digits: at least {format(low, spec)})")
        elif high is not None and value > high:
            found.append(f"{template.format(format(value, spec))} (MNIST digits: at most {format(high, spec)})")
    return found


def not_a_digit_reason(features: dict[str, float], probability: float, digit_score: float | None = None) -> str | None:
    """Why an input looks unlike any MNIST digit (``"ink 20.0 px (MNIST digits: at least 22.0)"``), or ``None``.

    Flagged when the ink is outside :data:`FAR_RANGES`, or the detector's score is below :data:`MIN_DIGIT_SCORE`, or
    the model's top probability is below :data:`MIN_CONFIDENCE`: together at most 0.5 % of MNIST test digits
    (``docs/not-a-digit.md`` has the measured rates, on digits and on letters, symbols and shapes).

    Args:
        features: :func:`ink_features` of the 28x28 input.
        probability: The model's top softmax probability for it.
        digit_score: Its :func:`digit_scores` value; ``None`` leaves the detector out.
    """
    far = _outside(features)
    if far:
        return "; ".join(far)
    if digit_score is not None and digit_score < MIN_DIGIT_SCORE:
        return f"shaped unlike MNIST digits (digit detector score {digit_score:.2f}, below {MIN_DIGIT_SCORE:.2f})"
    if probability < MIN_CONFIDENCE:
        return f"the model is unsure ({probability:.0%}; MNIST digits with usual ink get at least {MIN_CONFIDENCE:.0%})"
    return None


#: The detector's eleventh output: "not a digit" (outputs 0-9 are the digits).
NOT_A_DIGIT = 10


class DigitDetector(nn.Module):
    """A small CNN (about 105,000 weights) that reads an input as one of the ten digits or as "not a digit", by the input alone.

    Trained on digits with their labels and on letters, symbols, shapes and scribbles as an eleventh class, it learns
    what each digit looks like, so a shape that is like no digit in particular scores low even where it is made of
    digit-like strokes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 3x3
        )  # fmt: skip
        self.head = nn.Linear(128 * 3 * 3, NOT_A_DIGIT + 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 1, 28, 28]`` in 0-1 (ink 1) to ``[N, 11]`` logits: the ten digits, then "not a digit"."""
        return self.head(self.features(images).flatten(1))


@lru_cache(maxsize=1)
def _detector() -> DigitDetector:
    model = DigitDetector()
    try:  # read without pickle; NaN or infinite weights are refused in one line naming the file
        model.load_state_dict(read_state_dict(DETECTOR_WEIGHTS))
    except RuntimeError as error:
        why = escape_text(str(error).splitlines()[0])
        raise CheckpointError(f"{display_name(DETECTOR_WEIGHTS)} does not fit the digit detector: {why}") from None
    return model.eval()


@torch.no_grad()
def digit_scores(digits: np.ndarray) -> np.ndarray:
    """How digit-like each input is by the shipped detector (below :data:`MIN_DIGIT_SCORE`: flagged).

    The score is the log-odds of "some digit" against "not a digit": ``logsumexp`` of the ten digit logits minus the
    eleventh.

    Args:
        digits: ``[N, 28, 28]`` uint8 0-255, light ink on black (preprocessed digits, or MNIST images).

    Returns:
        ``[N]`` float scores; higher is more digit-like.
    """
    images, model = torch.as_tensor(np.asarray(digits, dtype=np.float32)).reshape(-1, 1, 28, 28) / 255, _detector()
    logits = torch.cat([model(images[i : i + 1024]) for i in range(0, len(images), 1024)] or [torch.zeros(0, NOT_A_DIGIT + 1)])
    return (torch.logsumexp(logits[:, :NOT_A_DIGIT], dim=1) - logits[:, NOT_A_DIGIT]).numpy()
