"""Digit images prepared the way MNIST was made: grayscale, light ink on black, cropped, scaled to 20 px, centred in 28x28."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from mnist_cnn.digits.decode import load_image
from mnist_cnn.errors import ImageError
from mnist_cnn.mnist import IMAGE_SIZE

#: MNIST's digits fit a 20x20 box inside the 28x28 frame.
DIGIT_BOX = 20
#: Where MNIST's centres of mass sit, in pixel-index coordinates (measured: 13.99 rows, 14.01 columns).
CENTRE = 14.0
#: Ink must stand out from the background by this much (0-255) or the image counts as blank.
MIN_CONTRAST = 40.0
#: After contrast stretching (0-1): values up to this are paper texture and sensor noise, set to 0.
NOISE_FLOOR = 0.1
#: After removing the noise floor (0-1): pixels above this count as ink for the bounding box.
INK_THRESHOLD = 0.2
#: Ink whose bounding box is smaller than this (px, longer side) is a speck, not a digit.
MIN_INK_SIZE = 3
#: Images with both sides at least this long get isolated specks removed before the bounding box.
DESPECKLE_MIN_SIDE = 64


@dataclass
class PreprocessedImage:
    """Every step from an image to the model's 28x28 input, so a notebook can show them side by side.

    Attributes:
        grayscale: The image, ``[H, W]`` float 0-255 (transparency composited, not inverted).
        inverted: Whether the background was light (dark ink on paper) and the image was inverted.
        background: The background level of ``grayscale`` (median of the border pixels), 0-255.
        ink: ``[H, W]`` float 0-1, light ink on black, background and noise removed, contrast stretched.
        box: ``(top, left, bottom, right)`` of the ink in ``ink`` (bottom and right exclusive).
        cropped: ``ink`` cut to ``box``.
        resized: ``cropped`` scaled so its longer side is 20 px.
        digit: ``[28, 28]`` uint8 0-255, ``resized`` centred by its centre of mass: what MNIST would hold.
        source_size: ``(width, height)`` of the file (as its opener recorded it) or image; ``None`` for an array.
    """

    grayscale: np.ndarray
    inverted: bool
    background: float
    ink: np.ndarray
    box: tuple[int, int, int, int]
    cropped: np.ndarray
    resized: np.ndarray
    digit: np.ndarray
    source_size: tuple[int, int] | None = None


def _high_bit_depth_peak(values: np.ndarray) -> float:
    """The white level of an integer or float image: 1 for floats within 0-1, else the most its inferred bit depth holds."""
    top = float(values.max(initial=0))
    if values.dtype.kind == "f" and top <= 1.0:
        return 1.0
    return 255.0 if top <= 255 else float(2 ** min(32, int(np.ceil(np.log2(top + 1)))) - 1)


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Convert any Pillow image to ``[H, W]`` float32 luminance 0-255 (Pillow's ``convert("L")``), transparency composited.

    Transparent pixels get a background that keeps the ink visible: when most of the image is transparent (a
    drawing exported from an app) the visible pixels are the ink, so white behind dark ink and black behind light
    ink; when most is opaque (a photo with transparent corners) the paper's colour. ``I;16``, ``I`` and ``F``
    images are scaled from the range their bit depth holds (a 12-bit image in a 16-bit PNG from 0-4095, not 65535).
    """
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.clip(np.nan_to_num(np.asarray(image).astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0), 0, None)
        return np.clip(values * (255.0 / _high_bit_depth_peak(values)), 0, 255).astype(np.float32)
    if not ("A" in image.mode or "a" in image.mode or "transparency" in image.info):
        return np.asarray(image.convert("L"), dtype=np.float32)
    rgba = image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    gray = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.float32)
    if alpha.min() >= 1.0:
        return gray
    visible = alpha >= 0.5
    if visible.mean() < 0.5:
        fill = 255.0 if float((gray * alpha).sum() / max(alpha.sum(), 1e-6)) < 128 else 0.0
    else:
        fill = float(np.median(gray[visible]))
    return (gray * alpha + fill * (1.0 - alpha)).astype(np.float32)


def _place_by_centre_of_mass(resized: np.ndarray) -> np.ndarray:
    height, width = resized.shape
    total = float(resized.sum())
    centre_row = float((resized.sum(axis=1) * np.arange(height)).sum() / total)
    centre_col = float((resized.sum(axis=0) * np.arange(width)).sum() / total)
    # Shift by whole pixels like MNIST, but never so far that ink leaves the frame.
    top = int(np.clip(round(CENTRE - centre_row), 0, IMAGE_SIZE - height))
    left = int(np.clip(round(CENTRE - centre_col), 0, IMAGE_SIZE - width))
    frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    frame[top : top + height, left : left + width] = resized
    return frame


def _grayscale_of(image: str | os.PathLike[str] | Image.Image | np.ndarray) -> tuple[np.ndarray, tuple[int, int] | None]:
    """The input as ``[H, W]`` float32 0-255, and its size (``None`` for arrays)."""
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    source_size = None
    if isinstance(image, Image.Image):
        source_size, grayscale = image.info.get("source_size", image.size), to_grayscale(image)
    else:
        grayscale = np.asarray(image, dtype=np.float32)
        if grayscale.ndim != 2:
            raise ImageError(f"expected a 2-D grayscale array, got shape {grayscale.shape}")
    if grayscale.size == 0:
        raise ImageError("the image is empty (0 pixels)")
    return grayscale, source_size


def _light_ink(grayscale: np.ndarray) -> tuple[np.ndarray, float, bool]:
    """Light ink on black, 0-1, contrast stretched and the noise floor removed; the background level; inverted?"""
    # The background is the border: a band ~2% of the shorter side wide, so a few stray dark pixels do not decide it.
    band = max(1, min(grayscale.shape) // 50)
    border = (grayscale[:band], grayscale[-band:], grayscale[:, :band], grayscale[:, -band:])
    background = float(np.median(np.concatenate([part.ravel() for part in border])))
    inverted = background > 127.5
    ink = 255.0 - grayscale if inverted else grayscale.copy()
    level = 255.0 - background if inverted else background
    candidates = ink[ink > level + MIN_CONTRAST]
    if candidates.size == 0:
        raise ImageError(f"no digit found: nothing stands out from the {'light' if inverted else 'dark'} background (blank image?)")
    # The 90th percentile of the ink rather than the maximum, so one bright speck does not dim the digit.
    peak = float(np.percentile(candidates, 90))
    stretched = np.clip((ink - level) / (peak - level), 0.0, 1.0)
    return np.clip((stretched - NOISE_FLOOR) / (1.0 - NOISE_FLOOR), 0.0, 1.0).astype(np.float32), background, inverted


def _ink_box(ink: np.ndarray) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` of the ink, refusing a blank or a speck."""
    mask = ink > INK_THRESHOLD
    if min(mask.shape) >= DESPECKLE_MIN_SIDE:
        # A 3x3 median drops isolated specks (dust, JPEG noise) that would stretch the bounding box, while strokes
        # several pixels wide survive. Thin strokes that vanish keep the unfiltered mask.
        filtered = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MedianFilter(3))) > 0
        mask = filtered if filtered.any() else mask
    if not mask.any():
        raise ImageError("no digit found: the ink is too faint or too small")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
    if max(box[2] - box[0], box[3] - box[1]) < MIN_INK_SIZE:
        # Scaled up to 20 px, a dot or two would become a square blob the model would still "recognise".
        raise ImageError(f"no digit found: the only ink is a speck of {box[2] - box[0]}x{box[3] - box[1]} px")
    return box


def _scale_to_box(cropped: np.ndarray) -> np.ndarray:
    """``cropped`` scaled so its longer side is ``DIGIT_BOX`` px (Lanczos), float32 0-1."""
    height, width = cropped.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Lanczos overshoots a little around edges; clip back to the 0-1 range.
    resized = np.clip(np.asarray(Image.fromarray(cropped).resize(size, Image.Resampling.LANCZOS)), 0.0, 1.0)
    if resized.sum() <= 0:
        raise ImageError("no digit found: the ink vanished when scaled down")
    return resized.astype(np.float32)


def preprocess(image: str | os.PathLike[str] | Image.Image | np.ndarray) -> PreprocessedImage:
    """Turn a digit image of any size and polarity into an MNIST-style 28x28 digit: ``.digit``, with every step kept.

    Steps: grayscale; invert when the border (the background) is light; stretch the contrast so the background is 0 and
    the ink 1; crop to the ink; scale the longer side to 20 px (Lanczos); paste into 28x28, centre of mass at the centre.

    Args:
        image: A file path (opened by :func:`~mnist_cnn.digits.decode.load_image`), a Pillow image, or a ``[H, W]`` 0-255 array.

    Raises:
        ImageError: The file cannot be read, or no ink stands out from the background (a blank image).
    """
    grayscale, source_size = _grayscale_of(image)
    ink, background, inverted = _light_ink(grayscale)
    box = _ink_box(ink)
    cropped = ink[box[0] : box[2], box[1] : box[3]]
    resized = _scale_to_box(cropped)
    digit = np.round(_place_by_centre_of_mass(resized) * 255.0).astype(np.uint8)
    return PreprocessedImage(grayscale, inverted, background, ink, box, cropped, resized, digit, source_size)
