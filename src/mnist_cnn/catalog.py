"""Every training run under ``models/`` as tables (one row per run, or per run and epoch) and its learning curves drawn together.

A run is a folder ``models/<run>/`` written by ``python -m mnist_cnn.train`` (or :func:`mnist_cnn.runs.save_run`):
``metrics.json`` holds the final numbers, the configuration and the per-epoch history. Runs made by older
versions of the project (no validation split: their history has ``test_loss``/``test_acc`` per epoch), runs
stopped before they finished (only ``last.pt``) and folders with missing or corrupt files still get a row with
what is known, and a note that says what is missing; reading them never raises.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mnist_cnn import LAST_FILE, MODEL_FILE, MODELS_DIR
from mnist_cnn.checks import read_number, whole_float_as_int
from mnist_cnn.text import display_name, escape_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The table's columns, in order.
COLUMNS = (
    "run",
    "preset",
    "seed",
    "epochs",
    "batch_size",
    "lr",
    "val_accuracy",
    "test_accuracy",
    "train_seconds",
    "device",
    "precision",
    "note",
)
#: Columns of :func:`learning_curves`.
CURVE_COLUMNS = ("run", "epoch", "train_loss", "train_acc", "eval_split", "eval_loss", "eval_acc")
#: Files that make a folder a run (the first one found with metrics is used, in this order).
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
    if isinstance(value, (str, float)):
        return str(value)
    return str(value) if _integer(value) is not None else None  # bools and 400-digit numbers are no names


def _last(history: dict[str, Any], key: str) -> float | None:
    values = history.get(key)
    return read_number(values[-1]) if isinstance(values, list) and values else None


def _read_metrics_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The parsed file and ``None``, or ``None`` and why it could not be used (one bad file never ends the table)."""
    try:
        if path.stat().st_size > MAX_METRICS_BYTES:
            return None, f"metrics.json unreadable (larger than {MAX_METRICS_BYTES >> 20} MB)"
        loaded = json.loads(path.read_text(encoding="utf-8"))
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


def _read_checkpoint(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Metrics, config and history recorded in a checkpoint, shaped like ``metrics.json``; or why not."""
    # torch only when a run lacks metrics.json: the table of finished runs needs nothing but json and pandas
    from mnist_cnn.checkpoint import read_record
    from mnist_cnn.errors import CheckpointError

    try:
        payload = read_record(path)  # the header alone: no weights are read
    except CheckpointError:
        return None, f"{path.name} unreadable"
    metrics = payload.get("metrics") if isinstance(payload.get("metrics"), dict) else {}
    recorded = {**metrics, "config": payload.get("config") or {}, "history": payload.get("history") or {}}
    state = payload.get("training_state")
    if isinstance(state, dict) and _integer(state.get("epoch")) is not None:
        recorded["epochs_done"] = _integer(state.get("epoch"))
    return recorded, None


def _is_run(folder: Path) -> bool:
    try:
        return folder.is_dir() and any((folder / name).is_file() for name in RUN_FILES)
    except OSError:  # a folder we may not look into is not a run we can show
        return False


def find_runs(models_dir: str | os.PathLike[str] = MODELS_DIR) -> list[Path]:
    """The run folders directly under ``models_dir`` (those holding ``metrics.json``, ``model.pt`` or ``last.pt``), by name.

    Args:
        models_dir: Where the runs are (default: the project's ``models/``).

    Returns:
        The folders; empty when ``models_dir`` does not exist or holds no runs.
    """
    root = Path(models_dir)
    try:
        return sorted((p for p in root.iterdir() if _is_run(p)), key=lambda p: p.name)
    except OSError:  # missing, not a folder, or not readable
        return []


def read_run(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], list[str]]:
    """What a run folder records, in ``metrics.json``'s shape, and notes on what is missing or unusual.

    ``metrics.json`` is read first; without a usable one, the metrics recorded in ``model.pt`` or ``last.pt``.

    Args:
        folder: A run folder.

    Returns:
        ``(recorded, notes)``; ``recorded`` is ``{}`` when nothing could be read.
    """
    folder = Path(folder)
    notes: list[str] = []
    recorded: dict[str, Any] | None = None
    if (folder / "metrics.json").is_file():
        recorded, problem = _read_metrics_json(folder / "metrics.json")
        if problem:
            notes.append(problem)
    else:
        notes.append("no metrics.json")
    if recorded is None:
        for name in (MODEL_FILE, LAST_FILE):
            if (folder / name).is_file():
                recorded, problem = _read_checkpoint(folder / name)
                if problem:
                    notes.append(problem)
                    continue
                planned = _integer((recorded.get("config") or {}).get("epochs"))
                done = recorded.get("epochs_done")
                if name == LAST_FILE and done is not None:
                    notes.append(f"unfinished: {name} after epoch {done}" + (f" of {planned}" if planned else ""))
                else:
                    notes.append(f"read from {name}")
                break
    return recorded or {}, notes


def _row(folder: Path, models_root: Path) -> dict[str, Any]:
    recorded, notes = read_run(folder)
    config = recorded.get("config") if isinstance(recorded.get("config"), dict) else {}
    history = recorded.get("history") if isinstance(recorded.get("history"), dict) else {}
    if recorded and not config:
        notes.append("no configuration recorded")
    val_accuracy = read_number(recorded.get("val_accuracy"))
    if val_accuracy is None:
        val_accuracy = _last(history, "val_acc")
    if recorded and val_accuracy is None and ("test_acc" in history or read_number(recorded.get("test_accuracy")) is not None):
        notes.append(OLD_FORMAT_NOTE)
    train_size = _integer(config.get("train_size"))
    if train_size is not None:  # a --smoke run or a quick check: its accuracy is not comparable with full runs
        notes.append(f"trained on {train_size:,} images only")
    epochs = recorded.get("epochs_done")
    if epochs is None:
        epochs = _integer(recorded.get("epochs"))
    if epochs is None:
        epochs = _integer(config.get("epochs"))
    if epochs is None and isinstance(history.get("epoch"), list) and history["epoch"]:
        epochs = _integer(history["epoch"][-1])
    return {
        "run": folder.relative_to(models_root).as_posix(),
        "preset": _text(recorded.get("preset")) or _text(config.get("preset")),
        "seed": _integer(recorded.get("seed")) if _integer(recorded.get("seed")) is not None else _integer(config.get("seed")),
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
    """One row per run under ``models_dir``: its settings, accuracies, training time and numerics.

    Args:
        models_dir: Where the runs are (default: the project's ``models/``).

    Returns:
        A DataFrame with :data:`COLUMNS` (empty when there are no runs); unknown values are missing
        (``<NA>``/``NaN``), and ``note`` says why (older format, missing or corrupt files, unfinished run).
    """
    root = Path(models_dir)
    rows = [_row(folder, root) for folder in find_runs(root)]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    for column in ("seed", "epochs", "batch_size"):
        table[column] = table[column].astype("Int64")
    for column in ("lr", "val_accuracy", "test_accuracy", "train_seconds"):
        table[column] = table[column].astype("float64")
    for column in ("run", "preset", "device", "precision", "note"):
        table[column] = table[column].astype("string")
    return table


def learning_curves(models_dir: str | os.PathLike[str] = MODELS_DIR, runs: list[str] | None = None) -> pd.DataFrame:
    """Per-epoch history of the runs, one row per run and epoch, for plotting them together.

    ``eval_acc``/``eval_loss`` are the validation numbers when the run has them (``eval_split == "val"``),
    else the test numbers of an older run (``"test"``). Runs without a readable history are left out.

    Args:
        models_dir: Where the runs are.
        runs: Run names to keep (default: all).

    Returns:
        A DataFrame with :data:`CURVE_COLUMNS`.
    """
    rows: list[dict[str, Any]] = []
    root = Path(models_dir)
    for folder in find_runs(root):
        name = folder.relative_to(root).as_posix()
        if runs is not None and name not in runs:
            continue
        recorded, _ = read_run(folder)
        history = recorded.get("history") if isinstance(recorded.get("history"), dict) else {}
        split = "val" if isinstance(history.get("val_acc"), list) and history["val_acc"] else "test"
        epochs = history.get("epoch")
        if not isinstance(epochs, list):
            continue

        def column(key: str, length: int, history: dict[str, Any] = history) -> list[float | None]:
            values = history.get(key)
            values = values if isinstance(values, list) else []
            return [read_number(v) for v in values[:length]] + [None] * (length - min(len(values), length))

        n = len(epochs)
        for epoch, train_loss, train_acc, eval_loss, eval_acc in zip(
            epochs, column("train_loss", n), column("train_acc", n), column(f"{split}_loss", n), column(f"{split}_acc", n), strict=True
        ):
            if _integer(epoch) is not None:
                rows.append(
                    {
                        "run": name,
                        "epoch": _integer(epoch),
                        "train_loss": train_loss,
                        "train_acc": train_acc,
                        "eval_split": split,
                        "eval_loss": eval_loss,
                        "eval_acc": eval_acc,
                    }
                )
    curves = pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
    for column_name in ("train_loss", "train_acc", "eval_loss", "eval_acc"):
        curves[column_name] = curves[column_name].astype("float64")
    return curves


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
    if column == "note" or len(text) <= MAX_CELL_CHARS:
        return text
    return text[: MAX_CELL_CHARS - 3] + "..."


def format_table(table: pd.DataFrame) -> str:
    """The table as plain text for a terminal: accuracies to 4 decimals, seconds to 1, missing values as ``-``.

    Text columns are aligned left, numbers right; the header names the columns as :data:`COLUMNS` does. Text
    is escaped (:func:`mnist_cnn.text.escape_text`): a run folder named with a line break or an escape sequence
    prints as one row.
    """
    if table.empty:
        return "(no runs)"
    columns = list(table.columns)
    cells = [[_cell(c, v) for c, v in zip(columns, row, strict=True)] for row in table.itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if c in _NUMERIC else v.ljust(w) for c, v, w in zip(columns, values, widths, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(columns), *(line(r) for r in cells)])


def plot_learning_curves(curves: pd.DataFrame, runs: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """Overlay the learning curves of several runs: held-out error and training loss per epoch, on log scales.

    The error is ``1 - accuracy`` on held-out data, so runs at 99.0% and 99.4% stay apart on the log scale while
    a smoke run at 15% still fits. Held-out means the validation split where a run has one; runs from older
    versions have only test accuracy per epoch, and their legend entry says so ("test acc"). Epoch 0 (the
    untrained network) is left out.

    Args:
        curves: From :func:`learning_curves`.
        runs: Runs to show, in this order (default: all in ``curves``).
        title: Figure title.
    """
    # matplotlib only when drawing: the compare command prints the table from this module without it
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import PercentFormatter

    if runs is not None:
        curves = curves[curves["run"].isin(list(runs))]
    curves = curves[curves["epoch"] >= 1]
    present = set(curves["run"])
    order = [r for r in (list(runs) if runs is not None else list(dict.fromkeys(curves["run"]))) if r in present]
    splits = curves.groupby("run")["eval_split"].first().to_dict()
    labels = {run: run if splits.get(run) == "val" else f"{run} (test acc: no val split)" for run in order}
    data = curves.assign(label=curves["run"].map(labels), eval_err=1.0 - curves["eval_acc"])
    fig, (err_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    common = dict(
        data=data,
        x="epoch",
        hue="label",
        hue_order=[labels[r] for r in order],
        palette=sns.color_palette("tab10", n_colors=max(1, len(order))),
        marker="o",
    )
    sns.lineplot(y="eval_err", ax=err_ax, **common)
    sns.lineplot(y="train_loss", ax=loss_ax, legend=False, **common)
    err_ax.set(xlabel="epoch", ylabel="error (1 - accuracy), log scale", title="Held-out error (validation; test where marked)")
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy loss, log scale", title="Training loss")
    for ax in (err_ax, loss_ax):
        if len(data):
            ax.set_yscale("log")
            ax.set_xticks(sorted(set(data["epoch"].astype(int))))
        ax.grid(alpha=0.3, which="both")
    if len(data):  # after set_yscale, which installs its own tick labels
        err_ax.yaxis.set_major_formatter(PercentFormatter(xmax=1, decimals=1))
    if err_ax.get_legend() is not None:
        err_ax.legend(title="run", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
