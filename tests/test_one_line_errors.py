"""Every failure a user can cause is one line and a non-zero status: permissions, full disks, out-of-range numbers,
empty settings, unprintable file names; and what is on disk stays as it was."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_cnn import files
from mnist_cnn.mnist import raw_folder
from mnist_cnn.model import VGG
from mnist_cnn.results import build_payload, save_checkpoint
from mnist_cnn.tooling.cli import evaluate, predict, train
from mnist_cnn.tooling.cli.args import MAX_SEED, run_cli


def one_line_error(capsys: pytest.CaptureFixture, status: int) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status != 0 and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Path:
    """A one-channel VGG: evaluating it on the 10,000 test images takes a moment."""
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, build_payload(VGG(hidden_units=1), arch="vgg", model_options={"hidden_units": 1}, input_scaling="unit"))
    return path


# --- permissions (the tests run as root, who may read anything: the refusal is simulated where the OS would raise it) ---


def deny(monkeypatch: pytest.MonkeyPatch, method: str, denied: Path) -> None:
    """Make ``Path.<method>`` raise PermissionError for ``denied`` and everything under it."""
    original = getattr(Path, method)

    def guarded(self: Path, *args, **kwargs):  # noqa: ANN202
        if self == denied or denied in self.parents:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, method, guarded)


def test_unreadable_data_folder(data_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = raw_folder(data_copy)
    deny(monkeypatch, "is_file", folder)  # what a folder without search permission does to stat()
    message = one_line_error(
        capsys, run_cli(train.main, ["--smoke", "--quiet", "--data-dir", str(data_copy), "--out", str(tmp_path / "out")])
    )
    assert message.startswith(f"error: cannot read MNIST data at {folder / 'train-images-idx3-ubyte'}: Permission denied")


@pytest.mark.parametrize("name", ["t10k-labels-idx1-ubyte", "t10k-images-idx3-ubyte"])
def test_unreadable_data_file(
    data_copy: Path, tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    path = raw_folder(data_copy) / name
    deny(monkeypatch, "open", path)
    status = run_cli(
        evaluate.main,
        ["--checkpoint", str(tiny_checkpoint), "--data-dir", str(data_copy), "--out", str(tmp_path / "report"), "--no-figures"],
    )
    message = one_line_error(capsys, status)
    assert message.startswith(f"error: cannot read MNIST data at {path}: Permission denied"), message


def test_run_cli_reports_any_os_error_in_one_line(capsys: pytest.CaptureFixture) -> None:
    def main(argv: object) -> int:
        raise PermissionError(errno.EACCES, "Permission denied", "/somewhere/model.pt")

    assert one_line_error(capsys, run_cli(main, [])) == "error: Permission denied: /somewhere/model.pt"


# --- full disks: every write is atomic, nothing half-written, no temporary file left ---


def fail_writes_to(monkeypatch: pytest.MonkeyPatch, name: str, call: str = "write") -> None:
    """Make ``os.write`` (or ``os.fsync``) raise ENOSPC for the temporary file that will become ``name``."""
    original = getattr(os, call)

    def full(fd: int, *args):  # noqa: ANN202
        target = os.readlink(f"/proc/self/fd/{fd}")
        if Path(target).name.startswith(f".{name}.") and target.endswith(".tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(fd, *args)

    monkeypatch.setattr(files.os, call, full)


@pytest.mark.parametrize("call", ["write", "fsync"])
def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    target = tmp_path / "metrics.json"
    target.write_text("old\n")
    fail_writes_to(monkeypatch, "metrics.json", call)
    with pytest.raises(OSError) as raised:
        files.write_json(target, {"new": 1})
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"] and target.read_text() == "old\n"


def test_evaluate_on_a_full_disk_keeps_the_previous_report(
    tiny_checkpoint: Path, tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = tmp_path / "report"
    report.mkdir()
    (report / "metrics.json").write_text('{"test_accuracy": 0.99}\n')
    (report / "per_class_metrics.csv").write_text("digit,precision\n0,0.99\n")
    before = snapshot(report)
    fail_writes_to(monkeypatch, "per_class_metrics.csv")
    message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", str(tiny_checkpoint), "--out", str(report), "--no-figures"]))
    assert message == f"error: No space left on device: {report / 'per_class_metrics.csv'}"
    after = snapshot(report)
    assert after["per_class_metrics.csv"] == before["per_class_metrics.csv"], "the CSV is not emptied"
    assert after["metrics.json"] == before["metrics.json"], "metrics.json is written last: the previous report stays whole"
    assert sorted(after) == ["metrics.json", "per_class_metrics.csv"], "no temporary file left behind"


def test_train_on_a_full_disk_is_one_line(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    fail_writes_to(monkeypatch, "last.pt")
    message = one_line_error(capsys, run_cli(train.main, ["--preset", "fast", "--smoke", "--quiet", "--out", str(out)]))
    assert message == f"error: No space left on device: {out / 'last.pt'}"
    assert list(out.iterdir()) == [], "no checkpoint, no temporary file, no lock left"


# --- numbers and settings ---


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--seed", "99999999999999999999999"], "argument --seed: must be at most 2**63-1"),
        (["--seed", str(MAX_SEED + 1)], "argument --seed: must be at most 2**63-1"),
        (["--seed", "-1"], "argument --seed: must be at least 0"),
        (["--seed", "1e3"], "argument --seed: expected a whole number"),
        (["--lr", "1e39"], "argument --lr: must be at most 1e+06"),
        (["--lr", "inf"], "argument --lr: must be a finite number above 0"),
        (["--lr", "nan"], "argument --lr: must be a finite number above 0"),
        (["--lr", "0"], "argument --lr: must be a finite number above 0"),
        (["--lr", "-0.1"], "argument --lr: must be a finite number above 0"),
    ],
)
def test_out_of_range_numbers(capsys: pytest.CaptureFixture, args: list[str], fragment: str) -> None:
    with pytest.raises(SystemExit) as exited:
        train.build_parser().parse_args(args)
    assert exited.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines


def test_numbers_at_the_limits_are_accepted() -> None:
    args = train.build_parser().parse_args(["--seed", str(MAX_SEED), "--lr", "1e6"])
    assert args.seed == MAX_SEED and args.lr == 1e6
    assert train.build_parser().parse_args(["--seed", "0"]).seed == 0


def test_empty_data_dir_setting_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MNIST_DATA_DIR", "")
    message = one_line_error(capsys, run_cli(train.main, ["--smoke", "--quiet", "--out", str(tmp_path / "a")]))
    assert message.startswith("error: MNIST_DATA_DIR is set but empty")
    message = one_line_error(capsys, run_cli(train.main, ["--smoke", "--quiet", "--data-dir", "", "--out", str(tmp_path / "b")]))
    assert message.startswith("error: the data directory is an empty string")


def test_evaluate_reads_and_checks_only_the_test_files(
    data_copy: Path, tiny_checkpoint: Path, tmp_path: Path, offline: None, capsys: pytest.CaptureFixture
) -> None:
    folder = raw_folder(data_copy)
    (folder / "train-images-idx3-ubyte").write_bytes(b"corrupt")
    (folder / "train-labels-idx1-ubyte").unlink()
    status = run_cli(
        evaluate.main,
        ["--checkpoint", str(tiny_checkpoint), "--data-dir", str(data_copy), "--out", str(tmp_path / "report"), "--no-figures"],
    )
    assert status == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["total"] == 10_000
    message = one_line_error(
        capsys, run_cli(train.main, ["--smoke", "--quiet", "--data-dir", str(data_copy), "--out", str(tmp_path / "out")])
    )
    assert "train-labels-idx1-ubyte" in message, "training still needs (and checks) the training files"


# --- output ---


def test_unprintable_file_names_are_escaped(tmp_path: Path, data_dir: Path) -> None:
    """A name that is not valid UTF-8 is printed with escapes, even where the output encoding is strict."""
    name = os.fsencode(tmp_path) + b"/model-\xff.pt"
    save_checkpoint(
        os.fsdecode(name), build_payload(VGG(hidden_units=1), arch="vgg", model_options={"hidden_units": 1}, input_scaling="unit")
    )
    result = subprocess.run(
        [
            sys.executable.encode(),
            b"-m",
            b"mnist_cnn.evaluate",
            b"--checkpoint",
            name,
            b"--out",
            os.fsencode(tmp_path / "report"),
            b"--no-figures",
        ],
        capture_output=True,
        timeout=300,
        env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"},
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"model-\\xff.pt" in result.stdout and b"Traceback" not in result.stderr  # the byte on disk, as display_name shows it


def test_help_says_each_default_once(capsys: pytest.CaptureFixture) -> None:
    for parser in (train.build_parser(), evaluate.build_parser()):
        text = " ".join(parser.format_help().split())
        for option in text.split("--")[1:]:
            assert option.count("(default:") <= 1, option
    evaluate_help = " ".join(evaluate.build_parser().format_help().split())
    assert "images per forward pass (default: 1000)" in evaluate_help
    assert "(default: None)" not in evaluate_help and "(default: False)" not in evaluate_help


def test_reports_and_metrics_are_created_0644_respecting_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        files.write_json(tmp_path / "metrics.json", {"a": 1})
        assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == 0o644
        os.umask(0o027)
        files.write_json(tmp_path / "group.json", {"a": 1})
        assert (tmp_path / "group.json").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)


def test_train_escapes_the_output_folder_in_its_own_lines(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """An --out holding a terminal escape and a line break can neither recolour the terminal nor forge a line."""
    out = tmp_path / "run\x1b[31m\nforged"
    status = run_cli(train.main, ["--preset", "fast", "--smoke", "--quiet", "--data-dir", str(data_dir), "--out", str(out)])
    printed = capsys.readouterr()
    assert status == 0, printed.err
    saved = [line for line in printed.out.splitlines() if line.startswith("saved ")]
    assert len(saved) == 1 and "\\x1b[31m\\x0aforged/model.pt" in saved[0], printed.out
    assert "\x1b" not in printed.out and not any(line.startswith("forged") for line in printed.out.splitlines())
    assert (out / "model.pt").is_file(), "the folder itself is named as the user asked"


def test_the_interrupted_line_escapes_the_checkpoint_path() -> None:
    from mnist_cnn.errors import TrainingInterrupted

    args = train.build_parser().parse_args(["--out", "x"])
    error = TrainingInterrupted("stopped", epoch=2, checkpoint_path=Path("run\x1b[31m\nforged/last.pt"), checkpoint_epoch=1)
    line = train._interrupted_message(error, args, world_size=1)
    assert "\n" not in line and "\x1b" not in line and "\\x1b[31m\\x0aforged/last.pt" in line


def test_a_model_whose_outputs_overflow_is_refused_by_predict_and_evaluate(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    """Finite weights that overflow to NaN outputs: no "8 (nan%)" and no report of a broken model, one line instead."""
    model = VGG(hidden_units=1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(1e30)
    path = tmp_path / "overflow.pt"
    save_checkpoint(path, build_payload(model, arch="vgg", model_options={"hidden_units": 1}, input_scaling="unit"))
    page = np.full((28, 28), 255, dtype=np.uint8)
    page[5:23, 12:16] = 0  # a 1
    Image.fromarray(page).save(tmp_path / "one.png")
    status = run_cli(predict.main, ["--checkpoint", str(path), str(tmp_path / "one.png")])
    assert "outputs are NaN or infinite for 1 of 1 images" in one_line_error(capsys, status)
    report = ["--data-dir", str(data_dir), "--out", str(tmp_path / "report"), "--no-figures"]
    status = run_cli(evaluate.main, ["--checkpoint", str(path), *report])
    assert "outputs are NaN or infinite for 10,000 of 10,000 images: the model is broken" in one_line_error(capsys, status)
    assert not (tmp_path / "report" / "metrics.json").exists()
