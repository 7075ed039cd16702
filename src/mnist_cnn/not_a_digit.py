"""The rule that decides whether a classified input is "not a digit?", from its ink and the model's confidence."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Names of :func:`ink_features`, in order.
INK_FEATURES = ("ink", "solid", "fill", "pieces", "width")


def ink_features(digit: np.ndarray) -> dict[str, float]:
    """Measures of the amount and shape of ink in a 28x28 digit, to tell digits from things that are not.

    Args:
        digit: ``[28, 28]`` uint8 0-255, light ink on black (:attr:`~mnist_cnn.preprocess.PreprocessedImage.digit`, or an MNIST image).

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
#: Top softmax probability below which an input is flagged whatever its ink. Chosen as the largest value at which
#: this rule (with ``FAR_RANGES``) flags at most 0.5 % of the first 5,000 MNIST test digits with the seed weights
#: (``benchmarks/not_a_digit.py``; the project's validation digits were in the seed's training data and would
#: overstate its confidence); it is judged on the other 5,000 and on rendered letters, symbols and shapes.
MIN_CONFIDENCE = 0.38
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


def not_a_digit_reason(features: dict[str, float], probability: float) -> str | None:
    """Why an input looks unlike any MNIST digit, or ``None`` when it looks like one.

    The rule, measured on MNIST (see :data:`FAR_RANGES` and :data:`MIN_CONFIDENCE`): the ink is outside what
    99.9 % of MNIST digits show, or the model's top probability is below what 99.5 % of MNIST test digits get.
    Letters and symbols the network reads confidently as a digit (an H as a 4 at 99 %) still pass: at a 0.5 % false
    alarm rate on digits no score of this network catches more than a few percent of them (the benchmark's result).

    Args:
        features: :func:`ink_features` of the 28x28 input.
        probability: The model's top softmax probability for it.

    Returns:
        A short reason such as ``"ink 20.0 px (MNIST digits: at least 24.8)"``, or ``None``.
    """
    far = _outside(features, FAR_RANGES)
    if far:
        return "; ".join(far)
    if probability < MIN_CONFIDENCE:
        return f"the model is unsure ({probability:.0%}; 99.5 % of MNIST digits get at least {MIN_CONFIDENCE:.0%})"
    return None
