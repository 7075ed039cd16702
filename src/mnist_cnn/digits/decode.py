"""Opening image files: decoded and upright, Pillow's failures told in one line."""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_cnn.errors import ImageError


@contextmanager
def decoding_errors(label: str) -> Iterator[None]:
    """Turn what Pillow (or opening the file) raises on a bad image into one :class:`ImageError` line.

    Pillow's decompression-bomb *warning* is silenced inside: above twice its limit its error still applies.

    Args:
        label: What the image is, to begin the message (a file name, or "the drawing could not be decoded").
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except FileNotFoundError:
        raise ImageError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{label}: a directory, not an image file") from None
    except PermissionError:
        raise ImageError(f"{label}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{label}: not an image file Pillow can read") from None
    except Image.DecompressionBombError:
        raise ImageError(f"{label}: the image is too large to open safely (above Pillow's decompression-bomb limit)") from None
    except MemoryError:
        raise ImageError(f"{label}: not enough memory to decode this image") from None
    # Pillow reports truncated or corrupt data as OSError, ValueError or (for some formats) SyntaxError.
    except (OSError, ValueError, SyntaxError, TypeError, struct.error, EOFError) as error:
        raise ImageError(f"{label}: unreadable image ({error})") from None


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open and decode an image file, upright (a photo's EXIF rotation applied); a multi-frame file gives its first frame.

    Args:
        path: Any format Pillow reads (PNG, JPEG, BMP, GIF, TIFF, WebP, ...).

    Raises:
        ImageError: Missing, a directory, unreadable, not an image, or truncated.
    """
    with decoding_errors(str(path)), Image.open(path) as image:
        return ImageOps.exif_transpose(image)
