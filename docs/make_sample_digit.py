"""Make ``docs/images/sample_digit_3.jpg``: an MNIST test digit drawn to look like a photo of handwriting.

Notebook 5 classifies it through ``mnist_cnn.digits.inference`` to show the preprocessing steps; replace it there
with a photo or scan of your own digit. The picture is dark blue ink on cream paper, lit unevenly, with
sensor noise, saved as a JPEG, scaled up and off-centre: everything preprocessing has to undo.

Run from the project root: ``python docs/make_sample_digit.py`` (needs the MNIST test files).
"""

from pathlib import Path

import numpy as np
from PIL import Image

from mnist_cnn.data import load_split

INDEX = 30  # a 3 in the MNIST test set, one the trained models classify with confidence
OUT = Path(__file__).resolve().parent / "images" / "sample_digit_3.jpg"


def main() -> None:
    digit = load_split("test").images[INDEX].numpy().astype(np.float32) / 255.0
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    ink = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    size = (ink.shape[1] * 5, ink.shape[0] * 5)
    coverage = np.clip(np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.LANCZOS)), 0, 1)

    height, width = 180, 240
    alpha = np.zeros((height, width), np.float32)
    top, left = 25, 120  # off-centre: right of the middle, near the top
    alpha[top : top + size[1], left : left + size[0]] = coverage
    # Paper lit from the left: brighter there, darker to the right.
    light = np.linspace(1.0, 0.86, width, dtype=np.float32)[None, :, None]
    paper = np.array([240, 234, 220], np.float32) * light
    pen = np.array([30, 40, 110], np.float32)
    rgb = paper * (1 - alpha[..., None]) + pen * alpha[..., None]
    rgb += np.random.default_rng(0).normal(0, 4, rgb.shape)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(np.round(rgb), 0, 255).astype(np.uint8), "RGB").save(OUT, quality=85)
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
