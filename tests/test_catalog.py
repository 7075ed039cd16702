"""Runs side by side: the table of models/*/metrics.json, learning curves, and ``python -m mnist_cnn.compare``."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from wcwidth import wcswidth

from mnist_cnn import MODELS_DIR
from mnist_cnn.model import build_model
from mnist_cnn.results import build_payload, save_checkpoint
from mnist_cnn.tooling.cli import compare
from mnist_cnn.tooling.cli.args import run_cli
from mnist_cnn.tooling.cli.catalog import (
    COLUMNS,
    CURVE_COLUMNS,
    OLD_FORMAT_NOTE,
    _read_metrics_json,
    find_runs,
    format_table,
    learning_curves,
    runs_table,
)

SRC = Path(__file__).resolve().parents[1] / "src"


def new_format(seed: int = 1, val: tuple[float, ...] = (0.95, 0.98, 0.99)) -> dict:
    """metrics.json as results.save_run writes it with the validation split."""
    epochs = len(val)
    return {
        "preset": "fast",
        "seed": seed,
        "epochs": epochs,
        "val_accuracy": val[-1],
        "val_loss": 0.05,
        "test_accuracy": 0.9901,
        "test_loss": 0.04,
        "train_seconds": 2.5,
        "device": "cpu",
        "precision": "bf16-autocast",
        "config": {"preset": "fast", "lr": 0.01, "batch_size": 256, "epochs": epochs, "optimizer": "adam", "seed": seed},
        "history": {
            "epoch": list(range(1, epochs + 1)),
            "train_loss": [0.5, 0.2, 0.1][:epochs],
            "train_acc": [0.9, 0.95, 0.97][:epochs],
            "val_loss": [0.2, 0.1, 0.05][:epochs],
            "val_acc": list(val),
            "seconds": [1.0] * epochs,
        },
        "step_history": [{"step": 10, "epoch": 1, "train_loss": 0.9, "lr": 0.001}],
    }


def old_format() -> dict:
    """metrics.json as this project wrote it before the validation split: test_* in history, no val_accuracy."""
    return {
        "preset": "default",
        "epochs": 2,
        "test_accuracy": 0.9947,
        "test_loss": 0.03,
        "train_accuracy": 0.99,
        "train_loss": 0.1,
        "train_seconds": 26.7,
        "load_seconds": 0.2,
        "device": "cpu",
        "precision": "fp32",
        "seed": 42,
        "config": {"preset": "default", "lr": 0.2, "batch_size": 128, "epochs": 2, "seed": 42},
        "history": {
            "epoch": [1, 2],
            "train_loss": [0.3, 0.1],
            "train_acc": [0.93, 0.99],
            "test_loss": [0.05, 0.03],
            "test_acc": [0.985, 0.9947],
            "seconds": [13.0, 13.7],
        },
    }


def write_run(root: Path, name: str, metrics: dict | str | None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    if metrics is not None:
        (folder / "metrics.json").write_text(metrics if isinstance(metrics, str) else json.dumps(metrics))
    return folder


def save_small_checkpoint(path: Path, *, epoch: int, planned: int) -> None:
    """A real (tiny) resumable checkpoint as fit() writes it after ``epoch`` of ``planned`` epochs."""
    model = build_model("vgg", hidden_units=2)
    payload = build_payload(
        model,
        arch="vgg",
        model_options={"hidden_units": 2},
        input_scaling="unit",
        config={"preset": "seed", "lr": 0.01, "batch_size": 32, "epochs": planned, "seed": 7},
        history={
            "epoch": list(range(1, epoch + 1)),
            "train_loss": [1.0] * epoch,
            "train_acc": [0.5] * epoch,
            "test_loss": [0.9] * epoch,
            "test_acc": [0.6] * epoch,
            "seconds": [3.0] * epoch,
        },
        metrics={"preset": "seed", "seed": 7, "test_accuracy": 0.6, "train_seconds": 3.0 * epoch, "device": "cpu", "precision": "fp32"},
        training_state={"epoch": epoch},
    )
    save_checkpoint(path, payload)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A models folder with every kind of run the table must cope with."""
    root = tmp_path / "models"
    write_run(root, "fast-1", new_format(1))
    write_run(root, "fast-2", new_format(2, val=(0.96, 0.985, 0.9925)))
    write_run(root, "default", old_format())
    write_run(root, "corrupt", '{"preset": "fast", "seed": ')
    write_run(root, "a-list", "[1, 2, 3]")
    (write_run(root, "weights-only", None) / "model.pt").write_bytes(b"not a checkpoint")
    save_small_checkpoint(write_run(root, "stopped", None) / "last.pt", epoch=2, planned=5)
    weird = new_format(3)
    weird.update(seed="three", train_seconds=float("nan"), device=["cpu"], config="lr 0.1", history={"epoch": "1"})
    write_run(root, "weird-types", weird)
    smoke = new_format(4, val=(0.5,))
    smoke["config"]["train_size"] = 2000
    write_run(root, "smoke", smoke)
    write_run(root, "not-a-run", None)  # an empty folder
    (root / "notes.txt").write_text("a file, not a run")
    return root


def test_every_run_folder_becomes_a_row_and_nothing_raises(models: Path) -> None:
    table = runs_table(models)
    assert list(table.columns) == list(COLUMNS)
    assert list(table["run"]) == ["a-list", "corrupt", "default", "fast-1", "fast-2", "smoke", "stopped", "weights-only", "weird-types"]
    assert [p.name for p in find_runs(models)] == list(table["run"])


def test_new_format_row(models: Path) -> None:
    row = runs_table(models).set_index("run").loc["fast-2"]
    assert (row["preset"], row["seed"], row["epochs"], row["batch_size"], row["lr"]) == ("fast", 2, 3, 256, 0.01)
    assert (row["val_accuracy"], row["test_accuracy"], row["train_seconds"]) == (0.9925, 0.9901, 2.5)
    assert (row["device"], row["precision"], row["note"]) == ("cpu", "bf16-autocast", "")


def test_old_format_row_has_no_validation_accuracy_and_says_why(models: Path) -> None:
    row = runs_table(models).set_index("run").loc["default"]
    assert pd.isna(row["val_accuracy"]) and row["test_accuracy"] == 0.9947 and row["note"] == OLD_FORMAT_NOTE
    assert (row["preset"], row["seed"], row["epochs"], row["batch_size"], row["lr"]) == ("default", 42, 2, 128, 0.2)


def test_corrupt_and_missing_files_keep_a_row_with_a_note(models: Path) -> None:
    table = runs_table(models).set_index("run")
    assert table.loc["corrupt", "note"] == "metrics.json corrupt (invalid JSON at line 1)"
    assert table.loc["a-list", "note"] == "metrics.json corrupt (a JSON list, not an object)"
    assert table.loc["weights-only", "note"] == "no metrics.json; model.pt unreadable"
    for run in ("corrupt", "a-list", "weights-only"):
        assert table.loc[run, ["preset", "seed", "test_accuracy"]].isna().all()


def test_runs_on_a_subset_say_so(models: Path) -> None:
    row = runs_table(models).set_index("run").loc["smoke"]
    assert row["note"] == "trained on 2,000 images only" and row["val_accuracy"] == 0.5 and row["epochs"] == 1


def test_unfinished_run_is_read_from_its_last_checkpoint(models: Path) -> None:
    row = runs_table(models).set_index("run").loc["stopped"]
    assert (row["preset"], row["seed"], row["epochs"], row["batch_size"], row["test_accuracy"]) == ("seed", 7, 2, 32, 0.6)
    assert row["note"] == f"no metrics.json; unfinished: last.pt after epoch 2 of 5; {OLD_FORMAT_NOTE}"


def test_values_of_the_wrong_type_are_left_out(models: Path) -> None:
    row = runs_table(models).set_index("run").loc["weird-types"]
    assert pd.isna(row["seed"]) and pd.isna(row["train_seconds"]) and pd.isna(row["device"]) and pd.isna(row["lr"])
    assert row["val_accuracy"] == 0.99 and "no configuration recorded" in row["note"]


def test_missing_or_empty_models_folder_gives_an_empty_table(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    for folder in (tmp_path / "absent", tmp_path, tmp_path / "a-file"):
        table = runs_table(folder)
        assert table.empty and list(table.columns) == list(COLUMNS)


def test_learning_curves_use_validation_accuracy_else_test(models: Path) -> None:
    curves = learning_curves(models)
    assert list(curves.columns) == list(CURVE_COLUMNS)
    assert sorted(curves["run"].unique()) == ["default", "fast-1", "fast-2", "smoke", "stopped"]
    fast = curves[curves["run"] == "fast-2"]
    assert list(fast["epoch"]) == [1, 2, 3] and list(fast["eval_acc"]) == [0.96, 0.985, 0.9925] and set(fast["eval_split"]) == {"val"}
    old = curves[curves["run"] == "default"]
    assert list(old["eval_acc"]) == [0.985, 0.9947] and set(old["eval_split"]) == {"test"}
    assert list(learning_curves(models, runs=["fast-1"])["run"].unique()) == ["fast-1"]


def run_compare(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "mnist_cnn.compare", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_compare_cli_prints_the_table(models: Path, tmp_path: Path) -> None:
    done = run_compare("--models-dir", str(models), "--sort", "val_accuracy", "--csv", str(tmp_path / "out" / "runs.csv"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:4] == ["run", "preset", "seed", "epochs"]
    # best validation accuracy first, runs without one after
    assert lines[1].split()[:2] == ["fast-2", "fast"] and "0.9925" in lines[1] and "0.9901" in lines[1]
    assert lines[2].split()[0] == "fast-1"
    assert any(line.startswith("corrupt ") and "metrics.json corrupt" in line for line in lines)
    assert any(line.startswith("default ") and "0.9947" in line and "older run" in line for line in lines)
    assert lines[-1] == f"wrote {tmp_path / 'out' / 'runs.csv'}"
    assert len(pd.read_csv(tmp_path / "out" / "runs.csv")) == 9


def test_compare_cli_errors_are_one_line(tmp_path: Path) -> None:
    missing = run_compare("--models-dir", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "is not a folder" in missing.stderr
    bad = run_compare("--sort", "colour", cwd=tmp_path)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr and "Traceback" not in bad.stderr
    empty = run_compare("--models-dir", str(tmp_path), cwd=tmp_path)
    assert empty.returncode == 0 and empty.stdout.startswith("no runs under")


def test_compare_help_states_defaults(tmp_path: Path) -> None:
    done = run_compare("--help", cwd=tmp_path)
    assert done.returncode == 0 and "--models-dir" in done.stdout and "(default: run)" in done.stdout
    assert f"(default: {MODELS_DIR})" in done.stdout  # the artifacts root's models/ (tests point it at build/test-artifacts)


# --- One bad folder never takes the table down ---

#: (folder, metrics.json text, the row's note): before, each ended compare in a traceback.
HOSTILE_METRICS = [
    ("digits-400", '{"seed": ' + "9" * 400 + ', "epochs": ' + "9" * 400 + ', "lr": ' + "9" * 400 + ', "test_accuracy": 0.9}', None),
    ("digits-5001", '{"seed": ' + "9" * 5001 + "}", "metrics.json corrupt (a number too long to read)"),
    ("deep-100000", "[" * 100_000 + "]" * 100_000, "metrics.json corrupt (nested too deeply to read)"),
    ("float-epochs", '{"epochs": 1e300, "seed": 1e300, "config": {"batch_size": -1e300}, "test_accuracy": 0.9}', None),
]


@pytest.fixture
def hostile_models(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    write_run(root, "fine", new_format(1))
    for name, text, _ in HOSTILE_METRICS:
        write_run(root, name, text)
    return root


def test_each_bad_metrics_file_gets_its_own_row_with_a_note(hostile_models: Path) -> None:
    table = runs_table(hostile_models).set_index("run")
    assert len(table) == 1 + len(HOSTILE_METRICS) and table.loc["fine", "test_accuracy"] == 0.9901
    for name, _, note in HOSTILE_METRICS:
        row = table.loc[name]
        assert pd.isna(row["seed"]) and pd.isna(row["lr"]) and pd.isna(row["epochs"]) and pd.isna(row["batch_size"]), name
        if note is not None:
            assert row["note"] == note
    assert table.loc["digits-400", "test_accuracy"] == 0.9  # what can be read still is
    assert learning_curves(hostile_models)["run"].unique().tolist() == ["fine"]


def test_compare_prints_the_table_despite_bad_folders(hostile_models: Path, tmp_path: Path) -> None:
    done = run_compare("--models-dir", str(hostile_models), "--csv", str(tmp_path / "runs.csv"), cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stdout.splitlines()) == 1 + 1 + len(HOSTILE_METRICS) + 1  # header, rows, "wrote ..."


def test_run_names_with_escapes_and_line_breaks_print_as_one_row(tmp_path: Path) -> None:
    root = tmp_path / "models"
    forged = "evil\x1b]0;owned\x07\x1b[2J\r\nfast-9  fast  1"
    write_run(root, forged, new_format(1))
    write_run(root, "plain", new_format(2))
    metrics = new_format(3)
    metrics["device"] = "cpu\x1b[31m\nforged"
    write_run(root, "odd-device", metrics)
    done = run_compare("--models-dir", str(root), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 4 and "\x1b" not in done.stdout and "\r" not in done.stdout
    assert any(line.startswith("evil\\x1b]0;owned\\x07\\x1b[2J\\x0d\\x0afast-9  fast  1 ") for line in lines), lines
    assert any(line.startswith("odd-device ") and "cpu\\x1b[31m\\x0aforged" in line for line in lines), lines


def test_wide_and_combining_run_names_keep_the_columns_aligned(tmp_path: Path) -> None:
    """Columns are measured in terminal cells, not characters: 数字 takes four, e + a combining accent one."""
    root = tmp_path / "models"
    for seed, name in enumerate(["plain", "数字のラン", "cafe\u0301"], start=1):
        write_run(root, name, new_format(seed))
    lines = format_table(runs_table(root)).splitlines()
    starts = {wcswidth(line[: line.index(" fast")]) for line in lines[1:]}
    assert len(lines) == 4 and starts == {wcswidth("数字のラン") + 1}, lines


def test_a_metrics_json_that_is_a_fifo_is_noted_without_waiting(tmp_path: Path) -> None:
    folder = write_run(tmp_path, "run", None)
    os.mkfifo(folder / "metrics.json")
    assert _read_metrics_json(folder / "metrics.json") == (None, "metrics.json unreadable (a FIFO)")


def test_compare_csv_is_replaced_whole_or_not_at_all(models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Before, the CSV was rewritten in place: a full disk left half a table and the old one gone."""
    csv = tmp_path / "runs.csv"
    csv.write_text("the previous table\n")

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    status = run_cli(compare.main, ["--models-dir", str(models), "--csv", str(csv)])
    monkeypatch.undo()
    assert status == 1 and capsys.readouterr().err.strip() == f"error: cannot write {csv}: No space left on device"
    assert csv.read_text() == "the previous table\n" and [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert run_cli(compare.main, ["--models-dir", str(models), "--csv", str(csv)]) == 0
    assert len(pd.read_csv(csv)) == len(runs_table(models))
