"""The drawing pad against hostile messages: huge or bomb PNGs refused from their header, malformed messages shown
in the pad (its ``error`` trait) instead of raised from the trait observer."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from mnist_cnn.checkpoint import LoadedCheckpoint, load_checkpoint
from mnist_cnn.digits.drawpad import MAX_DATA_URL, MAX_SIDE_FACTOR, PAD_SIZE, DrawingPad, decode_data_url, draw_strokes, read_message
from mnist_cnn.errors import ImageError
from mnist_cnn.tooling.safety.safe_load import read_checkpoint_file


@pytest.fixture(scope="module")
def pad(seed_weights: Path) -> DrawingPad:
    """A pad with the seed project's weights."""
    checkpoint: LoadedCheckpoint = load_checkpoint(seed_weights, reader=read_checkpoint_file)  # a torch pickle: as the commands read it
    return DrawingPad(checkpoint.model, checkpoint.input_scaling)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_url(width: int, height: int) -> str:
    """A data URL of a PNG whose header claims ``width`` x ``height`` (1-bit grey), with a few bytes of pixels:
    what a decompression bomb looks like before it is decoded."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    raw = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def drawing_url() -> str:
    buffer = io.BytesIO()
    Image.fromarray(draw_strokes([[(150, 50), (140, 140), (130, 230)]])).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(("width", "height"), [(13000, 13000), (PAD_SIZE * MAX_SIDE_FACTOR + 1, 10), (100_000, 100_000)])
def test_a_png_larger_than_the_pad_is_refused_from_its_header(width: int, height: int) -> None:
    url = png_header_url(width, height)
    assert len(url) < 1000, "the test's PNG is tiny: only its header is large"
    with pytest.raises(ImageError, match=rf"{width}x{height} pixels|decompression-bomb"):
        decode_data_url(url, PAD_SIZE * MAX_SIDE_FACTOR)


def test_a_real_13000_square_png_under_the_character_cap_is_refused_without_decoding() -> None:
    # The tester's case: a white 13000x13000 1-bit PNG compresses to well under MAX_DATA_URL characters.
    buffer = io.BytesIO()
    Image.new("1", (13000, 13000), 1).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    assert len(url) < MAX_DATA_URL
    with pytest.raises(ImageError, match="13000x13000 pixels"):
        decode_data_url(url, PAD_SIZE * MAX_SIDE_FACTOR)


def test_a_drawing_at_the_pads_size_still_decodes() -> None:
    pixels = decode_data_url(drawing_url(), PAD_SIZE * MAX_SIDE_FACTOR)
    assert pixels.shape == (PAD_SIZE, PAD_SIZE) and pixels.min() < 50 and pixels.max() > 200


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ("a string", "not a drawing message"),
        ([1, 2], "not a drawing message"),
        ({"seq": "abc", "png": ""}, "not a number"),
        ({"seq": 1.5, "png": ""}, "not a whole number"),
        ({"seq": float("nan"), "png": ""}, "not a whole number"),
        ({"seq": True, "png": ""}, "not a number"),
        ({"seq": -1, "png": ""}, "out of range"),
        ({"seq": 10**30, "png": ""}, "out of range"),
        ({"seq": 1, "png": 123}, "not a data URL"),
        ({"seq": 1, "png": 0}, "not a data URL"),
        ({"seq": 1, "png": False}, "not a data URL"),
        ({"seq": 1, "png": ["data:image/png;base64,"]}, "not a data URL"),
    ],
)
def test_read_message_refuses_malformed_messages_in_one_line(message: object, why: str) -> None:
    with pytest.raises(ImageError, match=why) as caught:
        read_message(message)
    assert "\n" not in str(caught.value)


def test_read_message_accepts_what_the_front_end_sends() -> None:
    assert read_message({"seq": 3, "png": "data:x"}) == (3, "data:x")
    assert read_message({"seq": 4.0, "png": ""}) == (4, "")
    assert read_message(None) == (0, "")


@pytest.mark.parametrize(
    "message",
    ["a string", {"seq": "abc", "png": "data:image/png;base64,AAAA"}, {"seq": 2, "png": 123}, {"seq": None, "png": ""}],
)
def test_malformed_messages_are_shown_in_the_pad_not_raised(pad: DrawingPad, message: object) -> None:
    pad.drawing = {"seq": 1, "png": drawing_url()}
    before = dict(pad.result)
    assert pad.error == "" and before["digit"] is not None
    pad.drawing = message  # would raise out of the observer into the notebook before
    assert pad.error.startswith("the pad sent"), pad.error
    assert pad.result == before, "an unreadable message leaves the last answer in place"
    pad.drawing = {"seq": 5, "png": drawing_url()}
    assert pad.error == "" and pad.result["seq"] == 5, "the next good message clears the error"


def test_a_bomb_header_from_the_pad_is_answered_with_its_size(pad: DrawingPad) -> None:
    pad.drawing = {"seq": 7, "png": png_header_url(13000, 13000)}
    assert pad.result["seq"] == 7 and pad.result["digit"] is None
    assert "13000x13000 pixels" in pad.result["error"] and pad.last is not None and not pad.last.ok


def test_an_unexpected_failure_is_shown_in_the_pad(pad: DrawingPad, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(pad, "classify", broken)
    pad.drawing = {"seq": 8, "png": drawing_url()}
    assert "RuntimeError: boom" in pad.error


def test_the_front_end_shows_the_error_trait(pad: DrawingPad) -> None:
    assert 'model.on("change:error"' in pad._esm and "problem.textContent" in pad._esm


def test_pad_size_sets_the_limit(seed_weights: Path) -> None:
    checkpoint = load_checkpoint(seed_weights, reader=read_checkpoint_file)
    small = DrawingPad(checkpoint.model, checkpoint.input_scaling, size=100)
    small.drawing = {"seq": 1, "png": drawing_url()}  # 280x280 from a 100 px pad: more than 4x would be refused
    assert small.result["digit"] is not None
    small.drawing = {"seq": 2, "png": png_header_url(401, 401)}
    assert "401x401 pixels" in small.result["error"]
