"""The "not a digit?" rule with a trained model: MNIST digits pass; letters, symbols and a plus are caught by the detector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from safetensors.torch import load_file, save_file
from sklearn.datasets import load_digits

from mnist_cnn.checkpoint import LoadedCheckpoint, load_checkpoint, read_state_dict
from mnist_cnn.data import load_split, validation_split
from mnist_cnn.digits.inference import classify_digits, predict_files
from mnist_cnn.digits.not_a_digit import DETECTOR_WEIGHTS, MIN_DIGIT_SCORE, DigitDetector, digit_scores, ink_features, not_a_digit_reason
from mnist_cnn.digits.preprocess import preprocess
from mnist_cnn.errors import CheckpointError
from mnist_cnn.tooling.safety.safe_load import read_checkpoint_file


@pytest.fixture(scope="module")
def checkpoint(seed_weights: Path) -> LoadedCheckpoint:
    """The seed project's published weights, the model the rule's threshold was chosen with."""
    return load_checkpoint(seed_weights, device="cpu", reader=read_checkpoint_file)  # a torch pickle: read as the commands read it


def rule(checkpoint: LoadedCheckpoint, pages: list[np.ndarray], detector: bool = True) -> list[str | None]:
    """Preprocess each page, classify, and apply the rule (``detector=False``: the rule without the detector)."""
    digits = np.stack([preprocess(page).digit for page in pages])
    top = classify_digits(checkpoint.model, checkpoint.input_scaling, digits).max(dim=1).values.numpy()
    shapes = digit_scores(digits) if detector else [None] * len(digits)
    return [not_a_digit_reason(ink_features(d), float(p), s) for d, p, s in zip(digits, top, shapes, strict=True)]


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
    """The second half of the test set was not used to choose the thresholds (the benchmark measures all 5,000)."""
    images = load_split("test").images[5000:6000].numpy()
    flags = rule(checkpoint, list(images))
    assert sum(flag is not None for flag in flags) <= 10, [flag for flag in flags if flag]  # at most 1 %


def test_the_thresholds_spend_at_most_the_budget_on_the_digits_they_were_chosen_on(checkpoint: LoadedCheckpoint) -> None:
    """On the 5,000 validation digits MIN_DIGIT_SCORE was chosen on, the rule flags at most 0.25 %, some by the detector."""
    _, validation = validation_split(load_split("train"))
    flags = rule(checkpoint, list(validation.images.numpy()))
    flagged = [flag for flag in flags if flag]
    by_detector = [flag for flag in flagged if flag.startswith("shaped unlike MNIST digits")]
    assert len(flagged) <= 12, flagged
    assert by_detector, "MIN_DIGIT_SCORE was chosen so that the detector spends what the ink ranges leave of the budget"
    assert all(f"below {MIN_DIGIT_SCORE:.2f}" in flag for flag in by_detector)


def test_scikit_learn_handwritten_digits_pass(checkpoint: LoadedCheckpoint) -> None:
    """Real handwriting from other writers, scanned at 8x8 (1,797 digits): the rule flags at most 2 % of them."""
    scans = load_digits()
    flags = rule(checkpoint, list((scans.images / 16 * 255).round().astype(np.uint8)))
    assert sum(flag is not None for flag in flags) <= 0.02 * len(flags), [flag for flag in flags if flag]


def test_the_detector_flags_symbols_the_network_calls_digits(checkpoint: LoadedCheckpoint) -> None:
    """m, ~, * and # are kinds the detector never saw in training (@ it did); without it all five pass as digits."""
    pages = [rendered(char) for char in "m~*#@"]
    assert not any(rule(checkpoint, pages, detector=False))
    flags = rule(checkpoint, pages)
    assert all(flag and flag.startswith("shaped unlike MNIST digits") for flag in flags), flags


def test_the_detector_flags_straight_stroke_kinds_it_never_saw(checkpoint: LoadedCheckpoint) -> None:
    """H, T, U, + and a drawn plus: kinds held apart from the detector's training; without it the rule passes all five."""
    pages = [rendered(char) for char in "HTU+"] + [plus()]
    assert not any(rule(checkpoint, pages, detector=False))
    flags = rule(checkpoint, pages)
    assert all(flag and flag.startswith("shaped unlike MNIST digits") for flag in flags), flags


@pytest.mark.xfail(strict=True, reason="A, = and > are held-apart kinds the rule still misses most often (see docs/not-a-digit.md)")
def test_rendered_letters_and_symbols_the_rule_still_misses(checkpoint: LoadedCheckpoint) -> None:
    flags = rule(checkpoint, [rendered("A"), rendered("="), rendered(">")])
    assert all(flags), flags


def test_predict_reports_what_the_detector_finds(checkpoint: LoadedCheckpoint, tmp_path: Path) -> None:
    Image.fromarray(rendered("m")).save(tmp_path / "m.png")
    [result] = predict_files(checkpoint, [tmp_path / "m.png"])
    assert result.ok and result.not_a_digit and result.not_a_digit.startswith("shaped unlike MNIST digits")


def test_the_detector_weights_are_a_small_state_dict() -> None:
    """Shipped as package data: a plain safetensors file, loaded without unpickling anything."""
    state = load_file(DETECTOR_WEIGHTS)
    DigitDetector().load_state_dict(state)
    assert DETECTOR_WEIGHTS.suffix == ".safetensors" and DETECTOR_WEIGHTS.read_bytes()[8:9] == b"{"
    assert sum(value.numel() for value in state.values()) < 120_000
    assert DETECTOR_WEIGHTS.stat().st_size < 480 * 1024


def test_broken_detector_weights_are_refused_in_one_line(tmp_path: Path) -> None:
    state = load_file(DETECTOR_WEIGHTS)
    state["head.weight"][0, 3] = float("nan")
    save_file(state, tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match=r"broken.safetensors holds NaN or infinite values in head.weight: the model is broken"):
        read_state_dict(tmp_path / "broken.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(DETECTOR_WEIGHTS.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.safetensors is not a readable PyTorch checkpoint") as caught:
        read_state_dict(tmp_path / "cut.safetensors")
    assert "\n" not in str(caught.value)


def test_the_detector_branch_of_the_reason() -> None:
    typical = {"ink": 100.0, "solid": 100.0, "fill": 0.3, "pieces": 1.0, "width": 12.0}
    assert not_a_digit_reason(typical, 0.99, MIN_DIGIT_SCORE) is None
    assert not_a_digit_reason(typical, 0.99, None) is None
    reason = not_a_digit_reason(typical, 0.99, MIN_DIGIT_SCORE - 0.5)
    assert reason == f"shaped unlike MNIST digits (digit detector score {MIN_DIGIT_SCORE - 0.5:.2f}, below {MIN_DIGIT_SCORE:.2f})"
