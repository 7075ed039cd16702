"""Inputs that are not digits, for measuring the "not a digit?" rule: rendered letters and symbols, drawn shapes.

Glyphs are rendered with every TrueType font under ``/usr/share/fonts`` (DejaVu and Liberation here) or, without
any, Pillow's built-in font; shapes are drawn with pen-like strokes at random sizes, widths and small rotations.
Letters that many hands write like a digit (O, o, D, I, i, l, j, J, S, s, Z, z, B, b, g, q, G) are left out: the
network cannot be asked to tell them from 0, 1, 5, 2, 8, 6 and 9. Every kind (a character, or a shape) lands
wholly in one of two halves, so the half a threshold is judged on holds kinds it was not chosen with.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Letters and symbols rendered (none of them drawn like a digit by most hands).
GLYPHS = "ACEFHKLMNPQRTUVWXYacefhkmnprtuvwxy&@#%$?*+=<>~^"
#: Letters left out because many hands write them like a digit.
DIGIT_LIKE_LETTERS = "ODIiljJSsZzBbgqGo"
CANVAS = 160
Point = tuple[float, float]


def fonts() -> list[Path | None]:
    """Every TrueType font installed, or ``[None]`` (Pillow's built-in font) when there is none."""
    found = sorted(Path("/usr/share/fonts").rglob("*.ttf")) if Path("/usr/share/fonts").is_dir() else []
    return [path for path in found if "Math" not in path.name] or [None]


def render_glyph(char: str, font: Path | None, rng: np.random.Generator) -> np.ndarray:
    """``char`` in dark ink on white, about 100 px tall, turned by up to 8 degrees."""
    size = int(rng.integers(80, 120))
    face = ImageFont.truetype(str(font), size) if font else ImageFont.load_default(size=size)
    page = Image.new("L", (CANVAS, CANVAS), 255)
    ImageDraw.Draw(page).text((CANVAS / 2, CANVAS / 2), char, fill=0, font=face, anchor="mm")
    return np.asarray(page.rotate(float(rng.uniform(-8, 8)), fillcolor=255))


def _circle(cx: float, cy: float, r: float, start: float = 0, end: float = 360, n: int = 40) -> list[Point]:
    return [(cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a))) for a in np.linspace(start, end, n)]


def _smiley() -> list[list[Point]]:
    return [_circle(80, 80, 55), _circle(60, 62, 4), _circle(100, 62, 4), _circle(80, 80, 32, 30, 150)]


def _star() -> list[list[Point]]:
    radii = [60 if k % 2 == 0 else 24 for k in range(11)]
    return [[(80 + r * math.sin(k * math.pi / 5), 85 - r * math.cos(k * math.pi / 5)) for k, r in enumerate(radii)]]


def _heart() -> list[list[Point]]:
    def y(t: float) -> float:
        return 75 - (48 * math.cos(t) - 18 * math.cos(2 * t) - 7 * math.cos(3 * t) - 3 * math.cos(4 * t))

    return [[(80 + 60 * math.sin(t) ** 3, y(t)) for t in np.linspace(0, 2 * math.pi, 80)]]


#: Shapes as strokes on a 160x160 page.
SHAPES: dict[str, Callable[[], list[list[Point]]]] = {
    "plus": lambda: [[(80, 20), (80, 140)], [(20, 80), (140, 80)]],
    "x": lambda: [[(25, 25), (135, 135)], [(135, 25), (25, 135)]],
    "arrow right": lambda: [[(20, 80), (140, 80)], [(100, 45), (140, 80), (100, 115)]],
    "arrow up": lambda: [[(80, 140), (80, 20)], [(45, 60), (80, 20), (115, 60)]],
    "arrow down-left": lambda: [[(135, 25), (30, 130)], [(30, 80), (30, 130), (80, 130)]],
    "triangle": lambda: [[(80, 20), (140, 130), (20, 130), (80, 20)]],
    "triangle down": lambda: [[(20, 30), (140, 30), (80, 140), (20, 30)]],
    "smiley": _smiley,
    "zigzag": lambda: [[(15, 50), (45, 110), (75, 50), (105, 110), (135, 50)]],
    "zigzag tall": lambda: [[(20, 20), (140, 45), (20, 80), (140, 110), (20, 140)]],
    "star": _star,
    "square": lambda: [[(30, 30), (130, 30), (130, 130), (30, 130), (30, 30)]],
    "diamond": lambda: [[(80, 15), (140, 80), (80, 145), (20, 80), (80, 15)]],
    "hash": lambda: [[(60, 20), (50, 140)], [(105, 20), (95, 140)], [(20, 60), (140, 60)], [(15, 100), (135, 100)]],
    "asterisk": lambda: [[(80, 20), (80, 140)], [(28, 50), (132, 110)], [(132, 50), (28, 110)]],
    "equals": lambda: [[(20, 60), (140, 60)], [(20, 100), (140, 100)]],
    "circled cross": lambda: [_circle(80, 80, 60), [(38, 38), (122, 122)], [(122, 38), (38, 122)]],
    "house": lambda: [[(30, 140), (30, 70), (80, 20), (130, 70), (130, 140), (30, 140)]],
    "wave": lambda: [[(x, 80 + 35 * math.sin((x - 15) / 130 * 4 * math.pi)) for x in range(15, 146, 5)]],
    "spiral": lambda: [[(80 + t * 3.2 * math.cos(t), 80 + t * 3.2 * math.sin(t)) for t in np.linspace(0, 6 * math.pi, 120)]],
    "heart": _heart,
    "check mark": lambda: [[(20, 85), (60, 130), (140, 25)]],
    "cross in square": lambda: [[(30, 30), (130, 30), (130, 130), (30, 130), (30, 30)], [(30, 30), (130, 130)], [(130, 30), (30, 130)]],
}


def draw_shape(name: str, rng: np.random.Generator) -> np.ndarray:
    """The shape in dark ink on white, pen width 6-16 px, turned by up to 12 degrees, points jittered by 3 px."""
    page = Image.new("L", (CANVAS, CANVAS), 255)
    pen = ImageDraw.Draw(page)
    width = int(rng.integers(6, 17))
    for stroke in SHAPES[name]():
        points = [(x + float(rng.normal(0, 3)), y + float(rng.normal(0, 3))) for x, y in stroke]
        pen.line(points, fill=0, width=width, joint="curve")
        for x, y in points[:: max(1, len(points) - 1)]:  # round ends, as a pen leaves them
            pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=0)
    return np.asarray(page.rotate(float(rng.uniform(-12, 12)), fillcolor=255))


def non_digits(seed: int = 0, shape_copies: int = 12) -> tuple[list[np.ndarray], list[str], list[int]]:
    """Every glyph in every font, and ``shape_copies`` drawings of every shape.

    Returns:
        ``(pages, kinds, halves)``: grayscale pages, what each shows (``"A"``, ``"shape: plus"``), and 0 or 1 for
        the half its kind belongs to (kinds alternate between halves in a seeded random order).
    """
    rng = np.random.default_rng(seed)
    pages, kinds = [], []
    for char in GLYPHS:
        for font in fonts():
            pages.append(render_glyph(char, font, rng))
            kinds.append(char)
    for name in SHAPES:
        for _ in range(shape_copies):
            pages.append(draw_shape(name, rng))
            kinds.append(f"shape: {name}")
    order = list(dict.fromkeys(kinds))
    half_of = {kind: n % 2 for n, kind in enumerate(rng.permutation(order).tolist())}
    return pages, kinds, [half_of[kind] for kind in kinds]
