"""Every training run under ``models/`` as a table: one row per run (:func:`runs_table`), or per run and epoch.

A run is a folder ``models/<run>/`` written by ``python -m mnist_cnn.train`` (or :func:`mnist_cnn.results.save_run`):
``metrics.json`` holds the final numbers, the configuration and the per-epoch history. Runs from older versions (no
validation split: ``test_loss``/``test_acc`` per epoch), unfinished runs (only ``last.pt``) and folders with missing
or corrupt files still get a row with what is known and a note saying what is missing; reading them never raises.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
from wcwidth import wcswidth

from mnist_cnn import LAST_FILE, MODEL_FILE, MODELS_DIR
from mnist_cnn.checks import read_number, whole_float_as_int
from mnist_cnn.text import display_name, escape_text
from mnist_cnn.tooling.safety.regular_files import FileTooLarge, NotARegularFile, read_regular

#: The table's columns, in order, with their pandas types.
DTYPES = {
    "run": "string",
    "preset": "string",
    **dict.fromkeys(("seed", "epochs", "batch_size"), "Int64"),
    **dict.fromkeys(("lr", "val_accuracy", "test_accuracy", "train_seconds"), "float64"),
    **dict.fromkeys(("device", "precision", "note"), "string"),
}
COLUMNS = tuple(DTYPES)
#: Columns of :func:`learning_curves`.
CURVE_COLUMNS = ("run", "epoch", "train_loss", "train_acc", "eval_split", "eval_loss", "eval_acc")
#: Files that make a folder a run.
RUN_FILES = ("metrics.json", MODEL_FILE, LAST_FILE)
OLD_FORMAT_NOTE = "older run: no validation split"
#: The largest metrics.json read: a real one is a few hundred KB (the step history of a long run).
MAX_METRICS_BYTES = 64 << 20
#: Whole numbers beyond this are not a count of anything (epochs, seeds, batch sizes) and overflow the table's Int64.
MAX_INTEGER = 2**53
#: Text cells longer than this are cut when printed.
MAX_CELL_CHARS = 60


def _integer(value: Any) -> int | None:
    """A whole number (``5.0`` counts) of at most :data:`MAX_INTEGER`, or ``None`` (``1e300`` is not an epoch count)."""
    return read_number(whole_float_as_int(value), whole=True, low=-MAX_INTEGER, high=MAX_INTEGER)


def _text(value: Any) -> str | None:
    # bools and 400-digit numbers are no names
    return str(value) if isinstance(value, (str, float)) or _integer(value) is not None else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _last(history: dict[str, Any], key: str) -> Any:
    values = history.get(key)
    return values[-1] if isinstance(values, list) and values else None


def _first(*values: Any) -> Any:
    return next((value for value in values if value is not None), None)


def _read_metrics_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed file and ``None``, or ``None`` and why it could not be used (one bad file never ends the table)."""
    try:
        loaded = json.loads(read_regular(path, MAX_METRICS_BYTES).decode("utf-8"))
    except FileTooLarge:
        return None, f"metrics.json unreadable (larger than {MAX_METRICS_BYTES >> 20} MB)"
    except NotARegularFile as error:  # never opened for reading: a FIFO would block the table
        return None, f"metrics.json unreadable ({error.kind})"
    except (OSError, UnicodeDecodeError) as error:
        return None, f"metrics.json unreadable ({type(error).__name__})"
    except json.JSONDecodeError as error:
        return None, f"metrics.json corrupt (invalid JSON at line {error.lineno})"
    except ValueError:  # Python refuses to read a whole number of more than 4,300 digits
        return None, "metrics.json corrupt (a number too long to read)"
    except RecursionError:
        return None, "metrics.json corrupt (nested too deeply to read)"
    if not isinstance(loaded, dict):
        return None, f"metrics.json corrupt (a JSON {type(loaded).__name__}, not an object)"
    return loaded, None


def _read_checkpoint(path: Path) -> tuple[dict[str, Any] | None, str]:
    """What a checkpoint records, shaped like ``metrics.json``, and a note saying where it came from; or ``None`` and why."""
    # torch only for a run without metrics.json: the table of finished runs needs nothing but json and pandas
    from mnist_cnn.checkpoint import read_record
    from mnist_cnn.errors import CheckpointError

    try:
        payload = read_record(path)  # the header alone: no weights are read
    except CheckpointError:
        return None, f"{path.name} unreadable"
    recorded = {**_dict(payload.get("metrics")), "config": payload.get("config") or {}, "history": payload.get("history") or {}}
    done = _integer(_dict(payload.get("training_state")).get("epoch"))
    if done is not None:
        recorded["epochs_done"] = done
    if done is None or path.name != LAST_FILE:
        return recorded, f"read from {path.name}"
    planned = _integer(_dict(recorded["config"]).get("epochs"))
    return recorded, f"unfinished: {path.name} after epoch {done}" + (f" of {planned}" if planned else "")


def _is_run(folder: Path) -> bool:
    try:
        return folder.is_dir() and any((folder / name).is_file() for name in RUN_FILES)
    except OSError:  # a folder we may not look into is not a run we can show
        return False


def find_runs(models_dir: str | os.PathLike[str] = MODELS_DIR) -> list[Path]:
    """The run folders directly under ``models_dir`` (with ``metrics.json``, ``model.pt`` or ``last.pt``), by name; or none."""
    try:
        return sorted((p for p in Path(models_dir).iterdir() if _is_run(p)), key=lambda p: p.name)
    except OSError:  # missing, not a folder, or not readable
        return []


def read_run(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], list[str]]:
    """What a run folder records, in ``metrics.json``'s shape (``{}`` when nothing is readable), and notes on what is missing.

    ``metrics.json`` is read first; without a usable one, the record in ``model.pt``, else in ``last.pt``.
    """
    folder = Path(folder)
    recorded, notes = None, []
    if (folder / "metrics.json").is_file():
        recorded, problem = _read_metrics_json(folder / "metrics.json")
        notes += [problem] if problem else []
    else:
        notes.append("no metrics.json")
    for name in (MODEL_FILE, LAST_FILE):
        if recorded is None and (folder / name).is_file():
            recorded, note = _read_checkpoint(folder / name)
            notes.append(note)
    return recorded or {}, notes


def _row(folder: Path) -> dict[str, Any]:
    recorded, notes = read_run(folder)
    config, history = _dict(recorded.get("config")), _dict(recorded.get("history"))
    if recorded and not config:
        notes.append("no configuration recorded")
    val_accuracy = _first(read_number(recorded.get("val_accuracy")), read_number(_last(history, "val_acc")))
    if recorded and val_accuracy is None and ("test_acc" in history or read_number(recorded.get("test_accuracy")) is not None):
        notes.append(OLD_FORMAT_NOTE)
    train_size = _integer(config.get("train_size"))
    if train_size is not None:  # a --smoke run or a quick check: its accuracy is not comparable with full runs
        notes.append(f"trained on {train_size:,} images only")
    epochs = _first(*map(_integer, (recorded.get("epochs_done"), recorded.get("epochs"), config.get("epochs"), _last(history, "epoch"))))
    return {
        "run": folder.name,
        "preset": _text(recorded.get("preset")) or _text(config.get("preset")),
        "seed": _first(_integer(recorded.get("seed")), _integer(config.get("seed"))),
        "epochs": epochs,
        "batch_size": _integer(config.get("batch_size")),
        "lr": read_number(config.get("lr")),
        "val_accuracy": val_accuracy,
        "test_accuracy": read_number(recorded.get("test_accuracy")),
        "train_seconds": read_number(recorded.get("train_seconds")),
        "device": _text(recorded.get("device")),
        "precision": _text(recorded.get("precision")),
        "note": "; ".join(notes),
    }


def runs_table(models_dir: str | os.PathLike[str] = MODELS_DIR) -> pd.DataFrame:
    """One row per run under ``models_dir`` (default: the project's ``models/``): settings, accuracies, time, numerics.

    Returns:
        A DataFrame with :data:`COLUMNS` (empty when there are no runs); unknown values are missing (``<NA>``/``NaN``)
        and ``note`` says why (older format, missing or corrupt files, unfinished run).
    """
    return pd.DataFrame([_row(folder) for folder in find_runs(models_dir)], columns=list(COLUMNS)).astype(DTYPES)


def _curve_rows(run: str, history: dict[str, Any]) -> list[tuple[Any, ...]]:
    epochs = history.get("epoch")
    if not isinstance(epochs, list):
        return []
    split = "val" if isinstance(history.get("val_acc"), list) and history["val_acc"] else "test"

    def column(key: str) -> list[float | None]:
        values = history.get(key) if isinstance(history.get(key), list) else []
        return [read_number(v) for v in values[: len(epochs)]] + [None] * (len(epochs) - len(values))

    columns = [column(key) for key in ("train_loss", "train_acc", f"{split}_loss", f"{split}_acc")]
    rows = [(run, _integer(epoch), *numbers[:2], split, *numbers[2:]) for epoch, *numbers in zip(epochs, *columns, strict=True)]
    return [row for row in rows if row[1] is not None]


def learning_curves(models_dir: str | os.PathLike[str] = MODELS_DIR, runs: list[str] | None = None) -> pd.DataFrame:
    """Per-epoch history of the runs (default: all), one row per run and epoch, with :data:`CURVE_COLUMNS`.

    ``eval_acc``/``eval_loss`` are the validation numbers when the run has them (``eval_split == "val"``), else the
    test numbers of an older run (``"test"``). Runs without a readable history are left out.
    """
    folders = [folder for folder in find_runs(models_dir) if runs is None or folder.name in runs]
    rows = [row for folder in folders for row in _curve_rows(folder.name, _dict(read_run(folder)[0].get("history")))]
    return pd.DataFrame(rows, columns=list(CURVE_COLUMNS)).astype(dict.fromkeys(CURVE_COLUMNS[2:4] + CURVE_COLUMNS[5:], "float64"))


#: How :func:`format_table` writes the numbers of these columns.
_FORMATS = {"lr": "{:g}", "val_accuracy": "{:.4f}", "test_accuracy": "{:.4f}", "train_seconds": "{:.1f}"}
_NUMERIC = {"seed", "epochs", "batch_size", *_FORMATS}


def _cell(column: str, value: Any) -> str:
    """One printed cell: a number formatted, text escaped so a name can neither forge a row nor drive the terminal."""
    if pd.isna(value) or value == "":
        return "-"
    if column in _NUMERIC:
        return _FORMATS.get(column, "{}").format(value)
    if column == "run":
        return display_name(value)  # a folder name: its bytes that are not UTF-8 shown as \xNN
    text = escape_text(str(value))
    return text if column == "note" or len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 3] + "..."


def format_table(table: pd.DataFrame) -> str:
    """The table as plain text for a terminal: numbers right-aligned (accuracies to 4 decimals), text left, missing as ``-``.

    Text is escaped (:func:`mnist_cnn.text.escape_text`): a run folder named with a line break or an escape sequence
    prints as one row. Columns are as wide as the terminal shows their text, so wide (CJK) and combining characters
    keep the table aligned.
    """
    if table.empty:
        return "(no runs)"
    columns = list(table.columns)
    lines = [columns, *([_cell(c, v) for c, v in zip(columns, row, strict=True)] for row in table.itertuples(index=False))]
    widths = [max(_width(line[i]) for line in lines) for i in range(len(columns))]
    aligned = ([_pad(v, w, right=c in _NUMERIC) for c, v, w in zip(columns, line, widths, strict=True)] for line in lines)
    return "\n".join("  ".join(line).rstrip() for line in aligned)


def _width(text: str) -> int:
    """Columns ``text`` takes in a terminal: a CJK character 2, a combining accent 0 (wcwidth's table, as terminals use)."""
    return max(wcswidth(text), 0)  # -1 only for a control character, which escape_text has already replaced


def _pad(text: str, width: int, right: bool) -> str:
    spaces = " " * (width - _width(text))
    return spaces + text if right else text + spaces
