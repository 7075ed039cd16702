"""What the drawing pad sends, checked: a sequence number and a PNG of bounded size, or one line saying why not."""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any

import numpy as np
from PIL import Image

from mnist_cnn.checks import OUT_OF_RANGE, NumberError, check_number, shown, whole_float_as_int
from mnist_cnn.digits.decode import decoding_errors
from mnist_cnn.digits.preprocess import to_grayscale
from mnist_cnn.errors import ImageError

#: Largest drawing accepted from the front end, in characters of its data URL (a 280x280 PNG is ~10 KB).
MAX_DATA_URL = 5_000_000
#: The pad sends its canvas at the canvas's own size, so a PNG more than this many times the pad's side (per side)
#: did not come from the pad; refused from its header, before a pixel is decoded (a 13000x13000 PNG compresses
#: under ``MAX_DATA_URL`` yet decodes to gigabytes).
MAX_SIDE_FACTOR = 4
PNG_PREFIX = "data:image/png;base64,"
#: The largest sequence number accepted: JavaScript counts exactly up to 2**53.
MAX_SEQ = 2**53


def decode_data_url(url: object, max_side: int) -> np.ndarray:
    """Decode the pad's ``data:image/png;base64,...`` URL into ``[H, W]`` float32 grayscale 0-255.

    Args:
        url: The data URL as received (anything: it is checked).
        max_side: The largest width or height accepted, in pixels; checked from the PNG header before decoding.

    Returns:
        The drawing's luminance, transparency composited (:func:`~mnist_cnn.digits.preprocess.to_grayscale`).

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
        # Image.open reads only the header: the size is known here, before any pixel is decoded.
        if max(image.size) > max_side:
            raise ImageError(f"the drawing is {image.width}x{image.height} pixels; the pad sends at most {max_side}x{max_side}")
        image.load()
        return to_grayscale(image)


def read_message(message: object) -> tuple[int, str]:
    """Check a ``drawing`` message from the front end: ``{"seq": n, "png": data URL or ""}``.

    Args:
        message: The trait's new value, whatever the front end (or a caller) put there.

    Returns:
        ``(seq, png)``: the sequence number (a whole number, 0 when absent) and the data URL (``""`` when cleared).

    Raises:
        ImageError: Not a dict, a sequence number that is not a whole number in range, or ``png`` not a string.
    """
    if message is None:
        return 0, ""
    if not isinstance(message, dict):
        raise ImageError(f"the pad sent {type(message).__name__}, not a drawing message")
    seq = _sequence_number(message.get("seq", 0))
    png = message.get("png")
    png = "" if png is None else png  # a missing drawing is a cleared pad; 0, False or [] are not drawings
    if not isinstance(png, str):
        raise ImageError(f"the pad sent a drawing that is not a data URL (got {type(png).__name__})")
    return seq, png


def _sequence_number(value: Any) -> int:
    # bool is an int in Python but never a sequence number; a float from JSON is accepted when it is whole.
    try:
        return check_number("seq", whole_float_as_int(value), whole=True, low=0, high=MAX_SEQ)
    except NumberError as error:
        that = "" if error.reason == OUT_OF_RANGE else "that is "
        raise ImageError(f"the pad sent a sequence number {that}{error.reason} ({shown(value)})") from None
