"""A notebook drawing pad whose drawings the network classifies as they are drawn.

:func:`predict_drawing` turns the pixels of a drawing into a prediction with the same MNIST-style
preprocessing ``python -m mnist_cnn.predict`` uses (:func:`mnist_cnn.digits.preprocess.preprocess`), so it can be
tested without a browser. :class:`DrawingPad` is an `anywidget <https://anywidget.dev>`_ whose front end
(``drawpad.js``) is a canvas for mouse, pen or finger; at the end of every stroke (and every
``throttle_ms`` while drawing) it sends the drawing to Python, which answers with the 28x28 image the
network saw and its top digits, drawn by the widget itself: no other cell has to run. What the pad sends is
checked by :mod:`mnist_cnn.digits.padinput`; a message that cannot be read is shown in the pad (the ``error`` trait).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets
from PIL import Image, ImageDraw
from torch import nn

from mnist_cnn.digits.inference import classify_digits
from mnist_cnn.digits.not_a_digit import digit_scores, ink_features, not_a_digit_reason
from mnist_cnn.digits.padinput import MAX_SIDE_FACTOR, decode_data_url, read_message
from mnist_cnn.digits.preprocess import PreprocessedImage, preprocess
from mnist_cnn.errors import ImageError
from mnist_cnn.mnist import NUM_CLASSES

#: Side of the drawing canvas in CSS pixels.
PAD_SIZE = 280
#: Ink width as a share of the canvas side: a digit drawn across ~70% of the pad then has strokes about as
#: thick, relative to its height, as MNIST's (2-3 px on a 20 px digit).
STROKE_RATIO = 1 / 14
#: How often (ms) the pad sends the drawing while a stroke is still being drawn.
THROTTLE_MS = 300


@dataclass
class DrawingResult:
    """What the network made of a drawing, or why it could not say.

    Attributes:
        digit: The most likely digit, ``None`` when the drawing holds no digit.
        probabilities: ``[10]`` softmax probabilities (``None`` without a digit).
        top_k: ``(digit, probability)`` pairs, most likely first.
        steps: Every preprocessing step; ``steps.digit`` is the 28x28 uint8 image the network saw.
        error: Why there is no prediction (e.g. a blank pad), else ``None``.
        not_a_digit: Why the drawing looks unlike any MNIST digit (the rule ``predict`` applies,
            :func:`mnist_cnn.digits.not_a_digit.not_a_digit_reason`), else ``None``.
    """

    digit: int | None = None
    probabilities: np.ndarray | None = field(default=None, repr=False)
    top_k: list[tuple[int, float]] = field(default_factory=list)
    steps: PreprocessedImage | None = field(default=None, repr=False)
    error: str | None = None
    not_a_digit: str | None = None

    @property
    def ok(self) -> bool:
        """True when the drawing was classified."""
        return self.error is None and self.digit is not None

    @property
    def image(self) -> np.ndarray | None:
        """The ``[28, 28]`` uint8 image the network saw, or ``None``."""
        return None if self.steps is None else self.steps.digit

    def to_message(self, seq: int = 0) -> dict[str, Any]:
        """The JSON form the widget's front end draws: ``seq``, ``digit``, ``top``, ``image`` (784 ints), ``error``, ``not_a_digit``."""
        return {
            "seq": int(seq),
            "digit": self.digit,
            "top": [{"digit": d, "probability": p} for d, p in self.top_k],
            "image": [] if self.image is None else self.image.ravel().tolist(),
            "error": self.error,
            "not_a_digit": self.not_a_digit,
        }


def predict_drawing(pixels: np.ndarray | Image.Image, model: nn.Module, input_scaling: str, top_k: int = 3) -> DrawingResult:
    """Classify a drawing: MNIST-style preprocessing (as ``predict`` does), then the model.

    Args:
        pixels: ``[H, W]`` grayscale 0-255 (dark ink on light or light on dark), or a Pillow image.
        model: A trained network (e.g. ``load_checkpoint(...).model``).
        input_scaling: The scaling it was trained with (``LoadedCheckpoint.input_scaling``).
        top_k: How many of the most likely digits to list (1-10).

    Returns:
        The prediction, with the "not a digit?" rule's reason when it fires; a blank or nearly blank drawing gives
        ``error`` instead of raising.
    """
    try:
        steps = preprocess(pixels)
    except ImageError as error:
        return DrawingResult(error=str(error))
    probabilities = classify_digits(model, input_scaling, steps.digit[None])[0].numpy()
    order = np.argsort(-probabilities, kind="stable")[: max(1, min(int(top_k), NUM_CLASSES))]
    ranked = [(int(d), float(probabilities[d])) for d in order]
    reason = not_a_digit_reason(ink_features(steps.digit), ranked[0][1], float(digit_scores(steps.digit[None])[0]))
    return DrawingResult(digit=ranked[0][0], probabilities=probabilities, top_k=ranked, steps=steps, not_a_digit=reason)


def draw_strokes(strokes: Sequence[Sequence[tuple[float, float]]], size: int = PAD_SIZE, width: float | None = None) -> np.ndarray:
    """Draw strokes as the pad does (black round-capped lines on white), for tests and examples.

    Args:
        strokes: Each stroke a sequence of ``(x, y)`` points in pixels of a ``size`` x ``size`` pad.
        size: Side of the pad.
        width: Line width in pixels (default: ``size * STROKE_RATIO``, as in the widget).

    Returns:
        ``[size, size]`` uint8 grayscale, 255 = paper.
    """
    width = size * STROKE_RATIO if width is None else width
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    radius = width / 2
    for stroke in strokes:
        points = [(float(x), float(y)) for x, y in stroke]
        if len(points) > 1:
            draw.line(points, fill=0, width=max(1, round(width)))
        for x, y in points:  # round caps and joins, as the canvas draws them
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=0)
    return np.asarray(image)


class DrawingPad(anywidget.AnyWidget):
    """A canvas to draw a digit on; the widget shows what the network sees and its top digits as you draw.

    Example (in a notebook)::

        checkpoint = load_or_train("default")
        DrawingPad(checkpoint.model, checkpoint.input_scaling)

    Attributes:
        last: The :class:`DrawingResult` of the latest drawing (``None`` before the first or after Clear).
    """

    _esm = Path(__file__).with_name("drawpad.js")

    size = traitlets.Int(PAD_SIZE).tag(sync=True)
    stroke_width = traitlets.Float(PAD_SIZE * STROKE_RATIO).tag(sync=True)
    throttle_ms = traitlets.Int(THROTTLE_MS).tag(sync=True)
    #: From the front end: ``{"seq": n, "png": data URL}``; an empty ``png`` means the pad was cleared. Any value is
    #: let through to the observer (not only dicts), so a malformed message is answered in the pad, not by a traitlets
    #: error in the notebook's log.
    drawing = traitlets.Any(None).tag(sync=True)
    #: To the front end: :meth:`DrawingResult.to_message` of the latest drawing.
    result = traitlets.Dict().tag(sync=True)
    #: To the front end: why the latest message could not be read at all (no usable sequence number), else ``""``.
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, model: nn.Module, input_scaling: str, top_k: int = 3, size: int = PAD_SIZE, **kwargs: Any) -> None:
        """Create a pad that classifies with ``model``.

        Args:
            model: A trained network.
            input_scaling: The scaling it was trained with.
            top_k: How many digits to show with bars.
            size: Side of the canvas in CSS pixels (the stroke width scales with it).
            **kwargs: Passed to :class:`anywidget.AnyWidget`.
        """
        super().__init__(size=size, stroke_width=size * STROKE_RATIO, **kwargs)
        self.model, self.input_scaling, self.top_k = model, input_scaling, top_k
        self.last: DrawingResult | None = None

    def classify(self, pixels: np.ndarray | Image.Image, seq: int = 0) -> DrawingResult:
        """Classify ``pixels`` and show the answer in the widget, as if they had been drawn on it.

        Args:
            pixels: As for :func:`predict_drawing`.
            seq: Sequence number of the drawing (the front end's counter).

        Returns:
            The result, also kept in :attr:`last`.
        """
        self.last = predict_drawing(pixels, self.model, self.input_scaling, self.top_k)
        self.result = self.last.to_message(seq)
        return self.last

    @traitlets.observe("drawing")
    def _on_drawing(self, change: dict[str, Any]) -> None:
        # Runs inside the comm handler: an exception here would only reach the notebook's log and leave the pad
        # silent, so every failure is shown in the pad instead.
        try:
            self._answer(change["new"])
        except Exception as error:  # noqa: BLE001 - a bug must still be reported in the pad, not lost
            self.error = f"the drawing could not be classified ({type(error).__name__}: {error})"

    def _answer(self, message: object) -> None:
        try:
            seq, png = read_message(message)
        except ImageError as error:
            self.error = str(error)  # no trustworthy seq to answer with: the pad shows this trait instead
            return
        self.error = ""
        if not png:  # cleared
            self.last = None
            self.result = DrawingResult(error="draw a digit").to_message(seq)
            return
        try:
            pixels = decode_data_url(png, max_side=MAX_SIDE_FACTOR * self.size)
        except ImageError as error:
            self.last = DrawingResult(error=str(error))
            self.result = self.last.to_message(seq)
            return
        self.classify(pixels, seq)
