"""Hostile and clumsy checkpoints: checked before anything is allocated, refused in one line, files left untouched.

A resumable ``last.pt`` is built here exactly as training writes one (the fast preset on the smoke slice,
one epoch of two done), then tampered with field by field and fed to ``train --resume`` and ``evaluate``.
"""

from __future__ import annotations

import copy
import io
import json
import math
import os
import random
import subprocess
import sys
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from mnist_cnn.checkpoint import load_checkpoint
from mnist_cnn.engine import HISTORY_KEYS
from mnist_cnn.errors import CheckpointError
from mnist_cnn.model import VGG, build_model
from mnist_cnn.presets import get_preset
from mnist_cnn.recipe import build_optimizer, build_scheduler
from mnist_cnn.reproducibility import rng_state
from mnist_cnn.results import build_payload, save_checkpoint
from mnist_cnn.tooling.cli import evaluate, train
from mnist_cnn.tooling.cli.args import run_cli
from mnist_cnn.tooling.runctl.resume import resume_config, training_state_of
from mnist_cnn.tooling.safety import safe_load
from mnist_cnn.tooling.safety.safe_load import MAX_CHECKPOINT_BYTES, MAX_HEADER_BYTES, read_checkpoint_file

#: What a child process reports: the command's status, then its peak resident memory in kB.
MEASURE = (
    "import resource, sys\n"
    "from mnist_cnn.tooling.cli.args import run_cli\n"
    "from mnist_cnn.tooling.cli import evaluate\n"
    "status = run_cli(evaluate.main, sys.argv[1:])\n"
    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    "raise SystemExit(status)\n"
)
#: Memory a refused checkpoint may cost beyond the command's imports (about 850 MB here): before the checks, the files
#: below took 2.8 to 3.5 GB more, or ended in a traceback asking for 360 GB.
EXTRA_PEAK_LIMIT_KB = 100_000


def resumable_payload() -> dict[str, Any]:
    """A ``last.pt`` payload after epoch 1 of 2 of ``--preset fast --smoke --epochs 2``, as training saves it."""
    config = get_preset("fast", epochs=2, train_size=2_000, test_size=1_000)
    torch.manual_seed(0)
    model = build_model(config.arch, **config.model_options)
    optimizer = build_optimizer(config, model)
    steps = -(-2_000 // config.batch_size)  # batches per epoch on the smoke slice
    scheduler = build_scheduler(config, optimizer, steps)
    assert scheduler is not None
    for _ in range(steps):
        model(torch.randn(4, 1, 28, 28)).logsumexp(1).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    history = {key: [0, 1] if key == "epoch" else [0.5, 0.25] for key in HISTORY_KEYS}
    state = {
        "epoch": 1,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(torch.Generator().manual_seed(1)),
        "deterministic": True,
        "world_size": 1,
    }
    return build_payload(
        model,
        arch=config.arch,
        model_options=config.model_options,
        input_scaling=config.input_scaling,
        config=config.to_dict(),
        history=history,
        metrics={"test_accuracy": 0.5},
        training_state=state,
    )


@pytest.fixture(scope="module")
def base_payload() -> dict[str, Any]:
    return resumable_payload()


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def one_line_error(capsys: pytest.CaptureFixture, status: int) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert status == 1 and len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def tampered(base: dict[str, Any], change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    payload = copy.deepcopy(base)
    change(payload)
    return payload


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A change that sets ``payload[a][b]...`` (``path`` is ``a.b...``; numbers index lists and int-keyed dicts)."""
    *parents, last = path.split(".")

    def change(payload: dict[str, Any]) -> None:
        target: Any = payload
        for key in parents:
            target = target[int(key) if key.isdigit() else key]
        target[int(last) if last.isdigit() else last] = value

    return change


def _delete(path: str) -> Callable[[dict[str, Any]], None]:
    parent, last = path.rsplit(".", 1)
    return lambda payload: payload[parent].pop(last)


#: (name, change, fragment of the message): 8+ fields of the wrong type, refused by train --resume and evaluate alike.
MALFORMED_FIELDS = [
    ("format_version str", _set("format_version", "1"), "invalid format_version"),
    ("arch int", _set("arch", 7), "invalid arch"),
    ("model_options list", _set("model_options", [16, 32]), "invalid model_options"),
    ("option str", _set("model_options.channels1", "16"), "invalid model_options.channels1: expected a whole number, got '16'"),
    ("option float", _set("model_options.channels1", 16.5), "invalid model_options.channels1"),
    ("option bool", _set("model_options.fc_units", True), "invalid model_options.fc_units"),
    ("batch_norm str", _set("model_options.batch_norm", "yes"), "invalid model_options.batch_norm: expected true or false"),
    ("input_scaling int", _set("input_scaling", 3), "invalid input_scaling"),
    ("state_dict list", _set("state_dict", [1, 2]), "invalid state_dict"),
    ("weight not a tensor", lambda payload: payload["state_dict"].update({"classifier.1.bias": [0.0] * 10}), "invalid state_dict"),
    ("history str", _set("history", "long"), "invalid history"),
    ("metrics list", _set("metrics", [0.99]), "invalid metrics"),
    ("metrics tensor", _set("metrics.test_accuracy", torch.tensor(0.5)), "invalid metrics: it holds values other than"),
    ("history lengths", _set("history.test_loss", [0.5, 0.4, 0.3]), "invalid history['test_loss']: it has 3 entries for 2"),
]
#: (name, change, fragment): tampered resume state, refused by train --resume before any training.
BAD_RESUME_STATES = [
    ("epoch negative", _set("training_state.epoch", -1), "invalid training_state.epoch"),
    ("epoch huge", _set("training_state.epoch", 10**12), "invalid training_state.epoch"),
    ("epoch str", _set("training_state.epoch", "1"), "invalid training_state.epoch: expected a whole number from 0 to 100000, got '1'"),
    ("optimizer missing", _delete("training_state.optimizer"), "invalid training_state.optimizer"),
    (
        "optimizer moment wrong shape",
        _set("training_state.optimizer.state.0.exp_avg", torch.zeros(3)),
        "invalid training_state.optimizer.state[0].exp_avg: shape [3] does not fit parameter 0",
    ),
    ("optimizer groups short", _set("training_state.optimizer.param_groups.0.params", [0, 1]), "invalid training_state.optimizer"),
    ("rng dtype", _set("training_state.rng.torch", torch.zeros(5056)), "invalid training_state.rng.torch"),
    ("rng length", _set("training_state.rng.generator", torch.zeros(16, dtype=torch.uint8)), "invalid training_state.rng.generator"),
    ("python rng length", _set("training_state.rng.python", [3, [1, 2, 3], None]), "invalid training_state.rng.python"),
    ("scheduler garbage", _set("training_state.scheduler", "garbage"), "invalid training_state.scheduler"),
    ("scheduler steps str", _set("training_state.scheduler.total_steps", "16"), "invalid training_state.scheduler.total_steps"),
    ("scheduler past its end", _set("training_state.scheduler.last_epoch", 99), "invalid training_state.scheduler.last_epoch"),
    ("history short", _set("history.train_loss", [0.5]), "invalid history['train_loss']: it has 1 entries for 2 epoch(s)"),
    ("history strings", _set("history.test_acc", ["a", "b"]), "invalid history['test_acc']"),
    ("history key missing", _delete("history.seconds"), "invalid history: it lacks 'seconds'"),
    ("training_state list", _set("training_state", [1]), "cannot resume"),
    ("config lr str", _set("config.lr", "fast"), "invalid config"),
]


def test_the_untampered_file_is_resumable(base_payload: dict[str, Any], tmp_path: Path) -> None:
    """The control: every check below must be caused by the tampering, not by the file they start from."""
    save_checkpoint(tmp_path / "last.pt", base_payload)
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert training_state_of(checkpoint)["epoch"] == 1
    assert resume_config(checkpoint).epochs == 2


def test_the_untampered_file_resumes_and_finishes(base_payload: dict[str, Any], tmp_path: Path, data_dir: Path) -> None:
    save_checkpoint(tmp_path / "last.pt", base_payload)
    assert run_cli(train.main, ["--resume", str(tmp_path / "last.pt"), "--quiet"]) == 0
    assert load_checkpoint(tmp_path / "model.pt").payload["training_state"]["epoch"] == 2


@pytest.mark.parametrize(
    ("name", "change", "fragment"), MALFORMED_FIELDS + BAD_RESUME_STATES, ids=[case[0] for case in MALFORMED_FIELDS + BAD_RESUME_STATES]
)
def test_train_resume_refuses_tampered_files(
    base_payload: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture, name: str, change: Callable, fragment: str
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, tampered(base_payload, change))
    before = snapshot(tmp_path)
    message = one_line_error(capsys, run_cli(train.main, ["--resume", str(path), "--quiet"]))
    assert fragment in message and str(path) in message, message
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("name", "change", "fragment"), MALFORMED_FIELDS, ids=[case[0] for case in MALFORMED_FIELDS])
def test_evaluate_refuses_malformed_files(
    base_payload: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture, name: str, change: Callable, fragment: str
) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, tampered(base_payload, change))
    before = snapshot(tmp_path)
    message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", str(path), "--out", str(tmp_path / "report")]))
    assert fragment in message and str(path) in message, message
    assert snapshot(tmp_path) == before


def test_tampered_files_through_the_real_commands(base_payload: dict[str, Any], tmp_path: Path) -> None:
    """The same refusals from ``python -m``: one line, status 1, the files byte-identical."""
    for command, change, fragment in [
        (["mnist_cnn.train", "--resume"], _set("training_state.rng.python", "seed"), "invalid training_state.rng.python"),
        (["mnist_cnn.evaluate", "--checkpoint"], _set("model_options.channels2", "32"), "invalid model_options.channels2"),
    ]:
        path = tmp_path / "last.pt"
        save_checkpoint(path, tampered(base_payload, change))
        before = snapshot(tmp_path)
        result = subprocess.run(
            [sys.executable, "-m", *command, str(path), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and fragment in lines[0], result.stderr
        assert snapshot(tmp_path) == before


def tiny_vgg_claiming(hidden_units: int, path: Path) -> Path:
    """A checkpoint of a few KB: a 1-channel VGG whose options claim ``hidden_units``."""
    save_checkpoint(
        path, build_payload(VGG(hidden_units=1), arch="vgg", model_options={"hidden_units": hidden_units}, input_scaling="unit")
    )
    return path


@pytest.fixture(scope="module")
def baseline_peak_kb(tmp_path_factory: pytest.TempPathFactory) -> int:
    """The peak memory of ``evaluate`` refusing a missing checkpoint: its imports and nothing else."""
    tmp_path = tmp_path_factory.mktemp("baseline")
    status, stderr, peak_kb = peak_of_evaluate(tmp_path / "missing.pt", tmp_path)
    assert status == 1 and "checkpoint not found" in stderr
    return peak_kb


def peak_of_evaluate(checkpoint: Path, tmp_path: Path) -> tuple[int, str, int]:
    """Run ``evaluate`` on ``checkpoint`` in a child process: its status, stderr and peak memory (kB)."""
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "report")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stderr.strip(), int(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("hidden_units", "fragment"),
    [
        (4_000, "model_options.hidden_units: 4000 is out of bounds (must be from 1 to 512)"),
        (100_000, "model_options.hidden_units: 100000 is out of bounds"),
    ],
)
def test_options_beyond_bounds_are_refused_without_allocating(
    tmp_path: Path, baseline_peak_kb: int, hidden_units: int, fragment: str
) -> None:
    path = tiny_vgg_claiming(hidden_units, tmp_path / "claims.pt")
    assert path.stat().st_size < 10_000
    status, stderr, peak_kb = peak_of_evaluate(path, tmp_path)
    assert status == 1 and len(stderr.splitlines()) == 1 and fragment in stderr, stderr
    assert peak_kb - baseline_peak_kb < EXTRA_PEAK_LIMIT_KB, f"peak {peak_kb} kB, {baseline_peak_kb} kB for the imports"


def test_shapes_are_compared_before_the_model_is_built(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Within bounds but not matching the weights: refused from the shapes alone (the real model is never built)."""
    path = tiny_vgg_claiming(512, tmp_path / "claims.pt")
    built: list[tuple] = []
    original = VGG.__init__

    def record(self, *args, **kwargs):  # noqa: ANN001, ANN202 - a spy on construction
        built.append((torch.empty(0).device.type, kwargs))
        original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VGG, "__init__", record)
        message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", str(path), "--out", str(tmp_path / "r")]))
    assert "does not fit architecture vgg(hidden_units=512): shapes differ" in message
    assert built and all(device == "meta" for device, _ in built), "only the meta-device model was built"


def test_a_compressed_bomb_is_refused_before_inflating(tmp_path: Path, baseline_peak_kb: int) -> None:
    """A ``torch.save`` file (the seed's kind, still read) whose few MB of deflated zeros stand for a 2 GiB tensor:
    refused from the archive's directory."""
    small = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, small)
    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(small) as source, zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as target:
        for entry in source.infolist():
            if entry.filename.endswith("data/0"):
                with target.open(entry.filename, "w", force_zip64=True) as handle:
                    zeros = bytes(1 << 24)
                    for _ in range((2 << 30) // len(zeros)):
                        handle.write(zeros)
            else:
                target.writestr(entry, source.read(entry))
    assert bomb.stat().st_size < 16 << 20  # about 9 MB at the fastest compression level
    status, stderr, peak_kb = peak_of_evaluate(bomb, tmp_path)
    assert status == 1 and len(stderr.splitlines()) == 1, stderr
    assert "would unpack to 2,147,48" in stderr and f"more than the {MAX_CHECKPOINT_BYTES:,}" in stderr
    assert peak_kb - baseline_peak_kb < EXTRA_PEAK_LIMIT_KB, f"peak {peak_kb} kB, {baseline_peak_kb} kB for the imports"


@pytest.mark.parametrize(
    ("dtype", "fragment"),
    [
        (torch.float64, "as float64, not float32"),
        (torch.complex64, "as complex64, not float32"),
    ],
)
def test_float64_and_complex_weights_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture, dtype: torch.dtype, fragment: str) -> None:
    payload = build_payload(VGG(hidden_units=2), arch="vgg", model_options={"hidden_units": 2}, input_scaling="unit")
    payload["state_dict"]["conv_block_1.0.weight"] = payload["state_dict"]["conv_block_1.0.weight"].to(dtype)
    save_checkpoint(tmp_path / "wide.pt", payload)
    message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", str(tmp_path / "wide.pt"), "--out", str(tmp_path / "r")]))
    assert "conv_block_1.0.weight" in message and fragment in message


def test_half_precision_weights_still_load(tmp_path: Path) -> None:
    model = VGG(hidden_units=2)
    payload = build_payload(model, arch="vgg", model_options={"hidden_units": 2}, input_scaling="unit")
    payload["state_dict"] = {k: v.half() for k, v in payload["state_dict"].items()}
    save_checkpoint(tmp_path / "half.pt", payload)
    loaded = load_checkpoint(tmp_path / "half.pt").model
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_unreadable_checkpoint_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tiny_vgg_claiming(1, tmp_path / "model.pt")
    real_open = os.open

    def denied(name: Any, *args: Any, **kwargs: Any) -> int:
        if Path(name) == path:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(safe_load.os, "open", denied)
    message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", str(path), "--out", str(tmp_path / "r")]))
    assert message == f"error: cannot read checkpoint {path}: Permission denied"


def test_checkpoints_are_created_0644_respecting_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        path = tiny_vgg_claiming(1, tmp_path / "model.pt")
        assert path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        path = tiny_vgg_claiming(1, tmp_path / "private.pt")
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(previous)


# --- A record is JSON: it stands for no more values than its text spells out, and that text is bounded ---


def rewritten(path: Path, change: Callable[[dict[str, Any], dict[str, Any]], None]) -> Path:
    """``path`` with its safetensors header and record changed by ``change(header, record)``, its tensor bytes kept."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    metadata = header["__metadata__"]
    metadata["record"] = json.loads(metadata["record"])
    change(header, metadata["record"])
    if not isinstance(metadata.get("record", ""), str):  # left as a value: written back as JSON text
        metadata["record"] = json.dumps(metadata["record"])
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])
    return path


def test_a_record_past_the_header_bound_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    """Millions of values in the metrics (the pickle format's "shared references" ended here): one line, in either command."""
    path = tiny_vgg_claiming(1, tmp_path / "last.pt")
    rewritten(path, lambda header, record: record["metrics"].update(curve=[0.5] * (MAX_HEADER_BYTES // 4)))
    assert path.stat().st_size > MAX_HEADER_BYTES
    before = snapshot(tmp_path)
    for command in (["mnist_cnn.evaluate", "--checkpoint"], ["mnist_cnn.train", "--resume"]):
        result = subprocess.run(
            [sys.executable, "-m", *command, str(path), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert f"more than the {MAX_HEADER_BYTES:,} allowed" in lines[0] and str(path) in lines[0]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("name", "change", "fragment"),
    [
        ("nested 40 deep", _set("history.deep", eval("[" * 40 + "]" * 40)), "nests deeper than 32 levels"),  # noqa: S307 - a literal
        ("a 600-digit integer", _set("metrics.steps", 2**2000), "invalid metrics: it holds values other than"),
        ("a tuple keyed dict in the config", _set("config.extra", {(1, 2): 3}), "invalid config: it holds values other than"),
    ],
)
def test_oversized_structures_are_refused_in_one_line(
    base_payload: dict[str, Any], tmp_path: Path, name: str, change: Callable, fragment: str
) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, tampered(base_payload, change))
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path, reader=read_checkpoint_file)
    message = str(caught.value)
    assert fragment in message and len(message.splitlines()) == 1, message


def test_a_long_step_history_still_loads(base_payload: dict[str, Any], tmp_path: Path) -> None:
    """The bound leaves room for real runs: 100 epochs' step history (40,000 numbers) is far below it."""
    rows = 10_000
    payload = tampered(base_payload, _set("step_history", {key: [0.5] * rows for key in ("step", "epoch", "train_loss", "lr")}))
    save_checkpoint(tmp_path / "model.pt", payload)
    assert len(load_checkpoint(tmp_path / "model.pt", reader=read_checkpoint_file).step_history["step"]) == rows


# --- Files that are not what they claim: refused in one line naming the file, by what the commands read with ---


def _header_length(length: int) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(length.to_bytes(8, "little") + path.read_bytes()[8:])


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _entry(name: str, key: str, value: Any) -> Callable[[Path], None]:
    return lambda path: rewritten(path, lambda header, record: header[name].update({key: value}))


def _record(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    return lambda path: rewritten(path, lambda header, record: change(record))


def _tensors_as_a_list(header: dict[str, Any], record: dict[str, Any]) -> None:
    header["__metadata__"]["record"] = [{"$tensor": name} for name in header if name != "__metadata__"]


WEIGHT = "state_dict.conv_block_1.0.weight"
#: (name, damage done to a valid checkpoint, fragment of the one-line message).
CRAFTED_FILES = [
    ("random bytes", _bytes(random.Random(0).randbytes(4096)), "is not a readable PyTorch checkpoint"),
    ("empty", _bytes(b""), "shorter than a safetensors header"),
    ("a header length of 2**63", _header_length(2**63), "its header claims 9,223,372,036,854,775,808 bytes, more than the 16,777,216"),
    ("a header length past the file", _header_length(1 << 20), "truncated: its header claims 1,048,576 bytes"),
    ("a header that is not JSON", _bytes((9).to_bytes(8, "little") + b"{not json"), "is not a readable PyTorch checkpoint"),
    ("a header that is a list", _bytes((2).to_bytes(8, "little") + b"[]"), "its header is not a JSON object"),
    ("no record", lambda path: rewritten(path, lambda header, record: header["__metadata__"].clear()), "its metadata holds no 'record'"),
    ("a record that is not JSON", _entry("__metadata__", "record", "{'arch'"), "is not a readable PyTorch checkpoint"),
    (
        "a record nested 100,000 deep",
        _entry("__metadata__", "record", "[" * 100_000 + "]" * 100_000),
        "its record nests too deeply to read",
    ),
    ("a float8 tensor", _entry(WEIGHT, "dtype", "F8_E4M3"), f"holds tensor {WEIGHT} of type F8_E4M3, which no checkpoint holds"),
    ("nine dimensions", _entry(WEIGHT, "shape", [1] * 9), "not a list of at most 8 sizes"),
    ("a negative size", _entry(WEIGHT, "shape", [-1, 1, 3, 3]), "not a list of at most 8 sizes"),
    ("a shape its bytes do not fill", _entry(WEIGHT, "shape", [2, 1, 3, 3]), "is not a readable PyTorch checkpoint"),
    ("offsets past the file", _entry(WEIGHT, "data_offsets", [0, 1 << 30]), "is not a readable PyTorch checkpoint"),
    (
        "a reference to no tensor",
        _record(lambda r: r["state_dict"].update({"conv_block_1.0.weight": {"$tensor": "x"}})),
        "names a tensor the file lacks",
    ),
    ("a tensor no reference names", _record(lambda r: r["state_dict"].pop("conv_block_1.0.weight")), "tensor(s) its record does not name"),
    ("an unknown tag", _record(lambda r: r["metrics"].update(x={"$eval": "print(1)"})), "unknown tag"),
    ("a malformed tag", _record(lambda r: r["metrics"].update(x={"$float": "1e999"})), "where 'nan', 'inf' or '-inf' belongs"),
    ("a record without its arch", _record(lambda r: r.pop("arch")), "is an incomplete mnist-cnn checkpoint: it lacks 'arch'"),
    ("a record that is a list", lambda path: rewritten(path, _tensors_as_a_list), "is not a checkpoint: its record is a list, not a dict"),
]


@pytest.mark.parametrize(("name", "damage", "fragment"), CRAFTED_FILES, ids=[case[0] for case in CRAFTED_FILES])
def test_crafted_files_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, name: str, damage: Callable, fragment: str
) -> None:
    path = tiny_vgg_claiming(1, tmp_path / "model.pt")
    damage(path)
    message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", str(path), "--out", str(tmp_path / "r")]))
    assert fragment in message and str(path) in message, message
    with pytest.raises(CheckpointError) as caught:  # the plain reader of notebooks refuses them in one line too
        load_checkpoint(path)
    assert len(str(caught.value).splitlines()) == 1 and str(path) in str(caught.value)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """Opening a FIFO to read blocks until something writes to it: the kind is checked first, and the open never blocks."""
    fifo = tmp_path / "last.pt"
    os.mkfifo(fifo)
    for command in (["mnist_cnn.evaluate", "--checkpoint"], ["mnist_cnn.train", "--resume"]):
        result = subprocess.run(  # a hang fails the test at the timeout instead of blocking the suite
            [sys.executable, "-m", *command, str(fifo), "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120
        )
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and f"checkpoint {fifo} is not a file (a FIFO)" in lines[0], result.stderr


def test_the_plain_reader_refuses_a_fifo_without_waiting(tmp_path: Path) -> None:
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []
    reader = threading.Thread(target=lambda: outcome.append(pytest.raises(CheckpointError, load_checkpoint, fifo).value), daemon=True)
    reader.start()
    reader.join(timeout=60)
    if reader.is_alive():  # unblock the reader before failing, so the thread ends
        with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "wb"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert outcome and "is not a file" in str(outcome[0])


def test_a_directory_and_a_file_past_the_size_bound_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "folder.pt").mkdir()
    message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", str(tmp_path / "folder.pt"), "--out", str(tmp_path / "r")]))
    assert message == f"error: checkpoint {tmp_path / 'folder.pt'} is not a file (a directory); it was not read"
    path = tiny_vgg_claiming(1, tmp_path / "model.pt")
    monkeypatch.setattr(safe_load, "MAX_CHECKPOINT_BYTES", path.stat().st_size - 1)
    message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", str(path), "--out", str(tmp_path / "r")]))
    assert f"{path} is too large for a checkpoint: {path.stat().st_size:,} bytes, more than the" in message


# --- Names from a file or a path are printed escaped, on one line ---

HOSTILE_NAME = "evil\x1b]0;owned\x07\x1b[31m\nerror: forged line\r"


def test_weight_names_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state_dict = VGG(hidden_units=2).state_dict()
    state_dict[HOSTILE_NAME] = torch.zeros(1)
    torch.save(state_dict, tmp_path / "bare.pt")
    message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", str(tmp_path / "bare.pt"), "--out", str(tmp_path / "r")]))
    assert "unexpected weight(s) such as evil\\x1b]0;owned\\x07\\x1b[31m\\x0aerror: forged line\\x0d" in message
    assert "\x1b" not in message and "\r" not in message


def test_a_weight_named_by_a_number_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Before, the list of first keys was joined as text and the command ended in a TypeError."""
    state_dict = {3: torch.zeros(1), **VGG(hidden_units=2).state_dict()}
    torch.save(state_dict, tmp_path / "bare.pt")
    message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", str(tmp_path / "bare.pt"), "--out", str(tmp_path / "r")]))
    assert "weights are named by something other than text" in message


@pytest.mark.parametrize("file_name", ["bad\nname.pt", "title\x1b]0;x\x07.pt"])
def test_checkpoint_paths_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture, file_name: str) -> None:
    path = tmp_path / file_name
    path.write_bytes(b"not a checkpoint")
    message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", str(path), "--out", str(tmp_path / "r")]))
    assert "not a readable PyTorch checkpoint" in message and "\x1b" not in message
    assert str(tmp_path / file_name.replace("\n", "\\x0a").replace("\x1b", "\\x1b").replace("\x07", "\\x07")) in message


def test_option_names_are_escaped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(
        path, build_payload(VGG(hidden_units=2), arch="vgg", model_options={"hidden_units": 2, HOSTILE_NAME: 1}, input_scaling="unit")
    )
    message = one_line_error(capsys, run_cli(evaluate.main, ["--checkpoint", str(path), "--out", str(tmp_path / "r")]))
    assert "vgg has no option 'evil\\x1b]0;owned" in message and "\x1b" not in message


#: (name, change): single-field edits of a resume state whose values torch itself would only trip over while
#: training (a TypeError, ValueError, KeyError or RuntimeError from deep inside it); each ends in one line first.
TAMPERED_RESUME_FIELDS = [
    ("config batch_size str", _set("config.batch_size", "64")),
    ("config epochs float", _set("config.epochs", 2.5)),
    ("config optimizer unknown", _set("config.optimizer", "rmsprop")),
    ("config label_smoothing str", _set("config.label_smoothing", "x")),
    ("config options beyond bounds", _set("config.model_options", {"hidden_units": 9999})),
    ("config options differ from the weights", _set("config.model_options", {"hidden_units": 8})),
    ("optimizer lr str", _set("training_state.optimizer.param_groups.0.lr", "fast")),
    ("optimizer weight_decay missing", lambda p: p["training_state"]["optimizer"]["param_groups"][0].pop("weight_decay")),
    (
        "optimizer moment NaN",
        lambda p: p["training_state"]["optimizer"]["state"][0].update(
            {k: torch.full_like(v, math.nan) for k, v in p["training_state"]["optimizer"]["state"][0].items() if k != "step"}
        ),
    ),
    ("optimizer state str", _set("training_state.optimizer.state.0", "x")),
    ("scheduler total_steps zero", _set("training_state.scheduler.total_steps", 0)),
    ("step str", _set("training_state.step", "x")),
    ("step_history str", _set("training_state.step_history", "x")),
]


@pytest.mark.parametrize(("name", "change"), TAMPERED_RESUME_FIELDS, ids=[case[0] for case in TAMPERED_RESUME_FIELDS])
def test_tampered_resume_fields_end_in_one_line_naming_the_field(
    base_payload: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture, name: str, change: Callable
) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, tampered(base_payload, change))
    before = snapshot(tmp_path)
    message = one_line_error(capsys, run_cli(train.main, ["--resume", str(path), "--quiet"]))
    assert str(path) in message and "invalid " in message, message
    assert snapshot(tmp_path) == before
