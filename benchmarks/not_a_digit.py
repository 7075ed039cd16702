"""Measure the "not a digit?" rule of ``predict``: its thresholds, its false alarms on digits, its hits on garbage.

1. Thresholds: every MNIST training digit (60,000) goes through the same preprocessing as a photo, then
   :func:`~mnist_cnn.not_a_digit.ink_features`; the 0.05/99.95th percentiles of each feature become ``FAR_RANGES``
   and the 0.5/99.5th ``NEAR_RANGES``. ``LOW_CONFIDENCE`` is the 5th percentile of the model's top probability on
   the first 5,000 test digits (the model was trained on the training digits, so they would overstate its confidence).
2. False alarms, with the rule as ``mnist_cnn.not_a_digit`` implements it (its constants, not step 1's fresh values):
   the MNIST test digits (both halves, and all 10,000), the 27 re-drawn test digits of ``tests/test_predict.py``,
   900 more re-drawn ones (100 per drawing variant, from the test set's second half) and ``docs/images``' sample.
3. Hits: pure noise, one-pixel lines, text, a filled square, a checkerboard, a gradient, a frame, stripes.

Usage: ``python benchmarks/not_a_digit.py [--checkpoint PTH] [--out FILE]`` (about a minute on one core).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mnist_cnn import not_a_digit
from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.data import load_split
from mnist_cnn.errors import ImageError
from mnist_cnn.inference import classify_digits, predict_files
from mnist_cnn.not_a_digit import INK_FEATURES, ink_features, not_a_digit_reason
from mnist_cnn.preprocess import preprocess

ROOT = Path(__file__).resolve().parents[1]
SEED_WEIGHTS = ROOT.parent / "shared" / "seed" / "mnist_VGG.pth"
sys.path.insert(0, str(ROOT / "tests"))
from test_predict import DRAWN, SUFFIXES, VARIANTS, draw  # noqa: E402  (the drawings the tests make)


def preprocessed(images: np.ndarray) -> np.ndarray:
    """Each 28x28 image through :func:`preprocess` (blank ones, if any, stay as they are)."""
    out = np.empty_like(images)
    for n, image in enumerate(images):
        try:
            out[n] = preprocess(image).digit
        except ImageError:
            out[n] = image
    return out


def feature_table(digits: np.ndarray) -> dict[str, np.ndarray]:
    """Every feature of every digit, as one array per feature."""
    rows = [ink_features(digit) for digit in digits]
    return {name: np.array([row[name] for row in rows]) for name in INK_FEATURES}


def ranges(table: dict[str, np.ndarray], low: float, high: float) -> dict[str, list[float]]:
    """Percentiles ``low`` and ``high`` of each feature."""
    return {name: [round(float(np.percentile(values, q)), 3) for q in (low, high)] for name, values in table.items()}


def flagged(digits: np.ndarray, probabilities: np.ndarray) -> list[str | None]:
    """The rule as implemented, applied to each digit."""
    return [not_a_digit_reason(ink_features(d), float(p)) for d, p in zip(digits, probabilities, strict=True)]


def garbage() -> dict[str, np.ndarray]:
    """Inputs unlike any digit."""
    rng = np.random.default_rng(0)
    cases = {f"noise {side}x{side}": rng.integers(0, 256, (side, side)).astype(np.uint8) for side in (28, 100, 400)}
    cases["noise on paper"] = np.clip(230 + rng.normal(0, 25, (200, 300)), 0, 255).astype(np.uint8)
    for name, (rows, cols) in {"one-pixel line, across": (100, slice(20, 280)), "one-pixel line, down": (slice(20, 180), 150)}.items():
        page = np.full((200, 300), 255, np.uint8)
        page[rows, cols] = 0
        cases[name] = page
    page = np.full((300, 300), 255, np.uint8)
    page[np.arange(20, 280), np.arange(20, 280)] = 0
    cases["one-pixel line, diagonal"] = page
    page = np.full((200, 200), 255, np.uint8)
    page[50:150, 50:150] = 0
    cases["filled square"] = page.copy()
    page[60:140, 60:140] = 255
    cases["square frame"] = page
    cases["checkerboard"] = ((np.indices((200, 200)) // 20).sum(0) % 2 * 255).astype(np.uint8)
    cases["gradient"] = np.tile(np.linspace(0, 255, 200), (200, 1)).astype(np.uint8)
    stripes = np.zeros((200, 200), np.uint8)
    stripes[:, ::10] = 255
    cases["stripes"] = stripes
    text = Image.new("L", (300, 120), 255)
    ImageDraw.Draw(text).text((10, 40), "HELLO WORLD", fill=0)
    cases["text"] = np.asarray(text)
    return cases


def redraw(checkpoint, images: np.ndarray, labels: np.ndarray, count: int, folder: Path, per_variant: bool) -> list[Path]:
    """Write re-drawn copies of the first ``count`` digits the model gets right as 28x28 images (as the tests do)."""
    probabilities = classify_digits(checkpoint.model, checkpoint.input_scaling, images)
    right = np.flatnonzero(probabilities.argmax(dim=1).numpy() == labels)[:count]
    rng = np.random.default_rng(0)
    files = []
    for n, index in enumerate(right.tolist()):
        variant = VARIANTS[(n // (count // len(VARIANTS)) if per_variant else n) % len(VARIANTS)]
        path = folder / f"digit_{n:04d}_label{labels[index]}{SUFFIXES[variant['format']]}"
        draw(images[index], variant, rng).save(path, variant["format"], **({"quality": 90} if variant["format"] == "JPEG" else {}))
        files.append(path)
    return files


def rate(flags: list[str | None]) -> dict[str, float | int]:
    """How many were flagged, of how many."""
    hits = sum(flag is not None for flag in flags)
    return {"flagged": hits, "of": len(flags), "rate": round(hits / max(len(flags), 1), 5)}


def main(argv: list[str] | None = None) -> int:
    """Measure, print, and (with ``--out``) write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=SEED_WEIGHTS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint, device="cpu")
    report: dict = {"checkpoint": str(args.checkpoint)}

    train_digits = preprocessed(load_split("train").images.numpy())
    table = feature_table(train_digits)
    report["far_ranges_measured"] = ranges(table, 0.05, 99.95)
    report["near_ranges_measured"] = ranges(table, 0.5, 99.5)

    test = load_split("test")
    test_digits = preprocessed(test.images.numpy())
    top = classify_digits(checkpoint.model, checkpoint.input_scaling, test_digits).max(dim=1).values.numpy()
    report["low_confidence_measured"] = round(float(np.percentile(top[:5000], 5)), 3)
    report["constants_used"] = {
        "FAR_RANGES": not_a_digit.FAR_RANGES,
        "NEAR_RANGES": not_a_digit.NEAR_RANGES,
        "LOW_CONFIDENCE": not_a_digit.LOW_CONFIDENCE,
    }

    flags = flagged(test_digits, top)
    report["mnist_test_first_half"] = rate(flags[:5000])
    report["mnist_test_second_half"] = rate(flags[5000:])
    report["mnist_test_all"] = rate(flags)
    report["mnist_test_flagged_examples"] = [f"#{n} label {int(test.labels[n])}: {flag}" for n, flag in enumerate(flags) if flag][:15]

    with tempfile.TemporaryDirectory() as tmp:
        images, labels = test.images.numpy(), test.labels.numpy()
        first = Path(tmp, "27")
        first.mkdir()
        as_tested = redraw(checkpoint, images[:200], labels[:200], DRAWN, first, per_variant=False)
        more = Path(tmp, "900")
        more.mkdir()
        many = redraw(checkpoint, images[5000:], labels[5000:], 100 * len(VARIANTS), more, per_variant=True)
        sample = [ROOT / "docs" / "images" / "sample_digit_3.jpg"]
        for name, files in {"drawn_27_as_in_tests": as_tested, "drawn_900": many, "docs_sample": sample}.items():
            results = predict_files(checkpoint, files)
            report[name] = rate([r.not_a_digit if r.ok else "failed: " + (r.error or "") for r in results])
            odd = [f"{Path(r.file).name}: {r.not_a_digit or r.error}" for r in results if r.not_a_digit or not r.ok]
            report[name + "_flagged_examples"] = odd[:10]

    cases = garbage()
    junk = {}
    for name, array in cases.items():
        try:
            digit = preprocess(array).digit
        except ImageError as error:
            junk[name] = f"refused: {error}"
            continue
        probability = float(classify_digits(checkpoint.model, checkpoint.input_scaling, digit[None]).max())
        junk[name] = f"{probability:.0%}: {not_a_digit_reason(ink_features(digit), probability) or 'NOT FLAGGED'}"
    report["garbage"] = junk
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
