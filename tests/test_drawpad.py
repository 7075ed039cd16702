"""The drawing pad without a browser: drawn pixels -> MNIST-style 28x28 -> the model's top digits, and the widget's messages."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_cnn.checkpoint import LoadedCheckpoint, load_checkpoint
from mnist_cnn.digits import drawpad
from mnist_cnn.digits.drawpad import PAD_SIZE, STROKE_RATIO, DrawingPad, decode_data_url, draw_strokes, pad_message, predict_drawing
from mnist_cnn.errors import ImageError
from mnist_cnn.tooling.safety.safe_load import read_checkpoint_file

SIZE = PAD_SIZE


@pytest.fixture(scope="module")
def seed_model(seed_weights: Path) -> LoadedCheckpoint:
    """The seed project's published weights (test accuracy 0.9782): a trained model without training."""
    return load_checkpoint(seed_weights, reader=read_checkpoint_file)  # a torch pickle: read as the commands read it


def one_stroke() -> list[list[tuple[float, float]]]:
    """A '1' as a hand draws it: one slightly slanted line, top right to bottom left, centred."""
    return [[(SIZE * 0.54, SIZE * 0.18), (SIZE * 0.50, SIZE * 0.50), (SIZE * 0.46, SIZE * 0.82)]]


def zero_loop() -> list[list[tuple[float, float]]]:
    """A '0': an upright oval, closed."""
    t = np.linspace(0, 2 * np.pi, 48)
    return [list(zip(SIZE * (0.5 + 0.2 * np.sin(t)), SIZE * (0.5 - 0.3 * np.cos(t)), strict=True))]


def png_data_url(pixels: np.ndarray, mode: str = "L") -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_draw_strokes_draws_thick_dark_ink_on_white() -> None:
    pixels = draw_strokes(one_stroke())
    assert pixels.shape == (SIZE, SIZE) and pixels.dtype == np.uint8
    assert pixels[0, 0] == 255 and pixels[SIZE // 2, SIZE // 2] == 0
    # across the middle row the ink is about as wide as the stroke
    ink_width = int((pixels[SIZE // 2] < 128).sum())
    assert abs(ink_width - SIZE * STROKE_RATIO) <= 3, ink_width


@pytest.mark.parametrize(("strokes", "digit"), [(one_stroke(), 1), (zero_loop(), 0)], ids=["stroke-1", "loop-0"])
def test_predict_drawing_reads_hand_drawn_digits(seed_model: LoadedCheckpoint, strokes, digit: int) -> None:
    result = predict_drawing(draw_strokes(strokes), seed_model.model, seed_model.input_scaling)
    assert result.ok and result.digit == digit, result.top_k
    assert len(result.top_k) == 3 and result.top_k[0] == (digit, pytest.approx(float(result.probabilities[digit])))
    assert [p for _, p in result.top_k] == sorted((p for _, p in result.top_k), reverse=True)
    assert result.probabilities.shape == (10,) and result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    image = result.image
    assert image.shape == (28, 28) and image.dtype == np.uint8
    # MNIST-style: light ink on black, inside a 20x20 box near the middle
    assert image[:3].max() == 0 and image[-3:].max() == 0 and image.max() > 200


def test_predict_drawing_same_answer_light_on_dark_and_on_any_pad_size(seed_model: LoadedCheckpoint) -> None:
    drawn = draw_strokes(zero_loop())
    inverted = predict_drawing(255 - drawn, seed_model.model, seed_model.input_scaling)
    small = draw_strokes([[(x * 0.4, y * 0.4) for x, y in stroke] for stroke in zero_loop()], size=112)
    assert inverted.digit == 0 and predict_drawing(small, seed_model.model, seed_model.input_scaling).digit == 0


def test_blank_or_dot_gives_a_reason_not_an_exception(seed_model: LoadedCheckpoint) -> None:
    blank = predict_drawing(np.full((SIZE, SIZE), 255, np.uint8), seed_model.model, seed_model.input_scaling)
    assert not blank.ok and blank.digit is None and "no digit" in blank.error and blank.top_k == []
    speck = np.full((SIZE, SIZE), 255, np.uint8)
    speck[100, 100] = 0
    assert "no digit" in predict_drawing(speck, seed_model.model, seed_model.input_scaling).error


def test_top_k_is_clamped(seed_model: LoadedCheckpoint) -> None:
    pixels = draw_strokes(one_stroke())
    assert len(predict_drawing(pixels, seed_model.model, seed_model.input_scaling, top_k=0).top_k) == 1
    assert len(predict_drawing(pixels, seed_model.model, seed_model.input_scaling, top_k=99).top_k) == 10


def test_decode_data_url_round_trips_grayscale_and_transparent_pngs() -> None:
    pixels = draw_strokes(one_stroke())
    assert np.array_equal(decode_data_url(png_data_url(pixels), SIZE), pixels.astype(np.float32))
    # a canvas that was never filled is transparent where nothing was drawn: the ink must still come out dark on light
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., 3] = 255 - pixels
    decoded = decode_data_url(png_data_url(rgba, "RGBA"), SIZE)
    assert decoded[0, 0] > 200 and decoded[SIZE // 2, SIZE // 2] < 50


@pytest.mark.parametrize("url", ["", "data:image/jpeg;base64,AAAA", "data:image/png;base64,!!!", "data:image/png;base64,aGVsbG8="])
def test_decode_data_url_rejects_what_is_not_a_png(url: str) -> None:
    with pytest.raises(ImageError):
        decode_data_url(url, SIZE)


def test_widget_answers_each_drawing_and_clear_in_its_result_trait(seed_model: LoadedCheckpoint) -> None:
    pad = DrawingPad(seed_model.model, seed_model.input_scaling)
    assert pad.size == PAD_SIZE and pad.stroke_width == pytest.approx(PAD_SIZE * STROKE_RATIO)
    assert "export default" in pad._esm and "pointerdown" in pad._esm, "the front end is drawpad.js, read when the class is made"

    pad.drawing = {"seq": 1, "png": png_data_url(draw_strokes(one_stroke()))}
    assert pad.result["seq"] == 1 and pad.result["digit"] == 1 and pad.result["error"] is None
    assert [row["digit"] for row in pad.result["top"]][0] == 1 and len(pad.result["top"]) == 3
    assert len(pad.result["image"]) == 28 * 28 and max(pad.result["image"]) > 200
    assert pad.last is not None and pad.last.digit == 1

    pad.drawing = {"seq": 2, "png": ""}
    cleared = {"seq": 2, "digit": None, "top": [], "image": [], "error": "draw a digit", "not_a_digit": None}
    assert pad.result == cleared and pad.last is None

    pad.drawing = {"seq": 3, "png": "data:image/png;base64,aGVsbG8="}
    assert pad.result["seq"] == 3 and pad.result["digit"] is None and "could not be decoded" in pad.result["error"]

    pad.drawing = {"seq": 4, "png": png_data_url(draw_strokes(zero_loop()))}
    assert pad.result["digit"] == 0


def test_widget_classify_shows_an_array_drawn_elsewhere(seed_model: LoadedCheckpoint) -> None:
    pad = DrawingPad(seed_model.model, seed_model.input_scaling, top_k=2, size=200)
    assert pad.stroke_width == pytest.approx(200 * STROKE_RATIO)
    result = pad.classify(draw_strokes(zero_loop()), seq=7)
    assert result.digit == 0 and pad.result["seq"] == 7 and len(pad.result["top"]) == 2


def test_the_pad_flags_a_drawing_unlike_any_digit_and_passes_a_digit(seed_weights: Path) -> None:
    """The pad applies the same "not a digit?" rule as ``predict``; the answer stays, with the reason beside it."""
    checkpoint = load_checkpoint(seed_weights, reader=read_checkpoint_file)
    blob = np.full((PAD_SIZE, PAD_SIZE), 255, dtype=np.uint8)
    blob[80:200, 90:190] = 0  # a filled block of ink
    flagged = predict_drawing(blob, checkpoint.model, checkpoint.input_scaling)
    assert flagged.ok and flagged.not_a_digit and "MNIST digits" in flagged.not_a_digit
    assert pad_message(flagged, 3)["not_a_digit"] == flagged.not_a_digit
    line = draw_strokes([[(PAD_SIZE * 0.54, PAD_SIZE * 0.18), (PAD_SIZE * 0.5, PAD_SIZE * 0.5), (PAD_SIZE * 0.46, PAD_SIZE * 0.82)]])
    digit = predict_drawing(line, checkpoint.model, checkpoint.input_scaling)
    assert digit.digit == 1 and digit.not_a_digit is None
    assert "result.not_a_digit" in (Path(drawpad.__file__).with_name("drawpad.js")).read_text(), "the front end shows it"
