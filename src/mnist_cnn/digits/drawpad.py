"""A notebook drawing pad whose drawings the network classifies as they are drawn.

:class:`DrawingPad` is an `anywidget <https://anywidget.dev>`_ whose canvas (``drawpad.js``, mouse, pen or finger) sends
each drawing (checked by :func:`read_message`, :func:`decode_data_url`) and draws :func:`predict_drawing`'s answer.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anywidget
import numpy as np
import traitlets
from PIL import Image, ImageDraw
from torch import nn

from mnist_cnn.checks import OUT_OF_RANGE, NumberError, check_number, shown, whole_float_as_int
from mnist_cnn.digits.decode import decoding_errors
from mnist_cnn.digits.inference import Prediction, classify_results
from mnist_cnn.digits.preprocess import preprocess, to_grayscale
from mnist_cnn.errors import ImageError

#: Side of the drawing canvas in CSS pixels.
PAD_SIZE = 280
#: Ink width as a share of the canvas side: a digit across ~70% of the pad then has MNIST's stroke (2-3 px in 20 px).
STROKE_RATIO = 1 / 14
#: How often (ms) the pad sends the drawing while a stroke is still being drawn.
THROTTLE_MS = 300
#: Largest drawing accepted, in characters of its data URL (a 280x280 PNG is ~10 KB).
MAX_DATA_URL = 5_000_000
#: The pad sends its canvas at its own size: a PNG more than this many times the pad's side did not come from it, and
#: is refused from its header (a 13000x13000 PNG fits in ``MAX_DATA_URL`` yet decodes to gigabytes).
MAX_SIDE_FACTOR = 4
PNG_PREFIX = "data:image/png;base64,"
#: The largest sequence number accepted: JavaScript counts exactly up to 2**53.
MAX_SEQ = 2**53


def predict_drawing(pixels: np.ndarray | Image.Image, model: nn.Module, input_scaling: str, top_k: int = 3) -> Prediction:
    """Classify a drawing as ``predict`` does (MNIST-style preprocessing, the model, the "not a digit?" rule), without a browser.

    Args:
        pixels: ``[H, W]`` grayscale 0-255 (dark ink on light or light on dark), or a Pillow image.
        input_scaling: The scaling ``model`` was trained with (``LoadedCheckpoint.input_scaling``).
        top_k: How many of the most likely digits to list (1-10).

    Returns:
        The prediction, every step kept; a blank or nearly blank drawing gives ``error`` instead of raising.
    """
    try:
        steps = preprocess(pixels)
    except ImageError as error:
        return Prediction(error=str(error))
    result = Prediction(image=steps.digit, steps=steps)
    classify_results(model, input_scaling, [result], top_k)
    return result


def pad_message(result: Prediction, seq: int = 0) -> dict[str, Any]:
    """What the front end draws: ``seq``, ``digit``, ``top``, ``image`` (784 ints), ``error``, ``not_a_digit``."""
    top = [{"digit": d, "probability": p} for d, p in result.top_k]
    image = [] if result.image is None else result.image.ravel().tolist()
    return {"seq": int(seq), "digit": result.digit, "top": top, "image": image, "error": result.error, "not_a_digit": result.not_a_digit}


def draw_strokes(strokes: Sequence[Sequence[tuple[float, float]]], size: int = PAD_SIZE, width: float | None = None) -> np.ndarray:
    """Draw strokes as the pad does (black round-capped lines on white), for tests and examples: ``[size, size]`` uint8, 255 = paper.

    Args:
        strokes: Each stroke a sequence of ``(x, y)`` points in pixels of the ``size`` x ``size`` pad.
        width: Line width in pixels (default: ``size * STROKE_RATIO``, as in the widget).
    """
    radius = (size * STROKE_RATIO if width is None else width) / 2
    image = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        points = [(float(x), float(y)) for x, y in stroke]
        if len(points) > 1:
            draw.line(points, fill=0, width=max(1, round(2 * radius)))
        for x, y in points:  # round caps and joins, as the canvas draws them
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=0)
    return np.asarray(image)


def read_message(message: object) -> tuple[int, str]:
    """Check a front end's ``{"seq": n, "png": data URL or ""}`` into ``(seq, png)``: ``seq`` 0 when absent, ``png`` ``""`` when cleared.

    Raises:
        ImageError: Not a dict, a sequence number that is not a whole number in range, or ``png`` not a string.
    """
    if message is None:
        return 0, ""
    if not isinstance(message, dict):
        raise ImageError(f"the pad sent {type(message).__name__}, not a drawing message")
    seq = message.get("seq", 0)
    try:  # a float from JSON is accepted when it is whole; bool is never a sequence number
        seq = check_number("seq", whole_float_as_int(seq), whole=True, low=0, high=MAX_SEQ)
    except NumberError as error:
        that = "" if error.reason == OUT_OF_RANGE else "that is "
        raise ImageError(f"the pad sent a sequence number {that}{error.reason} ({shown(seq)})") from None
    png = message.get("png")
    png = "" if png is None else png  # a missing drawing is a cleared pad; 0, False or [] are not drawings
    if not isinstance(png, str):
        raise ImageError(f"the pad sent a drawing that is not a data URL (got {type(png).__name__})")
    return seq, png


def decode_data_url(url: object, max_side: int) -> np.ndarray:
    """Decode the pad's ``data:image/png;base64,...`` URL into ``[H, W]`` float32 grayscale 0-255 (:func:`to_grayscale`).

    Args:
        max_side: The largest width or height accepted, in pixels; checked from the PNG header before decoding.

    Raises:
        ImageError: Not a string, not a PNG data URL, too many characters, too many pixels, or not a readable PNG.
    """
    if not isinstance(url, str):
        raise ImageError(f"the drawing is not a data URL (got {type(url).__name__})")
    if not url.startswith(PNG_PREFIX):
        raise ImageError("the drawing is not a PNG data URL")
    if len(url) > MAX_DATA_URL:
        raise ImageError(f"the drawing is too large ({len(url):,} characters, at most {MAX_DATA_URL:,})")
    try:
        raw = base64.b64decode(url[len(PNG_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("the drawing could not be decoded (not valid base64)") from None
    with decoding_errors("the drawing could not be decoded"), Image.open(io.BytesIO(raw), formats=["PNG"]) as image:
        if max(image.size) > max_side:  # known from the header, before any pixel is decoded
            raise ImageError(f"the drawing is {image.width}x{image.height} pixels; the pad sends at most {max_side}x{max_side}")
        return to_grayscale(image)


class DrawingPad(anywidget.AnyWidget):
    """A canvas to draw a digit on; the widget shows what the network sees and its top digits as you draw.

    Example (in a notebook): ``DrawingPad(checkpoint.model, checkpoint.input_scaling)``; :attr:`last` holds the
    :class:`~mnist_cnn.digits.inference.Prediction` of the latest drawing (``None`` before one or after Clear).
    """

    _esm = Path(__file__).with_name("drawpad.js")

    size = traitlets.Int(PAD_SIZE).tag(sync=True)
    stroke_width = traitlets.Float(PAD_SIZE * STROKE_RATIO).tag(sync=True)
    throttle_ms = traitlets.Int(THROTTLE_MS).tag(sync=True)
    #: From the front end: ``{"seq": n, "png": data URL}`` (``""``: cleared). Any value reaches the observer, so a
    #: malformed message is answered in the pad rather than by a traitlets error in the notebook's log.
    drawing = traitlets.Any(None).tag(sync=True)
    #: To the front end: :func:`pad_message` of the latest drawing.
    result = traitlets.Dict().tag(sync=True)
    #: To the front end: why the latest message could not be read at all (no usable sequence number), else ``""``.
    error = traitlets.Unicode("").tag(sync=True)

    def __init__(self, model: nn.Module, input_scaling: str, top_k: int = 3, size: int = PAD_SIZE, **kwargs: Any) -> None:
        """A pad classifying with ``model`` (trained with ``input_scaling``); ``size``: canvas side in CSS px; ``kwargs``: AnyWidget's."""
        super().__init__(size=size, stroke_width=size * STROKE_RATIO, **kwargs)
        self.model, self.input_scaling, self.top_k = model, input_scaling, top_k
        self.last: Prediction | None = None

    def classify(self, pixels: np.ndarray | Image.Image, seq: int = 0) -> Prediction:
        """Classify ``pixels`` (as :func:`predict_drawing` takes them) and show the answer as if drawn; kept in :attr:`last`."""
        self.last = predict_drawing(pixels, self.model, self.input_scaling, self.top_k)
        self.result = pad_message(self.last, seq)
        return self.last

    @traitlets.observe("drawing")
    def _on_drawing(self, change: dict[str, Any]) -> None:
        # Runs inside the comm handler, where an exception would only reach the notebook's log: show it in the pad.
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
            self.last, self.result = None, pad_message(Prediction(error="draw a digit"), seq)
            return
        try:
            self.classify(decode_data_url(png, max_side=MAX_SIDE_FACTOR * self.size), seq)
        except ImageError as error:  # from decoding: classify answers every drawing it gets
            self.last = Prediction(error=str(error))
            self.result = pad_message(self.last, seq)
