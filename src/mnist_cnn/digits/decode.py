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
    """Turn what Pillow (or opening the file) raises on a bad image into one :class:`ImageError` line beginning with ``label``.

    Pillow's decompression-bomb *warning* is silenced inside: above twice its limit its error still applies.
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
    """Open and decode an image file Pillow reads, upright (a photo's EXIF rotation applied); of several frames, the first.

    Raises:
        ImageError: Missing, a directory, unreadable, not an image, or truncated.
    """
    with decoding_errors(str(path)), Image.open(path) as image:
        return ImageOps.exif_transpose(image)
