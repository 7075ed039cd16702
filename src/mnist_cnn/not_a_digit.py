"""The rule that decides whether a classified input is "not a digit?", from its ink and the model's confidence."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Names of :func:`ink_features`, in order.
INK_FEATURES = ("ink", "solid", "fill", "grey", "pieces", "width")


def ink_features(digit: np.ndarray) -> dict[str, float]:
    """Measures of the amount and shape of ink in a 28x28 digit, to tell digits from things that are not.

    Args:
        digit: ``[28, 28]`` uint8 0-255, light ink on black (:attr:`PreprocessedImage.digit`, or an MNIST image).

    Returns:
        ``ink``: total ink in pixels (sum of values / 255); ``solid``: pixels at least half inked; ``fill``: ink /
        area of the bounding box of every non-zero pixel; ``grey``: share of the inked pixels (> 10 %) that are grey (10-90 %), high
        for noise and texture, which have no strokes; ``pieces``: connected groups of half-inked pixels
        (8-connected); ``width``: shorter side of that box, in pixels (1 for a one-pixel line).
    """
    values = np.asarray(digit, dtype=np.float32) / 255.0
    solid = values >= 0.5
    inked = values > 0.1
    _, pieces = ndimage.label(solid, structure=np.ones((3, 3), dtype=bool))
    ink = float(values.sum())
    height = width = 0
    if ink > 0:
        rows, cols = np.flatnonzero(values.any(axis=1)), np.flatnonzero(values.any(axis=0))
        height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
    grey = float((inked & (values < 0.9)).sum() / inked.sum()) if inked.any() else 0.0
    return {
        "ink": ink,
        "solid": float(solid.sum()),
        "fill": ink / max(height * width, 1),
        "grey": grey,
        "pieces": float(pieces),
        "width": float(min(height, width)),
    }


#: Ranges of :func:`ink_features` that hold 99.9 % of the 60,000 MNIST training digits after
#: preprocessing (their 0.05th and 99.95th percentiles, as ``benchmarks/not_a_digit.py`` measures them). Ink outside
#: one of them is flagged "not a digit?" whatever the model says. ``None``: that side is not checked here. ``grey`` is
#: checked only with low confidence (``NEAR_RANGES``): blur raises it legitimately (photos, small drawings scaled up).
#: ``width`` has no upper end (a preprocessed digit is 20 px on its longer side).
FAR_RANGES: dict[str, tuple[float | None, float | None]] = {
    "ink": (24.8, 235.9),
    "solid": (24.0, 234.0),
    "fill": (0.126, 0.823),
    "pieces": (1.0, 4.0),
    "width": (2.0, None),
}
#: The ranges that hold 99 % of them (0.5th and 99.5th percentiles): ink outside one of these is flagged only when
#: the model is also unsure (below ``LOW_CONFIDENCE``). ``grey`` has no lower end: a crisp drawing has no grey at all.
NEAR_RANGES: dict[str, tuple[float | None, float | None]] = {
    "ink": (33.1, 200.5),
    "solid": (33.0, 201.0),
    "fill": (0.156, 0.676),
    "grey": (None, 0.771),
    "pieces": (1.0, 3.0),
    "width": (4.0, None),
}
#: Top probability below which the model counts as unsure: the 5th percentile of the seed weights' top probability on
#: the first 5,000 MNIST test digits (``benchmarks/not_a_digit.py``; a model trained on the training digits would
#: overstate its confidence on them).
LOW_CONFIDENCE = 0.77
#: How each feature is written in a reason: a template and the number format.
_FEATURE_TEXT = {
    "ink": ("ink {} px", ".1f"),
    "solid": ("{} solid px", ".0f"),
    "fill": ("box {} filled", ".1%"),
    "grey": ("{} of the ink grey", ".1%"),
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

    The rule, measured on MNIST (see :data:`FAR_RANGES`, :data:`NEAR_RANGES`, :data:`LOW_CONFIDENCE`): the ink is
    outside what 99.9 % of MNIST digits show, or outside what 99 % show while the model's top probability is low.

    Args:
        features: :func:`ink_features` of the 28x28 input.
        probability: The model's top softmax probability for it.

    Returns:
        A short reason such as ``"ink 20.0 px (MNIST digits: at least 24.8)"``, or ``None``.
    """
    far = _outside(features, FAR_RANGES)
    if far:
        return "; ".join(far)
    near = _outside(features, NEAR_RANGES)
    if near and probability < LOW_CONFIDENCE:
        return "; ".join(near) + f", and the model is unsure ({probability:.0%})"
    return None
