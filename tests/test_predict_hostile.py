"""``predict`` against hostile and clumsy input: memory, one-line errors, garbage, escaped names, bit depth.

Grouped as issue 11 lists the cases: bounded memory (huge and many images), never a traceback (unreadable
folders and files, FIFOs, hostile file names), saying when the answer is garbage (noise, lines), and
high-bit-depth images read from their real range.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import mnist_cnn
from mnist_cnn.checkpoint import LoadedCheckpoint, load_checkpoint
from mnist_cnn.data import load_split
from mnist_cnn.digits.inference import Prediction, classify_digits, format_prediction, predict_files
from mnist_cnn.digits.not_a_digit import FAR_RANGES, MIN_CONFIDENCE, digit_scores, ink_features, not_a_digit_reason
from mnist_cnn.digits.preprocess import preprocess
from mnist_cnn.errors import ImageError
from mnist_cnn.text import display_name
from mnist_cnn.tooling.cli.args import run_cli
from mnist_cnn.tooling.cli.predict import json_entry, main
from mnist_cnn.tooling.cli.sources import prediction_inputs
from mnist_cnn.tooling.cli.stream import iter_predictions
from mnist_cnn.tooling.safety.images import MAX_PIXELS, WORK_SIDE, read_image_file, reduce_for_work
from mnist_cnn.tooling.safety.safe_load import read_checkpoint_file

SEED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "seed" / "mnist_VGG.pth"
SRC = str(Path(mnist_cnn.__file__).parents[1])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> LoadedCheckpoint:
    """The seed project's weights, or a model trained here in seconds when they are absent."""
    if SEED_WEIGHTS.is_file():
        return load_checkpoint(SEED_WEIGHTS, device="cpu", reader=read_checkpoint_file)  # a torch pickle: read as the commands read it
    from mnist_cnn.presets import get_preset
    from mnist_cnn.results import save_run
    from mnist_cnn.runs import RunOptions, fit

    config = get_preset("fast", train_size=20_000, test_size=1_000, bf16=False, channels_last=False)
    model_path, _ = save_run(fit(config, RunOptions(device="cpu", quiet=True)), tmp_path_factory.mktemp("model"))
    return load_checkpoint(model_path)


def draw_digit(size: tuple[int, int], mode: str = "L") -> Image.Image:
    """A dark hand-drawn-like 4 on light paper, strokes ~1/30 of the height."""
    width, height = size
    picture = Image.new("L", size, 235)
    pen = ImageDraw.Draw(picture)
    unit, stroke = height / 10, max(2, height // 30)
    left, top = width / 2 - 2 * unit, height / 2 - 3 * unit
    pen.line([(left + 2.5 * unit, top), (left, top + 4 * unit), (left + 4 * unit, top + 4 * unit)], fill=30, width=stroke, joint="curve")
    pen.line([(left + 3 * unit, top + 2 * unit), (left + 3 * unit, top + 6 * unit)], fill=30, width=stroke)
    return picture.convert(mode)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1", **extra}


def run_predict(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run ``python -m mnist_cnn.predict`` in a subprocess (bytes out), failing the test if it hangs."""
    try:
        return subprocess.run([sys.executable, "-m", "mnist_cnn.predict", *args], capture_output=True, env=_env(**env), timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"predict did not finish in {timeout} s")


#: Runs the command in its argv and writes that child's peak RSS (KiB, from ``os.wait4``) to the file named first.
#: A process started straight from the test process would report at least the test process's own peak: Linux
#: carries the old memory's high-water mark across ``exec``, and pytest here holds torch, data and models. This
#: small launcher holds none of that, and its child starts from the launcher's few megabytes.
_MEASURE = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def peak_rss(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    """Peak RSS (MiB) of one ``predict`` run: that process's own, measured by a small launcher (:data:`_MEASURE`)."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "maxrss"
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(report), sys.executable, "-m", "mnist_cnn.predict", *args], capture_output=True, env=_env()
        )
        peak = int(report.read_text()) / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return peak, done


# --- memory -------------------------------------------------------------------------------------------------


def test_peak_memory_is_flat_in_the_number_of_images(checkpoint, tmp_path):
    """100 one-megapixel PNGs must not take more memory than one (the old code kept ~17 MB per image: 1.7 GB)."""
    source = tmp_path / "page.png"
    draw_digit((1200, 900)).save(source, compress_level=1)
    one, many = tmp_path / "one", tmp_path / "many"
    one.mkdir()
    many.mkdir()
    os.link(source, one / "page_000.png")
    for n in range(100):
        os.link(source, many / f"page_{n:03d}.png")
    common = ("--checkpoint", str(checkpoint.path), "--device", "cpu", "--batch-size", "32")
    peak_one, done_one = peak_rss(*common, str(one))
    peak_many, done_many = peak_rss(*common, str(many))
    assert done_one.returncode == 0 and done_many.returncode == 0, done_many.stderr.decode()
    assert len(done_many.stdout.decode().splitlines()) == 100
    assert peak_many - peak_one < 150, f"peak RSS {peak_one:.0f} MiB for 1 image, {peak_many:.0f} MiB for 100"


def test_large_jpeg_is_reduced_while_decoding(tmp_path):
    path = tmp_path / "photo.jpg"
    draw_digit((3000, 2100), "RGB").save(path, quality=85)
    image = read_image_file(path)
    # draft() decodes at 1/2 scale: the full 6.3 megapixels never exist in memory.
    assert image.size == (1500, 1050) and image.mode == "L"
    assert image.info["source_size"] == (3000, 2100)
    steps = preprocess(image)
    assert steps.source_size == (3000, 2100) and max(steps.grayscale.shape) < 2 * WORK_SIDE


def test_a_large_multi_picture_jpeg_is_decoded_like_a_jpeg(checkpoint, tmp_path):
    """Phones write MPO (a JPEG with more pictures appended); it was refused as "above 64 megapixels" at 9000x8000."""
    picture = draw_digit((9000, 8000))
    assert 9000 * 8000 > MAX_PIXELS
    picture.save(tmp_path / "phone.mpo", "MPO", save_all=True, append_images=[Image.new("L", (900, 800))], quality=80)
    picture.save(tmp_path / "plain.jpg", quality=80)
    del picture
    with Image.open(tmp_path / "phone.mpo") as opened:
        assert opened.format == "MPO" and opened.n_frames == 2
    image = read_image_file(tmp_path / "phone.mpo")
    # draft() decodes the first picture at 1/8 scale: the 72 megapixels never exist in memory.
    assert image.size == (1125, 1000) and image.info["source_size"] == (9000, 8000)
    mpo, jpeg = predict_files(checkpoint, [tmp_path / "phone.mpo", tmp_path / "plain.jpg"], opener=read_image_file)
    assert mpo.ok and jpeg.ok, mpo.error
    assert np.array_equal(mpo.image, jpeg.image) and mpo.digit == jpeg.digit == 4


def test_large_png_is_reduced_before_float_arrays(tmp_path):
    path = tmp_path / "scan.png"
    draw_digit((6000, 4000)).convert("1").save(path)
    image = read_image_file(path)
    assert image.size == (1200, 800)  # reduced by 5 right after decoding
    assert preprocess(image).digit.max() > 200


def test_a_13000_square_one_bit_png_is_refused_in_one_line_without_decoding(checkpoint, tmp_path):
    """75 KB on disk, 169 megapixels: refused from its header (the old code took 4.3 GB decoding it)."""
    path = tmp_path / "bomb.png"
    Image.new("1", (13000, 13000), 1).save(path)
    assert 13000 * 13000 > MAX_PIXELS
    peak, done = peak_rss("--checkpoint", str(checkpoint.path), "--device", "cpu", str(path))
    stderr = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in stderr
    assert f"error: {path}: 13000x13000 pixels is above predict's limit of 64 megapixels" in stderr
    assert peak < 1500, f"{peak:.0f} MiB"  # imports alone take ~800 MiB with torch; decoding it would add 1-4 GB


def test_predictions_stream_in_batches_and_keep_only_the_digit(checkpoint, good_folder, tmp_path):
    read: list[Path] = []

    def paths():
        for path in [tmp_path / "missing.png", *sorted(good_folder.iterdir())]:
            read.append(path)
            yield path

    stream = iter_predictions(checkpoint, paths(), batch_size=2)
    first = next(stream)
    assert not first.ok and len(read) == 1  # an error with nothing ahead of it is reported at once
    second = next(stream)
    assert len(read) == 3  # a batch of two images was read and classified; the last file not yet
    assert second.digit == 4 and second.steps is None and second.image.shape == (28, 28) and second.image.dtype == np.uint8
    assert [r.digit for r in stream] == [4, 4] and len(read) == 4
    kept = predict_files(checkpoint, prediction_inputs([good_folder]), keep_steps=True)[0]
    assert kept.steps is not None and np.array_equal(kept.steps.digit, kept.image)


# --- never a traceback --------------------------------------------------------------------------------------


@pytest.fixture()
def good_folder(tmp_path) -> Path:
    folder = tmp_path / "good"
    folder.mkdir()
    for n in range(3):
        draw_digit((200, 160)).save(folder / f"four_{n}.png")
    return folder


def test_an_unreadable_folder_beside_good_files_is_one_line(checkpoint, good_folder, tmp_path, monkeypatch, capsys):
    # Tests run as root here, where chmod 000 does not stop reading: simulate the refusal the kernel would give.
    locked = tmp_path / "locked"
    locked.mkdir()
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == locked:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    status = run_cli(main, ["--checkpoint", str(checkpoint.path), "--device", "cpu", str(locked), str(good_folder)])
    out, err = capsys.readouterr()
    assert status == 1
    assert len(out.splitlines()) == 3 and all(": 4 (" in line for line in out.splitlines()), out
    assert err.splitlines() == [f"error: {locked}: cannot list this folder (permission denied)", "1 of 4 file(s) could not be classified"]


def test_an_unreadable_file_is_one_line(checkpoint, good_folder, monkeypatch):
    secret = good_folder / "four_1.png"
    real_open = os.open

    def guarded_open(path, flags, *args, **kwargs):
        if Path(path) == secret:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", guarded_open)
    results = predict_files(checkpoint, prediction_inputs([good_folder]), opener=read_image_file)
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error == "permission denied"
    with pytest.raises(ImageError, match="permission denied"):
        read_image_file(secret)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX feature")
def test_a_fifo_is_refused_at_once(checkpoint, good_folder, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    # Nothing ever writes to the FIFO: opening it for reading the ordinary way would wait forever.
    done = run_predict("--checkpoint", str(checkpoint.path), "--device", "cpu", str(fifo), str(good_folder), timeout=120)
    stderr = done.stderr.decode()
    assert done.returncode == 1 and "Traceback" not in stderr
    assert f"error: {fifo}: not a regular file (a pipe, socket or device), refused" in stderr
    assert len(done.stdout.decode().splitlines()) == 3


def test_hostile_file_names_are_printed_escaped(checkpoint, tmp_path):
    """A name with a newline, an escape sequence and bytes that are not UTF-8 prints as one harmless line."""
    folder = tmp_path / "names"
    folder.mkdir()
    forged = b"x.png: 7 (99.9%)   top 3: 7 99.9%\n\x1b[31mred\xff\xfe.png"
    draw_digit((200, 160)).save(os.path.join(os.fsencode(folder), forged), format="PNG")
    draw_digit((200, 160)).save(folder / "ziffer_\u00e4.png")
    # A strict ASCII stdout: the old code died with UnicodeEncodeError on such names.
    done = run_predict("--checkpoint", str(checkpoint.path), "--device", "cpu", str(folder), PYTHONIOENCODING="ascii:strict")
    stdout, stderr = done.stdout.decode("ascii"), done.stderr.decode("ascii")
    assert done.returncode == 0 and stderr == "", stderr
    lines = stdout.splitlines()
    assert len(lines) == 2 and "\x1b" not in stdout
    assert lines[0].startswith(f"{folder}/x.png: 7 (99.9%)   top 3: 7 99.9%\\x0a\\x1b[31mred\\xff\\xfe.png: 4 (")
    assert lines[1].startswith(f"{folder}/ziffer_\\xe4.png: 4 (")


def test_hostile_file_names_are_escaped_in_json(checkpoint, tmp_path, capsys):
    folder = tmp_path / "names"
    folder.mkdir()
    draw_digit((200, 160)).save(os.path.join(os.fsencode(folder), b"x.png\n\x1b[31mred\xff.png"), format="PNG")
    draw_digit((200, 160)).save(folder / "ziffer_\u00e4.png")
    assert run_cli(main, ["--checkpoint", str(checkpoint.path), "--device", "cpu", str(folder), "--json"]) == 0
    out = capsys.readouterr().out
    assert out.isascii() and len(out.splitlines()) == 4  # "[", one object per line, "]"
    entries = json.loads(out)
    assert entries[0]["file"] == f"{folder}/x.png\\x0a\\x1b[31mred\\xff.png"
    assert entries[1]["file"] == f"{folder}/ziffer_\u00e4.png" and entries[1]["digit"] == 4


OSC = "\x1b]0;title\x07"  # sets the terminal's title; BEL ends it


def test_names_with_a_newline_or_an_osc_sequence_are_escaped_everywhere(checkpoint, tmp_path, capsys):
    folder = tmp_path / f"dir{OSC}\nname"
    folder.mkdir()
    draw_digit((200, 160)).save(folder / f"good{OSC}.png")
    (folder / f"bad{OSC}\n.png").write_bytes(b"not an image")
    (tmp_path / f"empty{OSC}").mkdir()
    arguments = [str(folder), str(tmp_path / f"missing{OSC}.png"), str(tmp_path / f"empty{OSC}")]
    assert run_cli(main, ["--checkpoint", str(checkpoint.path), "--device", "cpu", *arguments]) == 1
    out, err = capsys.readouterr()
    for text in (out, err):
        assert "\x1b" not in text and "\x07" not in text
    assert len(out.splitlines()) == 1 and out.startswith(f"{tmp_path}/dir\\x1b]0;title\\x07\\x0aname/good\\x1b]0;title\\x07.png: 4 (")
    assert err.splitlines() == [
        f"error: {tmp_path}/dir\\x1b]0;title\\x07\\x0aname/bad\\x1b]0;title\\x07\\x0a.png: not an image file Pillow can read",
        f"error: {tmp_path}/missing\\x1b]0;title\\x07.png: file not found",
        f"error: {tmp_path}/empty\\x1b]0;title\\x07: a directory with no image files (.png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp)",
        "3 of 4 file(s) could not be classified",
    ]


@pytest.mark.parametrize("content", [None, b"nonsense"])
def test_a_checkpoint_path_with_an_osc_sequence_is_escaped_in_its_error(tmp_path, capsys, content):
    path = tmp_path / f"model{OSC}\n.pth"
    if content is not None:
        path.write_bytes(content)
    assert run_cli(main, ["--checkpoint", str(path), "--device", "cpu", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and len(err.splitlines()) == 1
    assert err.startswith("error: ") and "model\\x1b]0;title\\x07\\x0a.pth" in err


def test_json_escapes_the_error_as_well_as_the_file():
    entry = json_entry(Prediction(file=f"a{OSC}.png", error=f"unreadable image (bad{OSC}\nthing)"))
    assert entry["file"] == "a\\x1b]0;title\\x07.png"
    assert entry["error"] == "unreadable image (bad\\x1b]0;title\\x07\\x0athing)"


def test_display_name_escapes_every_unprintable_character():
    assert display_name("plain/name.png") == "plain/name.png"
    assert display_name("a\nb\rc\td\x1b[0m\x7f\u202egnp.exe") == "a\\x0ab\\x0dc\\x09d\\x1b[0m\\x7f\\u202egnp.exe"
    assert display_name(os.fsdecode(b"caf\xc3\xa9_\xff.png")) == "caf\u00e9_\\xff.png"
    assert display_name("lone\ud800surrogate") == "lone\\ud800surrogate"  # not a name from disk, still printable
    assert "\n" not in format_prediction(Prediction(file="a\nb", error="bad\nthing"))


# --- garbage ------------------------------------------------------------------------------------------------


def test_noise_and_a_one_pixel_line_are_flagged(checkpoint, tmp_path, capsys):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (200, 200), dtype=np.uint8)).save(tmp_path / "noise.png")
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / "noise28.png")
    page = np.full((200, 300), 255, np.uint8)
    page[100, 20:280] = 0
    Image.fromarray(page).save(tmp_path / "line.png")
    page = np.full((300, 200), 255, np.uint8)
    page[20:280, 100] = 0
    Image.fromarray(page).save(tmp_path / "line_down.png")
    results = predict_files(checkpoint, prediction_inputs([tmp_path]))
    assert all(r.ok for r in results)
    assert all(r.not_a_digit for r in results), [(r.file, r.probability, r.not_a_digit) for r in results]
    assert "not a digit? " in format_prediction(results[0])
    assert run_cli(main, ["--checkpoint", str(checkpoint.path), "--device", "cpu", str(tmp_path / "line.png"), "--json"]) == 0
    entry = json.loads(capsys.readouterr().out)[0]
    assert entry["not_a_digit"] is True and "px wide" in entry["not_a_digit_reason"]


def test_few_mnist_test_digits_are_flagged(checkpoint):
    """The false-alarm rate on MNIST test digits stays small (benchmarks/not_a_digit.py measures all 10,000)."""
    test = load_split("test")
    digits = np.stack([preprocess(image).digit for image in test.images[:2000].numpy()])
    top = classify_digits(checkpoint.model, checkpoint.input_scaling, digits).max(dim=1).values.numpy()
    shapes = digit_scores(digits)
    flags = [not_a_digit_reason(ink_features(d), float(p), s) for d, p, s in zip(digits, top, shapes, strict=True)]
    assert sum(flag is not None for flag in flags) <= 20, [f for f in flags if f]  # at most 1 %


def test_the_rule_flags_far_ink_or_low_confidence_each_alone():
    typical = {"ink": 100.0, "solid": 100.0, "fill": 0.3, "pieces": 1.0, "width": 12.0}
    assert not_a_digit_reason(typical, 0.99) is None
    assert not_a_digit_reason(typical, MIN_CONFIDENCE) is None
    # Digit-like ink no longer excuses a low confidence: inputs at 39-55 % used to pass.
    assert not_a_digit_reason(typical, MIN_CONFIDENCE - 0.01) == (
        f"the model is unsure ({MIN_CONFIDENCE - 0.01:.0%}; MNIST digits with usual ink get at least {MIN_CONFIDENCE:.0%})"
    )
    far = dict(typical, width=1.0)
    assert not_a_digit_reason(far, 0.999) == f"1 px wide (MNIST digits: at least {FAR_RANGES['width'][0]:.0f})"


# --- bit depth ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_high_bit_depth_pngs_are_read_from_their_real_range(tmp_path, bits):
    reference = preprocess(draw_digit((200, 160))).digit.astype(np.float64).ravel()
    levels = np.asarray(draw_digit((200, 160)), np.float64) / 255.0 * (2**bits - 1)
    path = tmp_path / f"scan{bits}.png"
    Image.fromarray(np.round(levels).astype(np.uint16)).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    digit = preprocess(path).digit.astype(np.float64).ravel()
    assert np.corrcoef(digit, reference)[0, 1] > 0.95


def test_32_bit_integer_and_float_images_use_their_range():
    reference = preprocess(draw_digit((200, 160))).digit.astype(np.float64).ravel()
    gray = np.asarray(draw_digit((200, 160)), np.float64) / 255.0
    for image in (Image.fromarray(np.round(gray * 4095).astype(np.int32), "I"), Image.fromarray(gray.astype(np.float32), "F")):
        digit = preprocess(image).digit.astype(np.float64).ravel()
        assert np.corrcoef(digit, reference)[0, 1] > 0.95, image.mode


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads chmod-000 files; the tests above simulate it")
def test_real_permission_errors_are_one_line_each(checkpoint, good_folder, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    secret = good_folder / "four_1.png"
    locked.chmod(0)
    secret.chmod(0)
    try:
        results = predict_files(checkpoint, prediction_inputs([locked, good_folder]), opener=read_image_file)
    finally:
        locked.chmod(0o755)
        secret.chmod(0o644)
    assert [r.ok for r in results] == [False, True, False, True]
    assert results[0].error == "cannot list this folder (permission denied)" and results[2].error == "permission denied"


def test_large_rotated_and_cmyk_jpegs_reach_the_same_digit(tmp_path):
    """EXIF rotation is applied after the reduced-scale decoding, and CMYK JPEGs are reduced too."""
    upright = draw_digit((2400, 3200))
    reference = preprocess(reduce_for_work(upright)).digit.astype(np.float64).ravel()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned; "rotate 90 degrees clockwise to view"
    upright.rotate(90, expand=True).save(tmp_path / "rotated.jpg", quality=90, exif=exif)
    upright.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=90)
    for name in ("rotated.jpg", "cmyk.jpg"):
        steps = preprocess(read_image_file(tmp_path / name))
        assert max(steps.grayscale.shape) < 2 * WORK_SIDE, name
        assert steps.grayscale.shape[0] > steps.grayscale.shape[1], name  # upright: taller than wide
        assert np.corrcoef(steps.digit.astype(np.float64).ravel(), reference)[0, 1] > 0.9, name
