"""Checkpoints: round trips, the safetensors format, the seed's bare state_dict, and every way a file can be wrong."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load as load_tensors

from mnist_cnn import tensor_record
from mnist_cnn.checkpoint import load_checkpoint, read_payload, read_record
from mnist_cnn.errors import CheckpointError
from mnist_cnn.model import VGG, SmallCNN
from mnist_cnn.results import build_payload, save_checkpoint
from mnist_cnn.tooling.cli.measure import measure_checkpoint
from mnist_cnn.tooling.safety.safe_load import read_checkpoint_file


def _save_vgg(path: Path, **options) -> VGG:
    model = VGG(**options)
    save_checkpoint(
        path,
        build_payload(
            model, arch="vgg", model_options=options, input_scaling="standard", metrics={"test_accuracy": 0.5}, history={"epoch": [0]}
        ),
    )
    return model


def test_round_trip(tmp_path: Path) -> None:
    model = _save_vgg(tmp_path / "m.pt", hidden_units=8, batch_norm=True)
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.arch == "vgg" and loaded.model_options == {"hidden_units": 8, "batch_norm": True}
    assert loaded.input_scaling == "standard" and loaded.metrics == {"test_accuracy": 0.5}
    assert not loaded.is_seed_format and not loaded.model.training
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(loaded.model(x), model.eval()(x))
    assert loaded.payload["versions"]["torch"] == str(torch.__version__)


def test_save_leaves_no_temporary_files_and_replaces_atomically(tmp_path: Path) -> None:
    _save_vgg(tmp_path / "m.pt")
    _save_vgg(tmp_path / "m.pt", hidden_units=4)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    assert load_checkpoint(tmp_path / "m.pt").model_options == {"hidden_units": 4}


def test_seed_state_dict_reproduces_published_accuracy(seed_weights: Path, data_dir: Path) -> None:
    loaded = load_checkpoint(seed_weights, reader=read_checkpoint_file)  # a torch pickle: read as the commands read it
    assert loaded.is_seed_format and loaded.model_options == {"hidden_units": 16} and loaded.input_scaling == "unit"
    result = measure_checkpoint(loaded, data_dir)
    assert result.correct == 9_782 and result.total == 10_000


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_text_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("just some notes\n")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path: Path) -> None:
    _save_vgg(tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "m.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "m.pt")


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    torch.save({"state_dict": _RunsCode(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not a safe checkpoint"):
        load_checkpoint(tmp_path / "evil.pt", reader=read_checkpoint_file)
    with pytest.raises(CheckpointError, match="evil.pt is a torch pickle, not this project's checkpoint format"):
        load_checkpoint(tmp_path / "evil.pt")  # the plain reader unpickles nothing at all
    assert not marker.exists()


def test_other_architecture_says_what_differs(tmp_path: Path) -> None:
    payload = build_payload(SmallCNN(), arch="small_cnn", model_options={}, input_scaling="standard")
    payload["arch"], payload["model_options"] = "vgg", {"hidden_units": 16}
    save_checkpoint(tmp_path / "m.pt", payload)
    with pytest.raises(CheckpointError, match=r"does not fit architecture vgg\(hidden_units=16\): missing"):
        load_checkpoint(tmp_path / "m.pt", reader=read_checkpoint_file)
    _plain_reader_says_it_does_not_fit(tmp_path / "m.pt", "vgg(hidden_units=16)")


def test_wrong_width_reports_shapes(tmp_path: Path) -> None:
    payload = build_payload(VGG(hidden_units=8), arch="vgg", model_options={"hidden_units": 16}, input_scaling="unit")
    save_checkpoint(tmp_path / "m.pt", payload)
    with pytest.raises(CheckpointError, match=r"shapes differ \(conv_block_1.0.weight \[8, 1, 3, 3\] vs \[16, 1, 3, 3\]"):
        load_checkpoint(tmp_path / "m.pt", reader=read_checkpoint_file)
    _plain_reader_says_it_does_not_fit(tmp_path / "m.pt", "vgg(hidden_units=16)")


def _plain_reader_says_it_does_not_fit(path: Path, model: str) -> None:
    """The plain reader of notebooks refuses a misfit in one line too, naming the file and the model."""
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert len(message.splitlines()) == 1 and f"{path} does not fit architecture {model}: " in message, message


def test_bare_state_dict_of_another_model(tmp_path: Path) -> None:
    torch.save(SmallCNN().state_dict(), tmp_path / "small.pt")
    with pytest.raises(CheckpointError, match=r"does not fit architecture vgg\(hidden_units=24\): missing 10 weight"):
        load_checkpoint(tmp_path / "small.pt", reader=read_checkpoint_file)
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(CheckpointError, match="neither an mnist-cnn checkpoint nor a VGG state_dict"):
        load_checkpoint(tmp_path / "linear.pt", reader=read_checkpoint_file)


def test_bare_wider_state_dict_is_inferred(tmp_path: Path) -> None:
    torch.save(VGG(hidden_units=24).state_dict(), tmp_path / "m.pth")
    assert load_checkpoint(tmp_path / "m.pth", reader=read_checkpoint_file).model_options == {"hidden_units": 24}


# --- The format: a safetensors file, its record JSON, nothing pickled ---


def _resumable(tmp_path: Path) -> tuple[dict, Path]:
    """A payload with everything resume needs (int-keyed optimizer state, Adam's betas, every random state)."""
    from test_hostile_checkpoints import resumable_payload

    payload = resumable_payload()
    payload["history"]["val_loss"] = [0.5, math.nan]  # a diverged epoch: JSON has no NaN
    save_checkpoint(tmp_path / "last.pt", payload)
    return payload, tmp_path / "last.pt"


def _same(a: object, b: object, where: str = "payload") -> None:
    """Equal values of the same types all the way down (tensors bit for bit, NaN equal to NaN)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        assert (
            a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
        ), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{index}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, where


def test_a_checkpoint_is_safetensors_with_a_json_record(tmp_path: Path) -> None:
    """Parsed by hand: an 8-byte length, a JSON tensor table whose metadata holds the record as JSON, the tensors."""
    payload, path = _resumable(tmp_path)
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    assert set(header.pop("__metadata__")) == {tensor_record.RECORD_KEY}
    assert all(set(entry) == {"dtype", "shape", "data_offsets"} for entry in header.values())
    assert max(entry["data_offsets"][1] for entry in header.values()) == len(data) - 8 - length
    assert "state_dict.conv_block_1.0.weight" in header and "training_state.rng.torch" in header
    assert "training_state.optimizer.state.0.exp_avg" in header
    tensors = load_tensors(data)
    assert torch.equal(tensors["state_dict.conv_block_1.0.weight"], payload["state_dict"]["conv_block_1.0.weight"])
    record = json.loads(safe_open(str(path), "pt").metadata()[tensor_record.RECORD_KEY], parse_constant=_no_constants)
    assert record["arch"] == "small_cnn" and record["format_version"] == 2
    assert record["state_dict"]["conv_block_1.0.weight"] == {"$tensor": "state_dict.conv_block_1.0.weight"}
    assert record["training_state"]["optimizer"]["state"]["$dict"][0][0] == 0
    assert record["history"]["val_loss"] == [0.5, {"$float": "nan"}]


def _no_constants(name: str) -> None:
    raise AssertionError(f"the record is not strict JSON: {name}")


def test_the_payload_round_trips_exactly_without_unpickling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Int keys, tuples, NaN and every tensor come back as they were, and nothing is unpickled on the way."""
    payload, path = _resumable(tmp_path)

    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("a checkpoint was unpickled")

    for module, name in [(torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")]:
        monkeypatch.setattr(module, name, no_pickle)
    for reader in (read_payload, read_checkpoint_file):
        _same(payload, reader(path))
    state = read_payload(path)["training_state"]
    assert isinstance(state["optimizer"]["param_groups"][0]["betas"], tuple) and 0 in state["optimizer"]["state"]
    assert load_checkpoint(path, reader=read_checkpoint_file).arch == "small_cnn"


def test_the_record_alone_is_read_without_its_tensors(tmp_path: Path) -> None:
    payload, path = _resumable(tmp_path)
    record = read_record(path)
    assert record["metrics"] == payload["metrics"] and record["training_state"]["epoch"] == 1
    assert record["state_dict"]["conv_block_1.0.weight"] is None and record["training_state"]["rng"]["torch"] is None


def test_a_checkpoint_of_the_old_pickle_format_says_to_train_again(tmp_path: Path) -> None:
    """Format 1 was a torch pickle of the same payload: refused by both readers, in one line saying what to do."""
    old = {"format": "mnist-cnn-checkpoint", "format_version": 1, "arch": "vgg", "model_options": {}, "input_scaling": "unit"}
    torch.save({**old, "state_dict": VGG().state_dict(), "training_state": {"epoch": 1}}, tmp_path / "model.pt")
    for reader, fragment in [
        (read_checkpoint_file, "written by an older version of mnist-cnn .* train the model again"),
        (read_payload, r"is a torch pickle, not this project's checkpoint format: load it through the command line \(python -m"),
    ]:
        with pytest.raises(CheckpointError, match=fragment) as caught:
            load_checkpoint(tmp_path / "model.pt", reader=reader)
        assert str(tmp_path / "model.pt") in str(caught.value) and "\n" not in str(caught.value)


def test_a_newer_format_version_is_refused(tmp_path: Path) -> None:
    payload = build_payload(VGG(hidden_units=2), arch="vgg", model_options={"hidden_units": 2}, input_scaling="unit")
    payload["format_version"] = 3
    save_checkpoint(tmp_path / "m.pt", payload)
    with pytest.raises(CheckpointError, match="format version 3, newer than this version reads"):
        load_checkpoint(tmp_path / "m.pt")


def test_the_seed_weights_load_through_the_bounded_reader(seed_weights: Path) -> None:
    loaded = load_checkpoint(seed_weights, reader=read_checkpoint_file)
    assert loaded.is_seed_format and loaded.model_options == {"hidden_units": 16}
    state_dict = torch.load(seed_weights, map_location="cpu", weights_only=True)
    assert list(loaded.model.state_dict()) == list(state_dict)
    assert all(torch.equal(loaded.model.state_dict()[name], value) for name, value in state_dict.items())


def test_the_core_builds_a_bare_state_dict_from_any_reader(seed_weights: Path) -> None:
    """The seed's format is the core's to build (options inferred); reading its torch pickle is the tooling's."""
    loaded = load_checkpoint(seed_weights, reader=lambda path: torch.load(path, map_location="cpu", weights_only=True))
    assert loaded.is_seed_format and loaded.arch == "vgg" and loaded.model_options == {"hidden_units": 16}
    assert loaded.input_scaling == "unit" and loaded.metrics == {} and not loaded.model.training


def test_the_plain_reader_refuses_a_torch_pickle_in_one_line(seed_weights: Path) -> None:
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(seed_weights)
    message = str(caught.value)
    assert message.startswith(f"{seed_weights} is a torch pickle, not this project's checkpoint format") and "\n" not in message
    assert "python -m mnist_cnn.evaluate --checkpoint" in message and "torch.load(weights_only=True)" in message
