"""Train the digit detector of the "not a digit?" rule (ten digit classes and "not a digit") and write its weights.

Digits, each with its label: the 55,000 MNIST training digits outside the validation split after ``predict``'s
preprocessing, and the same digits shrunk to 8x8 with 17 grey levels first (as coarse as scikit-learn's scanned
digits), varied by the project's :class:`~mnist_cnn.augment.RandomAffine`, with strokes thickened or thinned.
Non-digits, the eleventh class: half 0 of the rendered letters, symbols and drawn shapes of ``non_digits.py``
(three renderings of each, so sizes and angles vary), other characters of the same fonts (other scripts and
symbols, minus anything like a measured kind or a digit: :func:`other_glyphs`), random scribbles, blobs, specks,
pairs of squeezed digits and random stroke graphs (two to four straight strokes, each starting anywhere or on the
strokes before it) made here, all heavily shifted, turned, scaled, thickened and thinned. Half 1's kinds (whole
characters and shapes) are never seen, and neither are the validation digits (``benchmarks/not_a_digit.py``
chooses the threshold on them) or the MNIST test set.

Usage: ``python benchmarks/train_not_a_digit.py [--out PATH] [--steps N]`` (about 20 minutes on two cores; needs
the machine's TrueType fonts, so the weights may differ slightly on another machine: the shipped file is the
result).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from mnist_cnn.augment import RandomAffine
from mnist_cnn.data import load_split, validation_split
from mnist_cnn.digits.not_a_digit import DETECTOR_WEIGHTS, NOT_A_DIGIT, DigitDetector
from mnist_cnn.digits.preprocess import preprocess
from mnist_cnn.errors import ImageError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from non_digits import CANVAS, DIGIT_LIKE_LETTERS, GLYPHS, SHAPES, draw_shape, fonts, non_digits, render_glyph  # noqa: E402

#: The seed of every random draw here.
SEED = 0
#: What the other glyphs of the fonts must not look like: the measured kinds (both halves), digits, digit-like letters.
LOOKALIKES = GLYPHS + "0123456789" + DIGIT_LIKE_LETTERS
#: Words in a character's Unicode name that make it a look-alike of a measured symbol or shape, or of a digit.
LOOKALIKE_WORDS = (
    "DIGIT", "NUMBER", "NUMERAL", "FRACTION", "ARROW", "TRIANGLE", "PLUS", "CROSS", "EQUAL", "LESS-THAN", "GREATER-THAN",
    "TILDE", "ASTERISK", "STAR", "HEART", "SQUARE", "DIAMOND", "CHECK", "SMILING", "SPIRAL", "WAVE", "ZIGZAG", "HOUSE",
    "AMPERSAND", "COMMERCIAL AT", "PERCENT", "DOLLAR", "QUESTION", "CIRCUMFLEX", "CARET", "ANGLE", "CHEVRON",
    "BOX DRAWINGS", "BLOCK", "BRAILLE", "SHADE", "MULTIPLICATION", "TIMES", "DAGGER",
)  # fmt: skip
#: Other glyphs whose preprocessed image correlates more than this with a rendered look-alike are left out too.
MAX_LOOKALIKE_CORRELATION = 0.72


def to_digits(pages: list[np.ndarray]) -> np.ndarray:
    """Each page through ``predict``'s preprocessing; pages it refuses (blank) are dropped."""
    out = []
    for page in pages:
        try:
            out.append(preprocess(page).digit)
        except ImageError:
            pass
    return np.stack(out)


def half_0_pages(rng: np.random.Generator, copies: int) -> list[np.ndarray]:
    """``copies`` renderings of every kind in half 0 of ``non_digits()`` (the first one is that function's own)."""
    pages, kinds, halves = non_digits()
    chosen = [page for page, half in zip(pages, halves, strict=True) if half == 0]
    kinds_0 = sorted({kind for kind, half in zip(kinds, halves, strict=True) if half == 0})
    for _ in range(copies - 1):
        for kind in kinds_0:
            if kind.startswith("shape: "):
                chosen += [draw_shape(kind.removeprefix("shape: "), rng) for _ in range(12)]
            else:
                chosen += [render_glyph(kind, font, rng) for font in fonts()]
    return chosen


def _unlike_the_measured(char: str) -> bool:
    """A letter or symbol whose name and decomposition are unlike every kind measured, every digit and digit-like letter."""
    name = unicodedata.name(char, "")
    if unicodedata.category(char)[0] not in "LS" or unicodedata.category(char) in ("Lm", "Sk") or not name:
        return False
    base = unicodedata.normalize("NFKD", char)[0]
    return not any(word in name for word in LOOKALIKE_WORDS) and not {base, base.upper(), base.lower()} & set(LOOKALIKES)


def _centred(digits: np.ndarray) -> np.ndarray:
    vectors = digits.reshape(len(digits), -1).astype(np.float32)
    vectors -= vectors.mean(axis=1, keepdims=True)
    return vectors / (np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-6)


def other_glyphs(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` characters of the installed fonts beyond ASCII (other scripts, symbols), rendered, minus look-alikes.

    Left out: names or decompositions that tie a character to a measured kind or a digit (:func:`_unlike_the_measured`)
    and renderings that correlate more than :data:`MAX_LOOKALIKE_CORRELATION` with a rendering of a measured glyph, a
    digit, a digit-like letter or a drawn shape, so that no held-apart kind is learnt under another code point.
    """
    choices = [(font, chr(code)) for font in fonts() if font for code in TTFont(str(font), lazy=True).getBestCmap() if code > 127]
    choices = [(font, char) for font, char in choices if _unlike_the_measured(char)]
    if not choices:  # Pillow's built-in font only: no other glyphs
        return np.zeros((0, 28, 28), np.uint8)
    picked = [choices[i] for i in rng.choice(len(choices), min(count, len(choices)), replace=False)]
    rendered = to_digits([render_glyph(char, font, rng) for font, char in picked])
    references = to_digits(
        [render_glyph(char, font, rng) for font in fonts() for char in LOOKALIKES] + [draw_shape(s, rng) for s in SHAPES for _ in range(6)]
    )
    similarity = (_centred(rendered) @ _centred(references).T).max(axis=1)
    return rendered[similarity <= MAX_LOOKALIKE_CORRELATION]


def scribble(rng: np.random.Generator) -> np.ndarray:
    """Random pen strokes, loops, blobs or specks on a page: things a person might draw that are not digits."""
    page = Image.new("L", (CANVAS, CANVAS), 255)
    pen = ImageDraw.Draw(page)
    kind = rng.integers(4)
    width = int(rng.integers(5, 18))
    if kind == 0:  # several random strokes
        for _ in range(rng.integers(3, 7)):
            points = [tuple(rng.uniform(15, 145, 2)) for _ in range(rng.integers(2, 5))]
            pen.line(points, fill=0, width=width, joint="curve")
    elif kind == 1:  # a long random walk
        point, angle, points = rng.uniform(40, 120, 2), rng.uniform(0, 2 * math.pi), []
        for _ in range(rng.integers(20, 60)):
            angle += rng.normal(0, 0.8)
            point = np.clip(point + 8 * np.array([math.cos(angle), math.sin(angle)]), 10, 150)
            points.append(tuple(point))
        pen.line(points, fill=0, width=width, joint="curve")
    elif kind == 2:  # filled blobs and rings
        for _ in range(rng.integers(1, 5)):
            x, y = rng.uniform(20, 140, 2)
            rx, ry = rng.uniform(5, 40, 2)
            pen.ellipse((x - rx, y - ry, x + rx, y + ry), fill=0 if rng.random() < 0.5 else None, outline=0, width=width)
    else:  # specks and short dashes
        for _ in range(rng.integers(4, 25)):
            x, y = rng.uniform(15, 145, 2)
            dx, dy = rng.normal(0, 8, 2)
            pen.line([(x, y), (x + dx, y + dy)], fill=0, width=width)
    return np.asarray(page.rotate(float(rng.uniform(0, 360)), fillcolor=255))


def stroke_graph(rng: np.random.Generator) -> np.ndarray:
    """Two to four straight strokes, each from anywhere or from a point of a stroke before it; sometimes an arc instead."""
    page = Image.new("L", (CANVAS, CANVAS), 255)
    pen = ImageDraw.Draw(page)
    width, strokes = int(rng.integers(6, 17)), []
    for _ in range(rng.integers(2, 5)):
        if strokes and rng.random() < 0.7:  # joined to the drawing: at an end or anywhere along a stroke
            (x0, y0), (x1, y1) = strokes[rng.integers(len(strokes))]
            t = rng.choice([0.0, 1.0, rng.uniform(0, 1)])
            start = (x0 + t * (x1 - x0), y0 + t * (y1 - y0))
        else:
            start = tuple(rng.uniform(30, 130, 2))
        angle, length = rng.uniform(0, 2 * math.pi), rng.uniform(40, 120)
        end = tuple(float(np.clip(c + length * f(angle), 10, 150)) for c, f in zip(start, (math.cos, math.sin), strict=True))
        strokes.append((start, end))
        if rng.random() < 0.15:
            r, begin = rng.uniform(15, 45), rng.uniform(0, 360)
            pen.arc((start[0] - r, start[1] - r, start[0] + r, start[1] + r), begin, begin + rng.uniform(90, 270), fill=0, width=width)
        else:
            pen.line([start, end], fill=0, width=width)
    return np.asarray(page)


def coarse(digit: np.ndarray) -> np.ndarray:
    """An MNIST digit (light on black) as coarse as scikit-learn's: its ink box, squared, shrunk to 8x8 in 17 grey levels."""
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    crop = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    side = max(crop.shape) + 2
    square = np.zeros((side, side), np.uint8)
    top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    square[top : top + crop.shape[0], left : left + crop.shape[1]] = crop
    small = np.asarray(Image.fromarray(square).resize((8, 8), Image.BOX), np.float32)
    return (np.round(small / 255 * 16) / 16 * 255).astype(np.uint8)


def squeezed_pairs(digits: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Two MNIST training digits side by side or on top of each other: ink like a digit's, but two of them."""
    pages = []
    for _ in range(count):
        a, b = digits[rng.integers(len(digits), size=2)]
        page = np.hstack([a, b]) if rng.random() < 0.7 else np.vstack([a, b])
        pages.append(255 - page)
    return pages


def thickness(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Thicken (3x3 max) or thin (3x3 min) some strokes, blended by a random share."""
    mix = torch.rand(len(images), 1, 1, 1, generator=generator)
    side = torch.randint(0, 3, (len(images), 1, 1, 1), generator=generator)
    thick = F.max_pool2d(images, 3, 1, 1)
    thin = -F.max_pool2d(-images, 3, 1, 1)
    changed = torch.where(side == 0, thick, torch.where(side == 1, thin, images))
    return images + 0.6 * mix * (changed - images)


def train(
    positives: np.ndarray, labels: np.ndarray, coarse_positives: np.ndarray, negatives: np.ndarray, steps: int, batch: int = 256
) -> DigitDetector:
    """Train on batches of half digits (a fifth of them coarse) and half non-digits, augmented afresh each step."""
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    gentle = RandomAffine(generator=generator)  # the project's own augmentation, for the digits
    heavy = RandomAffine(max_shift=3.0, max_rotation=30.0, max_scale=0.25, generator=generator)
    pos = torch.as_tensor(positives, dtype=torch.float32).unsqueeze(1) / 255
    low = torch.as_tensor(coarse_positives, dtype=torch.float32).unsqueeze(1) / 255
    neg = torch.as_tensor(negatives, dtype=torch.float32).unsqueeze(1) / 255
    classes = torch.as_tensor(labels, dtype=torch.long)
    model = DigitDetector()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    half = batch // 2
    start = time.perf_counter()
    for step in range(steps):
        chosen = torch.randint(len(pos), (half,), generator=generator)
        digits = torch.where((torch.rand(half, generator=generator) < 0.2)[:, None, None, None], low[chosen], pos[chosen])
        x_neg = heavy(neg[torch.randint(len(neg), (half,), generator=generator)])
        x = thickness(torch.cat([gentle(digits), x_neg]), generator).clamp(0, 1)
        target = torch.cat([classes[chosen], torch.full((half,), NOT_A_DIGIT)])
        loss = F.cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 500 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - start:.0f} s", flush=True)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    """Build the data, train, and save the ``state_dict`` as safetensors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DETECTOR_WEIGHTS, help="where to write the weights (default: the package's)")
    parser.add_argument("--steps", type=int, default=8000, help="optimizer steps (default: 8000)")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)  # the same weights on a rerun here need the same thread count
    rng = np.random.default_rng(SEED)
    train_digits, _ = validation_split(load_split("train"))  # the validation digits choose the threshold: never seen here
    images, labels = train_digits.images.numpy(), train_digits.labels.numpy()
    positives = np.stack([preprocess(image).digit for image in images])  # MNIST digits are never blank
    coarse_positives = np.stack([preprocess(coarse(image)).digit for image in images])
    rendered = np.concatenate([to_digits(half_0_pages(rng, copies=3)), other_glyphs(rng, 24_000)])
    made = to_digits([scribble(rng) for _ in range(3000)] + squeezed_pairs(images, 1500, rng) + [stroke_graph(rng) for _ in range(8000)])
    negatives = np.concatenate([rendered, made])
    print(f"{len(positives)} digits (and as many coarse), {len(rendered)} rendered non-digits (half 0, other glyphs), {len(made)} made-up")
    model = train(positives, labels, coarse_positives, negatives, args.steps)
    # a plain safetensors file of the state_dict: loading it runs no pickle (mnist_cnn.checkpoint.read_state_dict)
    save_file({name: value.contiguous() for name, value in model.state_dict().items()}, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
