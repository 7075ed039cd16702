"""Digit images prepared the way MNIST was made: grayscale, inverted to light-on-dark, cropped, scaled, centred.

MNIST digits are light ink on a black background, cropped to the ink, scaled so the longer side is
20 px (anti-aliased), and placed in a 28x28 frame with the centre of mass in the middle. A photo of a
digit written on paper is none of that, so :func:`preprocess` repeats those steps on any image.
"""

from __future__ import annotations

import os
import stat
import struct
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFilter, UnidentifiedImageError
from scipy import ndimage

from mnist_cnn.errors import ImageError
from mnist_cnn.mnist import IMAGE_SIZE

#: Suffixes a directory argument expands to (files named explicitly are tried whatever their suffix).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

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
#: The most pixels ``predict`` decodes from one file (64 megapixels, e.g. 8000x8000). Larger images are refused with
#: one line before decoding. JPEGs count after Pillow's ``draft`` (decoding at 1/2, 1/4 or 1/8 scale), so phone
#: photos of any size pass; Pillow's own decompression-bomb limit (about 179 megapixels) still applies first.
MAX_PIXELS = 64_000_000
#: Images are reduced (JPEG while decoding, others right after) until the longer side is under twice this, before
#: any float array is made: a digit fills at most 20x20 pixels of the result, so more detail is never used.
WORK_SIDE = 1024
#: The EXIF tag holding the camera's orientation.
ORIENTATION_TAG = 0x0112


@dataclass
class PreprocessedImage:
    """Every step from an image file to the model's 28x28 input, so a notebook can show them side by side.

    Attributes:
        grayscale: The image as loaded, ``[H, W]`` float 0-255 (transparency composited, not inverted).
        inverted: Whether the background was light (dark ink on paper) and the image was inverted.
        background: The background level of ``grayscale`` (median of the border pixels), 0-255.
        ink: ``[H, W]`` float 0-1, light ink on black, background and noise removed, contrast stretched.
        box: ``(top, left, bottom, right)`` of the ink in ``ink`` (bottom and right exclusive).
        cropped: ``ink`` cut to ``box``.
        resized: ``cropped`` scaled so its longer side is 20 px.
        digit: ``[28, 28]`` uint8 0-255, ``resized`` centred by its centre of mass: what MNIST would hold.
        source_size: ``(width, height)`` of the file before it was reduced for the work (``grayscale`` is the
            reduced image), or ``None`` when the input was an array.
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


def _refuse_unless_regular(source: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise ImageError(f"{source}: a directory with no image files ({', '.join(IMAGE_SUFFIXES)})")
    if not stat.S_ISREG(mode):
        # Reading a FIFO or a terminal would wait forever for data; a device could be endless.
        raise ImageError(f"{source}: not a regular file (a pipe, socket or device), refused")


def _open_file(source: Path) -> BinaryIO:
    """Open ``source`` for reading without ever blocking: a FIFO is refused, not waited on."""
    try:
        # O_NONBLOCK makes opening a FIFO return at once (plain files ignore it); fstat then checks what was opened,
        # so a file swapped for a FIFO between a stat and the open cannot hang us either.
        descriptor = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageError(f"{source}: file not found") from None
    except PermissionError:
        raise ImageError(f"{source}: permission denied") from None
    except IsADirectoryError:  # Windows cannot open directories
        raise ImageError(f"{source}: a directory with no image files ({', '.join(IMAGE_SUFFIXES)})") from None
    except OSError as error:
        raise ImageError(f"{source}: cannot open ({error.strerror or error})") from None
    try:
        _refuse_unless_regular(source, os.fstat(descriptor).st_mode)
        if hasattr(os, "set_blocking"):
            os.set_blocking(descriptor, True)
    except BaseException:
        os.close(descriptor)
        raise
    return os.fdopen(descriptor, "rb")


def _reduction(size: tuple[int, int]) -> int:
    """The integer factor that brings the longer side into ``[WORK_SIDE, 2 * WORK_SIDE)`` (1 when already smaller)."""
    return max(1, max(size) // WORK_SIDE)


def reduce_for_work(image: Image.Image) -> Image.Image:
    """Shrink a large image by an integer factor (box averaging) so the longer side is under ``2 * WORK_SIDE``.

    Done in the image's own mode, before any float array exists: an 8000x6000 RGB scan becomes 1143x857
    (3 MB) instead of 48 million float pixels (192 MB per working array).

    Args:
        image: A decoded Pillow image of any mode.

    Returns:
        ``image`` itself when it is small enough, else a reduced copy (transparency kept).
    """
    factor = _reduction(image.size)
    if factor == 1:
        return image
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode.startswith("I;16"):
        image = image.convert("I")
    if image.mode in ("RGBA", "LA"):
        # Average premultiplied colours, so fully transparent pixels do not tint the ink's edges.
        premultiplied = {"RGBA": "RGBa", "LA": "La"}[image.mode]
        return image.convert(premultiplied).reduce(factor).convert(image.mode)
    try:
        return image.reduce(factor)
    except ValueError:  # a mode reduce() does not handle: go through RGB
        return image.convert("RGB").reduce(factor)


#: EXIF orientation -> the transpose that makes the picture upright (as ``ImageOps.exif_transpose``).
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file and decode it, at most ``MAX_PIXELS`` pixels and already reduced for the work ahead.

    JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still leaves the longer side at least ``WORK_SIDE``
    (Pillow's ``draft``), so a 12-megapixel photo never exists at full size in memory; other formats are decoded
    whole and at once reduced by an integer factor (:func:`reduce_for_work`). An image that would decode to
    more than ``MAX_PIXELS`` pixels is refused before decoding. A corrupt file fails here and not later.

    Args:
        path: Any format Pillow reads (PNG, JPEG, BMP, GIF, TIFF, WebP, ...); a regular file.

    Returns:
        The decoded image, upright (a phone photo's EXIF rotation applied), its longer side under
        ``2 * WORK_SIDE``; ``info["source_size"]`` holds the file's own ``(width, height)``.

    Raises:
        ImageError: Missing, a directory, not a regular file (FIFO, device), unreadable, not an image,
            truncated, or above the pixel limit.
    """
    source = Path(path)
    try:
        with _open_file(source) as handle, warnings.catch_warnings():
            # Between Pillow's limit and twice it Pillow only warns; MAX_PIXELS below decides instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(handle)
            source_size = image.size
            try:
                orientation = image.getexif().get(ORIENTATION_TAG, 1)
            except Exception:  # a damaged EXIF block only loses the rotation, never the image
                orientation = 1
            if image.format == "JPEG" and _reduction(image.size) > 1:
                # Decode the luminance only, at the smallest 1/2^k scale that keeps the longer side >= WORK_SIDE.
                scale = max(image.size) / WORK_SIDE
                image.draft("L" if image.mode in ("RGB", "L") else image.mode, (int(image.width / scale), int(image.height / scale)))
            if image.width * image.height > MAX_PIXELS:
                raise ImageError(
                    f"{source}: {source_size[0]}x{source_size[1]} pixels is above predict's limit of "
                    f"{MAX_PIXELS // 1_000_000} megapixels (MAX_PIXELS); scale it down first"
                )
            image.load()
        image = reduce_for_work(image)
    except UnidentifiedImageError:
        raise ImageError(f"{source}: not an image file Pillow can read") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{source}: the image is too large to open safely (above Pillow's decompression-bomb limit)") from None
    except MemoryError:
        raise ImageError(f"{source}: not enough memory to decode this image") from None
    except PermissionError:
        raise ImageError(f"{source}: permission denied") from None
    # Pillow reports truncated or corrupt data as OSError, ValueError or (for some formats) SyntaxError.
    except (OSError, ValueError, SyntaxError, TypeError, struct.error) as error:
        raise ImageError(f"{source}: unreadable image ({error})") from None
    # Phones store the camera's rotation in EXIF instead of rotating the pixels; applied after the reduction,
    # where it costs little.
    transpose = _EXIF_TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    if transpose is not None:
        image = image.transpose(transpose)
    image.info["source_size"] = source_size
    return image


def _high_bit_depth_peak(values: np.ndarray) -> float:
    """The white level of an integer or float image: the largest value its inferred bit depth can hold.

    A 16-bit PNG from a 12-bit sensor holds 0-4095; dividing by 65535 would make it look nearly black (blank).
    The bit depth is inferred from the largest value actually used (8 bits at least); float images whose values
    stay within 0-1 are on a unit scale.
    """
    top = float(values.max(initial=0))
    if values.dtype.kind == "f" and top <= 1.0:
        return 1.0
    if top <= 255:
        return 255.0
    bits = min(32, int(np.ceil(np.log2(top + 1))))
    return float(2**bits - 1)


def to_grayscale(image: Image.Image) -> np.ndarray:
    """Convert any Pillow image to ``[H, W]`` float32 luminance 0-255, compositing away transparency.

    Transparent pixels get a background chosen so the ink stays visible: when most of the image is
    transparent (a drawing exported from an app), the visible pixels are the ink, so the background is
    white for dark ink and black for light ink; when most of it is opaque (a photo with transparent
    corners), the visible pixels are mostly paper, so the background takes the paper's colour.
    High-bit-depth images (``I;16``, ``I``, ``F``) are scaled from the range their bit depth holds,
    inferred from the largest value used (a 12-bit image in a 16-bit PNG is scaled from 0-4095).

    Args:
        image: Any mode: 1, L, P, RGB, RGBA, LA, CMYK, I;16, I, F, ...

    Returns:
        Luminance (ITU-R 601-2, Pillow's ``convert("L")``).
    """
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        values = np.asarray(image).astype(np.float32)
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        np.clip(values, 0, None, out=values)
        return np.clip(values * (255.0 / _high_bit_depth_peak(values)), 0, 255).astype(np.float32)
    has_alpha = "A" in image.mode or "a" in image.mode or "transparency" in image.info
    if not has_alpha:
        return np.asarray(image.convert("L"), dtype=np.float32)
    rgba = image.convert("RGBA")
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255.0
    gray = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.float32)
    if alpha.min() >= 1.0:
        return gray
    visible = alpha >= 0.5
    if visible.mean() < 0.5:
        ink_level = float((gray * alpha).sum() / max(alpha.sum(), 1e-6))
        fill = 255.0 if ink_level < 128 else 0.0
    else:
        fill = float(np.median(gray[visible]))
    return (gray * alpha + fill * (1.0 - alpha)).astype(np.float32)


def _border(values: np.ndarray) -> np.ndarray:
    # A band ~2% of the shorter side wide: wide enough that a few stray dark pixels do not decide it.
    band = max(1, min(values.shape) // 50)
    return np.concatenate([values[:band].ravel(), values[-band:].ravel(), values[:, :band].ravel(), values[:, -band:].ravel()])


def _ink_mask(ink: np.ndarray) -> np.ndarray:
    mask = ink > INK_THRESHOLD
    if min(mask.shape) >= DESPECKLE_MIN_SIDE:
        # A 3x3 median drops isolated specks (dust, JPEG noise) that would stretch the bounding box,
        # while strokes several pixels wide survive. Thin strokes that vanish keep the unfiltered mask.
        filtered = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).filter(ImageFilter.MedianFilter(3))) > 0
        if filtered.any():
            mask = filtered
    return mask


def _place_by_centre_of_mass(resized: np.ndarray) -> np.ndarray:
    height, width = resized.shape
    total = float(resized.sum())
    rows, cols = np.arange(height), np.arange(width)
    centre_row = float((resized.sum(axis=1) * rows).sum() / total)
    centre_col = float((resized.sum(axis=0) * cols).sum() / total)
    # Shift by whole pixels like MNIST, but never so far that ink leaves the frame.
    top = int(np.clip(round(CENTRE - centre_row), 0, IMAGE_SIZE - height))
    left = int(np.clip(round(CENTRE - centre_col), 0, IMAGE_SIZE - width))
    frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    frame[top : top + height, left : left + width] = resized
    return frame


def preprocess(image: str | os.PathLike[str] | Image.Image | np.ndarray) -> PreprocessedImage:
    """Turn a digit image of any size and polarity into an MNIST-style 28x28 digit.

    Steps: grayscale; invert when the border (the background) is light; stretch the contrast so the
    background is 0 and the ink 1; crop to the ink's bounding box; scale the longer side to 20 px
    (Lanczos, anti-aliased); paste into 28x28 with the centre of mass at the centre.

    Args:
        image: A file path, a Pillow image, or a ``[H, W]`` array of 0-255 values. Files and Pillow images are
            first reduced so their longer side is under ``2 * WORK_SIDE`` (:func:`load_image`, :func:`reduce_for_work`).

    Returns:
        Every intermediate step; ``.digit`` is the result.

    Raises:
        ImageError: The file cannot be read, or no ink stands out from the background (a blank image).
    """
    source_size = None
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        source_size = image.info.get("source_size", image.size)
        if max(image.size) >= 2 * WORK_SIDE:
            image = reduce_for_work(image)
        grayscale = to_grayscale(image)
    else:
        grayscale = np.asarray(image, dtype=np.float32)
        if grayscale.ndim != 2:
            raise ImageError(f"expected a 2-D grayscale array, got shape {grayscale.shape}")
    if grayscale.size == 0:
        raise ImageError("the image is empty (0 pixels)")

    background = float(np.median(_border(grayscale)))
    inverted = background > 127.5
    ink = 255.0 - grayscale if inverted else grayscale.copy()
    level = 255.0 - background if inverted else background
    candidates = ink[ink > level + MIN_CONTRAST]
    if candidates.size == 0:
        raise ImageError(f"no digit found: nothing stands out from the {'light' if inverted else 'dark'} background (blank image?)")
    # The 90th percentile of the ink rather than the maximum, so one bright speck does not dim the digit.
    peak = float(np.percentile(candidates, 90))
    stretched = np.clip((ink - level) / (peak - level), 0.0, 1.0)
    ink = np.clip((stretched - NOISE_FLOOR) / (1.0 - NOISE_FLOOR), 0.0, 1.0).astype(np.float32)

    mask = _ink_mask(ink)
    if not mask.any():
        raise ImageError("no digit found: the ink is too faint or too small")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)
    if max(box[2] - box[0], box[3] - box[1]) < MIN_INK_SIZE:
        # Scaled up to 20 px, a dot or two would become a square blob the model would still "recognise".
        raise ImageError(f"no digit found: the only ink is a speck of {box[2] - box[0]}x{box[3] - box[1]} px")
    cropped = ink[box[0] : box[2], box[1] : box[3]]

    height, width = cropped.shape
    scale = DIGIT_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Lanczos overshoots a little around edges; clip back to the 0-1 range.
    resized = np.clip(np.asarray(Image.fromarray(cropped).resize(size, Image.Resampling.LANCZOS)), 0.0, 1.0)
    if resized.sum() <= 0:
        raise ImageError("no digit found: the ink vanished when scaled down")
    frame = _place_by_centre_of_mass(resized.astype(np.float32))
    digit = np.round(frame * 255.0).astype(np.uint8)
    return PreprocessedImage(grayscale, inverted, background, ink, box, cropped, resized.astype(np.float32), digit, source_size)


def _listed_image_file(path: Path) -> bool:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    try:
        return path.is_file()
    except OSError:
        return True  # cannot even stat it: keep it, so opening it reports why in one line


def iter_sources(paths: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[Path, str | None]]:
    """Each path given, with directories replaced by their image files (sorted by name, not recursive), lazily.

    Args:
        paths: Files and directories, in the order given.

    Yields:
        ``(path, error)``: ``error`` is ``None``, or why a directory could not be listed (e.g. permission denied),
        in which case ``path`` is that directory. A directory without image files is yielded itself (``error``
        ``None``), so it is reported as a failure rather than vanishing. Entries of a directory that are not
        regular files (subdirectories, FIFOs, sockets) are skipped.
    """
    for raw in paths:
        path = Path(raw)
        try:
            is_dir = path.is_dir()
        except OSError:
            is_dir = False  # cannot stat it: opening it will say why
        if not is_dir:
            yield path, None
            continue
        try:
            found = sorted(entry for entry in path.iterdir() if _listed_image_file(entry))
        except OSError as error:
            reason = "permission denied" if isinstance(error, PermissionError) else (error.strerror or str(error))
            yield path, f"cannot list this folder ({reason})"
            continue
        if not found:
            yield path, None
        for entry in found:
            yield entry, None


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Replace each directory by its image files (sorted by name, not recursive), keeping the order given.

    A directory without image files, or one that cannot be listed, stays in the list, so it is reported as a
    failure rather than vanishing (see :func:`iter_sources`, which also says why).
    """
    return [path for path, _ in iter_sources(paths)]


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
