"""The "not a digit?" rule with a trained model: MNIST digits pass, and what it still lets through is written down."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from mnist_cnn.checkpoint import LoadedCheckpoint, load_checkpoint
from mnist_cnn.data import load_split
from mnist_cnn.inference import classify_digits
from mnist_cnn.not_a_digit import MIN_CONFIDENCE, ink_features, not_a_digit_reason
from mnist_cnn.preprocess import preprocess


@pytest.fixture(scope="module")
def checkpoint(seed_weights: Path) -> LoadedCheckpoint:
    """The seed project's published weights, the model the rule's threshold was chosen with."""
    return load_checkpoint(seed_weights, device="cpu")


def rule(checkpoint: LoadedCheckpoint, pages: list[np.ndarray]) -> list[str | None]:
    """Preprocess each page, classify, and apply the rule."""
    digits = np.stack([preprocess(page).digit for page in pages])
    top = classify_digits(checkpoint.model, checkpoint.input_scaling, digits).max(dim=1).values.numpy()
    return [not_a_digit_reason(ink_features(d), float(p)) for d, p in zip(digits, top, strict=True)]


def rendered(text: str) -> np.ndarray:
    """``text`` in Pillow's built-in font (the same on every machine), dark on white."""
    page = Image.new("L", (160, 160), 255)
    ImageDraw.Draw(page).text((80, 80), text, fill=0, font=ImageFont.load_default(size=100), anchor="mm")
    return np.asarray(page)


def plus() -> np.ndarray:
    page = Image.new("L", (160, 160), 255)
    pen = ImageDraw.Draw(page)
    pen.line([(80, 20), (80, 140)], fill=0, width=12)
    pen.line([(20, 80), (140, 80)], fill=0, width=12)
    return np.asarray(page)


def test_held_apart_mnist_test_digits_pass(checkpoint: LoadedCheckpoint) -> None:
    """The second half of the test set was not used to choose MIN_CONFIDENCE (the benchmark measures 0.32 %)."""
    images = load_split("test").images[5000:6000].numpy()
    flags = rule(checkpoint, list(images))
    assert sum(flag is not None for flag in flags) <= 10, [flag for flag in flags if flag]  # at most 1 %


def test_min_confidence_spends_the_budget_on_the_least_certain_digits(checkpoint: LoadedCheckpoint) -> None:
    """On the 5,000 test digits it was chosen on, the rule flags at most 0.5 %, some of them for low confidence alone."""
    flags = rule(checkpoint, list(load_split("test").images[:5000].numpy()))
    flagged = [flag for flag in flags if flag]
    unsure = [flag for flag in flagged if flag.startswith("the model is unsure")]
    assert len(flagged) <= 25, flagged
    assert unsure, "MIN_CONFIDENCE was chosen so that a few of these digits fall below it"
    assert all(f"at least {MIN_CONFIDENCE:.0%}" in flag for flag in unsure)


@pytest.mark.xfail(strict=True, reason="the network reads these as digits at 92-100 %; no score of it catches them at 0.5 % false alarms")
def test_rendered_letters_symbols_and_a_plus_are_flagged(checkpoint: LoadedCheckpoint) -> None:
    flags = rule(checkpoint, [rendered("A"), rendered("H"), rendered("@"), plus()])
    assert all(flags), flags
