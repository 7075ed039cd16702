"""Checkpoints: round trips, the seed's bare state_dict, and every way a file can be wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from mnist_cnn.analysis import measure_checkpoint
from mnist_cnn.checkpoint import build_payload, load_checkpoint, save_checkpoint
from mnist_cnn.errors import CheckpointError
from mnist_cnn.model import VGG, SmallCNN


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
    loaded = load_checkpoint(seed_weights)
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
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists()


def test_other_architecture_says_what_differs(tmp_path: Path) -> None:
    payload = build_payload(SmallCNN(), arch="small_cnn", model_options={}, input_scaling="standard")
    payload["arch"], payload["model_options"] = "vgg", {"hidden_units": 16}
    save_checkpoint(tmp_path / "m.pt", payload)
    with pytest.raises(CheckpointError, match=r"does not fit architecture vgg\(hidden_units=16\): missing"):
        load_checkpoint(tmp_path / "m.pt")


def test_wrong_width_reports_shapes(tmp_path: Path) -> None:
    payload = build_payload(VGG(hidden_units=8), arch="vgg", model_options={"hidden_units": 16}, input_scaling="unit")
    save_checkpoint(tmp_path / "m.pt", payload)
    with pytest.raises(CheckpointError, match=r"shapes differ \(conv_block_1.0.weight \[8, 1, 3, 3\] vs \[16, 1, 3, 3\]"):
        load_checkpoint(tmp_path / "m.pt")


def test_bare_state_dict_of_another_model(tmp_path: Path) -> None:
    torch.save(SmallCNN().state_dict(), tmp_path / "small.pt")
    with pytest.raises(CheckpointError, match=r"does not fit architecture vgg\(hidden_units=24\): missing 10 weight"):
        load_checkpoint(tmp_path / "small.pt")
    torch.save(torch.nn.Linear(4, 2).state_dict(), tmp_path / "linear.pt")
    with pytest.raises(CheckpointError, match="neither an mnist-cnn checkpoint nor a VGG state_dict"):
        load_checkpoint(tmp_path / "linear.pt")


def test_bare_wider_state_dict_is_inferred(tmp_path: Path) -> None:
    torch.save(VGG(hidden_units=24).state_dict(), tmp_path / "m.pth")
    assert load_checkpoint(tmp_path / "m.pth").model_options == {"hidden_units": 24}
