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
#: Ranges of :func:`ink_features` that hold 99.9 % of the 60,000 MNIST training digits after preprocessing (their
#: 0.05th and 99.95th percentiles). Ink outside one is flagged whatever the model says: noise, one-pixel lines and
#: filled blocks, which the network often calls a digit with confidence. ``None``: that side is not checked.
FAR_RANGES: dict[str, tuple[float | None, float | None]] = {
    "ink": (24.8, 235.9),
    "solid": (24.0, 234.0),
    "fill": (0.126, 0.823),
    "pieces": (1.0, 4.0),
    "width": (2.0, None),
}
#: Top softmax probability below which an input is flagged whatever its ink: with the seed weights, that of the least
#: confident of the first 5,000 MNIST test digits ``FAR_RANGES`` pass (0.309, rounded down), so it spends none of the
#: 0.5 % false-alarm budget (the validation digits were in the seed's training data and would overstate it).
MIN_CONFIDENCE = 0.30
#: The detector's shipped weights (a safetensors ``state_dict``), written by ``benchmarks/train_not_a_digit.py``.
DETECTOR_WEIGHTS = Path(__file__).with_name("digit_detector.safetensors")
#: Detector score (a logit; higher is more digit-like) below which an input is flagged: the largest (rounded down) at
#: which the whole rule flags at most 0.5 % of the first 5,000 MNIST test digits, none of which it was trained on.
MIN_DIGIT_SCORE = -3.46
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
    """Why an input looks unlike any MNIST digit (``"ink 20.0 px (MNIST digits: at least 24.8)"``), or ``None``.

    Flagged when the ink is outside :data:`FAR_RANGES`, or the detector's score is below :data:`MIN_DIGIT_SCORE`, or
    the model's top probability is below :data:`MIN_CONFIDENCE`: together at most 0.5 % of MNIST test digits. The
    detector catches about a third of the letters, symbols and shapes the network reads confidently as a digit.

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


class DigitDetector(nn.Module):
    """A tiny CNN (about 6,000 weights) that tells MNIST-style digits from letters, symbols, shapes and scribbles by the input alone."""

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
    try:  # read without pickle; NaN or infinite weights are refused in one line naming the file
        model.load_state_dict(read_state_dict(DETECTOR_WEIGHTS))
    except RuntimeError as error:
        why = escape_text(str(error).splitlines()[0])
        raise CheckpointError(f"{display_name(DETECTOR_WEIGHTS)} does not fit the digit detector: {why}") from None
    return model.eval()


@torch.no_grad()
def digit_scores(digits: np.ndarray) -> np.ndarray:
    """How digit-like each input is by the shipped detector: ``[N]`` logits (below :data:`MIN_DIGIT_SCORE`: flagged).

    Args:
        digits: ``[N, 28, 28]`` uint8 0-255, light ink on black (preprocessed digits, or MNIST images).
    """
    images, model = torch.as_tensor(np.asarray(digits, dtype=np.float32)).reshape(-1, 1, 28, 28) / 255, _detector()
    return torch.cat([model(images[i : i + 1024]) for i in range(0, len(images), 1024)]).reshape(-1).numpy()
