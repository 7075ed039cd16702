"""Measure the "not a digit?" rule of ``predict``: its thresholds, its false alarms on digits, its hits on non-digits.

1. Thresholds, none of them on the test set: the 55,000 MNIST training digits outside the validation split go
   through the same preprocessing as a photo, then :func:`~mnist_cnn.digits.not_a_digit.ink_features`; the
   0.01/99.99th percentiles of each feature become ``FAR_RANGES``. On the 5,000 validation digits, which the detector
   never saw (``train_not_a_digit.py``), ``MIN_DIGIT_SCORE`` is the largest detector score at which the whole rule
   flags at most 0.25 % of them: half the 0.5 % goal, a margin for the test digits, which come from other writers
   than the training and validation digits. ``MIN_CONFIDENCE`` stays as chosen before the detector (the least
   confident of the first 5,000 test digits inside the ink ranges of the time, with the seed weights); the script reports the
   validation digits' least confident one beside it.
2. Judged, with the rule as ``mnist_cnn.digits.not_a_digit`` implements it (its constants, not step 1's fresh values),
   ``without_detector`` and ``shipped`` (with it): false alarms on all 10,000 test digits, on scikit-learn's 1,797
   handwritten digits (8x8 scans, through the same preprocessing), on the 27 re-drawn test digits of
   ``tests/test_predict.py``, on 900 more re-drawn ones (100 per drawing variant, from the test set's second half)
   and on ``docs/images``' sample; hits on rendered letters and symbols and drawn shapes (``non_digits.py``), by
   half and by kind: the detector was trained on half 0's kinds, never on half 1's (held apart).
3. The trade-off of the network's own scores: what share of half 1 the top probability or the energy
   (-logsumexp(logits)) would catch at a 0.5, 1, 2 and 5 % false-alarm rate on the validation digits.
4. Garbage: pure noise, one-pixel lines, text, a filled square, a checkerboard, a gradient, a frame, stripes.

Usage: ``python benchmarks/not_a_digit.py [--checkpoint PTH] [--out FILE]`` (a few minutes on one core).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from sklearn.datasets import load_digits

from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.data import load_split, scale_images, validation_split
from mnist_cnn.digits import not_a_digit
from mnist_cnn.digits.inference import classify_digits, predict_files
from mnist_cnn.digits.not_a_digit import INK_FEATURES, digit_scores, ink_features, not_a_digit_reason
from mnist_cnn.digits.preprocess import preprocess
from mnist_cnn.errors import ImageError
from mnist_cnn.tooling.safety.safe_load import read_checkpoint_file

ROOT = Path(__file__).resolve().parents[1]
SEED_WEIGHTS = ROOT.parent / "shared" / "seed" / "mnist_VGG.pth"
sys.path.insert(0, str(ROOT / "tests"))
from test_predict import DRAWN, SUFFIXES, VARIANTS, draw  # noqa: E402  (the drawings the tests make)

sys.path.insert(0, str(ROOT / "benchmarks"))
from non_digits import non_digits  # noqa: E402

#: The most MNIST test digits the rule may flag (the goal).
BUDGET = 0.005
#: The most validation digits the rule may flag when ``MIN_DIGIT_SCORE`` is chosen: half the goal, a margin for new writers.
VALIDATION_BUDGET = 0.0025
#: The two forms of the rule measured: without the detector, and as shipped.
RULES = ("without_detector", "shipped")


def preprocessed(images: np.ndarray) -> np.ndarray:
    """Each image (28x28, or 8x8 scans) through :func:`preprocess` to 28x28; blank ones, if any, stay all black."""
    out = np.zeros((len(images), 28, 28), np.uint8)
    for n, image in enumerate(images):
        try:
            out[n] = preprocess(image).digit
        except ImageError:
            pass
    return out


def feature_table(digits: np.ndarray) -> dict[str, np.ndarray]:
    """Every feature of every digit, as one array per feature."""
    rows = [ink_features(digit) for digit in digits]
    return {name: np.array([row[name] for row in rows]) for name in INK_FEATURES}


def ranges(table: dict[str, np.ndarray], low: float, high: float) -> dict[str, list[float]]:
    """Percentiles ``low`` and ``high`` of each feature."""
    return {name: [round(float(np.percentile(values, q)), 3) for q in (low, high)] for name, values in table.items()}


def flagged(digits: np.ndarray, probabilities: np.ndarray, detector: bool = True) -> list[str | None]:
    """The rule as implemented, applied to each digit; ``detector=False``: the rule before the digit detector."""
    shapes = digit_scores(digits) if detector else [None] * len(digits)
    return [not_a_digit_reason(ink_features(d), float(p), s) for d, p, s in zip(digits, probabilities, shapes, strict=True)]


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


@torch.no_grad()
def logits_of(checkpoint, digits: np.ndarray) -> np.ndarray:
    """The network's logits for 28x28 digits, in batches."""
    checkpoint.model.eval()
    images = scale_images(torch.as_tensor(digits), checkpoint.input_scaling)
    return torch.cat([checkpoint.model(images[i : i + 500]).float() for i in range(0, len(images), 500)]).numpy()


def far_flags(digits: np.ndarray) -> np.ndarray:
    """Whether each digit's ink is outside ``FAR_RANGES`` (a part of the rule that ignores the model)."""
    return np.array([not_a_digit_reason(ink_features(d), 1.0) is not None for d in digits])


def largest_threshold(score: np.ndarray, always: np.ndarray, budget: float) -> float:
    """The largest ``t`` at which ``always | (score < t)`` flags at most ``budget`` of the inputs."""
    allowed = int(np.floor(budget * len(score))) - int(always.sum())
    candidates = np.sort(score[~always])
    return float(candidates[max(allowed, 0)]) if len(candidates) else float("inf")


def tradeoff(calibration: dict[str, np.ndarray], judged: dict[str, np.ndarray], far_cal: np.ndarray, far_judged: np.ndarray) -> dict:
    """Share of ``judged`` non-digits each score catches (with ``FAR_RANGES``) at several false-alarm budgets."""
    table = {}
    for name in calibration:
        for budget in (0.005, 0.01, 0.02, 0.05):
            t = largest_threshold(calibration[name], far_cal, budget)
            table[f"{name} at {budget:.1%}"] = {
                "threshold": round(t, 4),
                "caught": round(float(((judged[name] < t) | far_judged).mean()), 4),
            }
    return table


def scores(logits: np.ndarray) -> dict[str, np.ndarray]:
    """Higher means more digit-like: the top probability, and minus the energy (logsumexp of the logits)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return {"top probability": probabilities.max(axis=1), "minus energy": logits.max(axis=1) + np.log(np.exp(shifted).sum(axis=1))}


def measure_validation(checkpoint, report: dict) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Choose ``MIN_DIGIT_SCORE`` on the validation digits; return the network's scores there and the ink flags."""
    _, validation = validation_split(load_split("train"))
    digits = preprocessed(validation.images.numpy())
    score = scores(logits_of(checkpoint, digits))
    far = far_flags(digits)
    report["validation_least_confident_with_usual_ink"] = round(float(score["top probability"][~far].min()), 4)
    unsure = far | (score["top probability"] < not_a_digit.MIN_CONFIDENCE)
    report["min_digit_score_measured"] = round(largest_threshold(digit_scores(digits), unsure, VALIDATION_BUDGET), 4)
    report["shipped"] = {"mnist_validation_chosen_on": rate(flagged(digits, score["top probability"]))}
    return score, far


def measure_digits(checkpoint, report: dict) -> None:
    """False alarms on the 10,000 test digits and on scikit-learn's handwritten digits, with and without the detector."""
    test = load_split("test")
    sets = {"mnist_test": (preprocessed(test.images.numpy()), test.labels.numpy())}
    scans = load_digits()  # 8x8, 0-16, light ink on black: as a photo of them would be, through the same preprocessing
    sets["sklearn_digits"] = (preprocessed((scans.images / 16 * 255).round().astype(np.uint8)), scans.target)
    for name, (digits, labels) in sets.items():
        top = classify_digits(checkpoint.model, checkpoint.input_scaling, digits).max(dim=1).values.numpy()
        for when in RULES:
            flags = flagged(digits, top, detector=when == "shipped")
            part = report.setdefault(when, {})
            part[name] = rate(flags)
            part[name + "_flagged_examples"] = [f"#{n} label {int(labels[n])}: {flag}" for n, flag in enumerate(flags) if flag][:15]


def measure_non_digits(checkpoint, report: dict, calibration: dict[str, np.ndarray], far_cal: np.ndarray) -> None:
    """The rule's hits on rendered letters and symbols and drawn shapes, by half and by kind; the trade-off table."""
    pages, kinds, halves = non_digits()
    digits = np.stack([preprocess(page).digit for page in pages])
    score = scores(logits_of(checkpoint, digits))
    half, kind_of = np.array(halves), np.array(kinds)
    for when in RULES:
        flags = np.array([flag is not None for flag in flagged(digits, score["top probability"], detector=when == "shipped")])
        part = report[when]
        part["non_digits_half_0_detector_trained_on"] = rate(["flagged" if f else None for f in flags[half == 0]])
        part["non_digits_half_1_held_apart"] = rate(["flagged" if f else None for f in flags[half == 1]])
        part["non_digits_caught_by_kind"] = {
            f"{kind} (half {halves[kinds.index(kind)]})": f"{flags[kind_of == kind].mean():.0%}" for kind in dict.fromkeys(kinds)
        }
    held = half == 1
    judged = {name: values[held] for name, values in score.items()}
    report["tradeoff_on_half_1_network_scores_alone"] = tradeoff(calibration, judged, far_cal, far_flags(digits[held]))


def measure_redrawn(checkpoint, report: dict) -> None:
    """False alarms on re-drawn test digits (as the tests draw them) and on the sample photo, with and without the detector."""
    test = load_split("test")
    images, labels = test.images.numpy(), test.labels.numpy()
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(tmp, "27")
        first.mkdir()
        as_tested = redraw(checkpoint, images[:200], labels[:200], DRAWN, first, per_variant=False)
        more = Path(tmp, "900")
        more.mkdir()
        many = redraw(checkpoint, images[5000:], labels[5000:], 100 * len(VARIANTS), more, per_variant=True)
        sample = [ROOT / "docs" / "images" / "sample_digit_3.jpg"]
        for name, files in {"drawn_27_as_in_tests": as_tested, "drawn_900": many, "docs_sample": sample}.items():
            results = predict_files(checkpoint, files)
            failed = ["failed: " + (r.error or "") for r in results if not r.ok]
            good = [r for r in results if r.ok]
            without = [not_a_digit_reason(ink_features(r.image), r.probability) for r in good]
            for when, flags in (("without_detector", without), ("shipped", [r.not_a_digit for r in good])):
                report[when][name] = rate(flags + failed)
                odd = [f"{Path(r.file).name}: {flag}" for r, flag in zip(good, flags, strict=True) if flag]
                report[when][name + "_flagged_examples"] = (odd + failed)[:10]


def measure_garbage(checkpoint, report: dict) -> None:
    """What the rule says about each garbage input."""
    junk = {}
    for name, array in garbage().items():
        try:
            digit = preprocess(array).digit
        except ImageError as error:
            junk[name] = f"refused: {error}"
            continue
        probability = float(classify_digits(checkpoint.model, checkpoint.input_scaling, digit[None]).max())
        shape = float(digit_scores(digit[None])[0])
        junk[name] = f"{probability:.0%}: {not_a_digit_reason(ink_features(digit), probability, shape) or 'NOT FLAGGED'}"
    report["garbage"] = junk


def main(argv: list[str] | None = None) -> int:
    """Measure, print, and (with ``--out``) write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=SEED_WEIGHTS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint, device="cpu", reader=read_checkpoint_file)  # the seed's .pth is a torch pickle
    report: dict = {"checkpoint": str(args.checkpoint)}
    training, _ = validation_split(load_split("train"))
    report["far_ranges_measured"] = ranges(feature_table(preprocessed(training.images.numpy())), 0.01, 99.99)
    report["constants_used"] = {
        "FAR_RANGES": not_a_digit.FAR_RANGES,
        "MIN_CONFIDENCE": not_a_digit.MIN_CONFIDENCE,
        "MIN_DIGIT_SCORE": not_a_digit.MIN_DIGIT_SCORE,
    }
    calibration, far_cal = measure_validation(checkpoint, report)
    measure_digits(checkpoint, report)
    measure_non_digits(checkpoint, report, calibration, far_cal)
    measure_redrawn(checkpoint, report)
    measure_garbage(checkpoint, report)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
