"""Opening an image file a user names without risk: a regular file, opened without blocking, its pixels bounded before decoding.

:func:`read_image_file` is the ``opener`` the predict command hands the study's classifier
(:func:`mnist_cnn.digits.inference.read_digit`, through :mod:`mnist_cnn.tooling.cli.stream`): a FIFO, socket or device
is refused instead of waited on or read forever, an image above :data:`MAX_PIXELS` is refused from its header, a large
image is decoded already reduced, and every failure is one line naming the file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from PIL import Image, JpegImagePlugin

from mnist_cnn.digits.decode import decoding_errors
from mnist_cnn.errors import ImageError

#: The most pixels ``predict`` decodes from one file (64 megapixels, e.g. 8000x8000). Larger images are refused with
#: one line before decoding. JPEGs (MPO phone photos included) count after Pillow's ``draft`` (decoding at 1/2, 1/4
#: or 1/8 scale), so phone photos of any size pass; Pillow's own decompression-bomb limit (about 179 megapixels)
#: still applies first.
MAX_PIXELS = 64_000_000
#: Images are reduced (JPEG while decoding, others right after) until the longer side is under twice this, before
#: any float array is made: a digit fills at most 20x20 pixels of the result, so more detail is never used.
WORK_SIDE = 1024
#: The EXIF tag holding the camera's orientation.
ORIENTATION_TAG = 0x0112

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


def _refuse_unless_regular(source: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise ImageError(f"{source}: a directory, not an image file")
    if not stat.S_ISREG(mode):
        # Reading a FIFO or a terminal would wait forever for data; a device could be endless.
        raise ImageError(f"{source}: not a regular file (a pipe, socket or device), refused")


def _open_file(source: Path) -> BinaryIO:
    """Open ``source`` for reading without ever blocking: a FIFO is refused, not waited on."""
    try:
        # O_NONBLOCK makes opening a FIFO return at once (plain files ignore it); fstat then checks what was opened,
        # so a file swapped for a FIFO between a stat and the open cannot hang us either.
        descriptor = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except (FileNotFoundError, PermissionError, IsADirectoryError):  # IsADirectoryError: Windows cannot open directories
        raise  # worded by decoding_errors
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


def reduce_for_work(image: Image.Image) -> Image.Image:
    """Shrink an image by an integer factor (box averaging, in its own mode) so its longer side is under ``2 * WORK_SIDE``.

    Done before any float array exists: an 8000x6000 RGB scan becomes 1143x857 (3 MB) instead of 48 million float
    pixels (192 MB per working array).

    Args:
        image: A decoded Pillow image of any mode.

    Returns:
        ``image`` itself when it is small enough, else a reduced copy (transparency kept).
    """
    factor = max(1, max(image.size) // WORK_SIDE)
    if factor == 1:
        return image
    if image.mode in ("1", "P") or image.mode.startswith("I;16"):
        image = image.convert({"1": "L", "P": "RGBA" if "transparency" in image.info else "RGB"}.get(image.mode, "I"))
    if image.mode in ("RGBA", "LA"):
        # Average premultiplied colours ("RGBa", "La"), so fully transparent pixels do not tint the ink's edges.
        return image.convert(image.mode[:-1] + "a").reduce(factor).convert(image.mode)
    try:
        return image.reduce(factor)
    except ValueError:  # a mode reduce() does not handle: go through RGB
        return image.convert("RGB").reduce(factor)


def _orientation(image: Image.Image) -> int:
    try:
        orientation = image.getexif().get(ORIENTATION_TAG, 1)
    except Exception:  # a damaged EXIF block only loses the rotation, never the image
        return 1
    return orientation if isinstance(orientation, int) else 1


def _draft_if_jpeg(image: Image.Image) -> None:
    # Every JPEG-coded file, including the multi-picture JPEGs (MPO) phones write, which Pillow opens as a
    # JpegImageFile subclass holding the main picture as frame 0: decode the luminance only, at the smallest 1/2^k
    # scale that keeps the longer side >= WORK_SIDE.
    if isinstance(image, JpegImagePlugin.JpegImageFile) and max(image.size) >= 2 * WORK_SIDE:
        scale = max(image.size) / WORK_SIDE
        image.draft("L" if image.mode in ("RGB", "L") else image.mode, (int(image.width / scale), int(image.height / scale)))


def read_image_file(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file and decode it, at most ``MAX_PIXELS`` pixels and already reduced for the work ahead.

    JPEGs (and multi-picture JPEGs, MPO, whose first picture is used) are decoded at 1/2, 1/4 or 1/8 scale when
    that still leaves the longer side at least ``WORK_SIDE`` (Pillow's ``draft``), so a 12-megapixel photo never
    exists at full size in memory; other formats are decoded whole and at once reduced by an integer factor
    (:func:`reduce_for_work`). An image that would decode to more than ``MAX_PIXELS``
    pixels is refused before decoding. A corrupt file fails here and not later. Multi-frame files give their first
    frame.

    Args:
        path: Any format Pillow reads (PNG, JPEG, MPO, BMP, GIF, TIFF, WebP, ...); a regular file.

    Returns:
        The decoded image, upright (a phone photo's EXIF rotation applied), its longer side under
        ``2 * WORK_SIDE``; ``info["source_size"]`` holds the file's own ``(width, height)``.

    Raises:
        ImageError: Missing, a directory, not a regular file (FIFO, device), unreadable, not an image,
            truncated, or above the pixel limit.
    """
    source = Path(path)
    with decoding_errors(str(source)), _open_file(source) as handle:
        image = Image.open(handle)
        source_size, orientation = image.size, _orientation(image)
        _draft_if_jpeg(image)
        if image.width * image.height > MAX_PIXELS:
            raise ImageError(
                f"{source}: {source_size[0]}x{source_size[1]} pixels is above predict's limit of "
                f"{MAX_PIXELS // 1_000_000} megapixels (MAX_PIXELS); scale it down first"
            )
        image.load()
        image = reduce_for_work(image)
    # Phones store the camera's rotation in EXIF instead of rotating the pixels; applied after the reduction,
    # where it costs little.
    transpose = _EXIF_TRANSPOSE.get(orientation)
    if transpose is not None:
        image = image.transpose(transpose)
    image.info["source_size"] = source_size
    return image
