"""Train the digit-vs-non-digit detector of the "not a digit?" rule and write its weights as package data.

Positives: the 60,000 MNIST training digits after ``predict``'s preprocessing, varied by the project's
:class:`~mnist_cnn.augment.RandomAffine`, with strokes thickened or thinned. Negatives: half 0 of the rendered
letters, symbols and drawn shapes of ``non_digits.py`` (three renderings of each, so sizes and angles vary) and
random scribbles, blobs, specks and pairs of squeezed digits made here, all heavily shifted, turned, scaled,
thickened and thinned. Half 1's kinds (whole characters and shapes) are never seen: ``benchmarks/not_a_digit.py``
judges the detector on them. Nothing of the MNIST test set is used.

Usage: ``python benchmarks/train_not_a_digit.py [--out PATH] [--steps N]`` (about four minutes on one core; needs
the machine's TrueType fonts, so the weights may differ slightly on another machine: the shipped file is the
result).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from mnist_cnn.augment import RandomAffine
from mnist_cnn.data import load_split
from mnist_cnn.digits.not_a_digit import DETECTOR_WEIGHTS, DigitDetector
from mnist_cnn.digits.preprocess import preprocess
from mnist_cnn.errors import ImageError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from non_digits import CANVAS, draw_shape, fonts, non_digits, render_glyph  # noqa: E402

#: The seed of every random draw here.
SEED = 0


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


def train(positives: np.ndarray, negatives: np.ndarray, steps: int, batch: int = 256) -> DigitDetector:
    """Train on balanced batches (half digits, half non-digits), augmented afresh each step."""
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    gentle = RandomAffine(generator=generator)  # the project's own augmentation, for the digits
    heavy = RandomAffine(max_shift=3.0, max_rotation=30.0, max_scale=0.25, generator=generator)
    pos = torch.as_tensor(positives, dtype=torch.float32).unsqueeze(1) / 255
    neg = torch.as_tensor(negatives, dtype=torch.float32).unsqueeze(1) / 255
    model = DigitDetector()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    target = torch.cat([torch.ones(batch // 2), torch.zeros(batch // 2)])
    start = time.perf_counter()
    for step in range(steps):
        x_pos = gentle(pos[torch.randint(len(pos), (batch // 2,), generator=generator)])
        x_neg = heavy(neg[torch.randint(len(neg), (batch // 2,), generator=generator)])
        x = thickness(torch.cat([x_pos, x_neg]), generator).clamp(0, 1)
        loss = F.binary_cross_entropy_with_logits(model(x).squeeze(1), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 200 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - start:.0f} s", flush=True)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    """Build the data, train, and save the ``state_dict`` as safetensors."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DETECTOR_WEIGHTS)
    parser.add_argument("--steps", type=int, default=3000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rng = np.random.default_rng(SEED)
    train_digits = load_split("train").images.numpy()
    positives = to_digits(list(train_digits))
    rendered = to_digits(half_0_pages(rng, copies=3))
    made = to_digits([scribble(rng) for _ in range(3000)] + squeezed_pairs(train_digits, 1500, rng))
    negatives = np.concatenate([rendered, made])
    print(f"{len(positives)} digits, {len(rendered)} rendered non-digits (half 0), {len(made)} made-up non-digits")
    model = train(positives, negatives, args.steps)
    # a plain safetensors file of the state_dict: loading it runs no pickle (mnist_cnn.checkpoint.read_state_dict)
    save_file({name: value.contiguous() for name, value in model.state_dict().items()}, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
