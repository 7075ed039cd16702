"""The data layer: where MNIST is looked for, how damaged files are reported, and how batches are served."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mnist_cnn import DEFAULT_DATA_DIR, data, mnist
from mnist_cnn.errors import DataError
from mnist_cnn.run_data import torchvision_loader
from mnist_cnn.tooling.cli import train
from mnist_cnn.tooling.cli.args import run_cli
from mnist_cnn.tooling.safety import mnist_files


def test_data_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MNIST_DATA_DIR", str(tmp_path / "from-env"))
    assert mnist.resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert mnist.resolve_data_dir() == tmp_path / "from-env"
    monkeypatch.delenv("MNIST_DATA_DIR")
    assert mnist.resolve_data_dir() == DEFAULT_DATA_DIR


def test_load_splits(data_dir: Path) -> None:
    train, test = data.load_split("train", data_dir), data.load_split("test", data_dir)
    assert train.images.shape == (60_000, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10_000, 28, 28)
    assert train.labels.dtype == torch.int64 and test.labels[:5].tolist() == [7, 2, 1, 0, 4]


def test_missing_directory_names_the_variable_and_files(tmp_path: Path, offline: None) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as caught:
        data.load_split("train", missing)
    message = str(caught.value)
    assert "MNIST_DATA_DIR" in message and str(missing) in message
    assert all(name in message for name in mnist.RAW_FILES)
    assert not missing.exists(), "a failed download must not leave directories behind"


def test_truncated_file_is_named(data_copy: Path) -> None:
    path = mnist.raw_folder(data_copy) / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is truncated") as caught:
        data.load_split("test", data_copy)
    assert "\n" not in str(caught.value) and "python -m mnist_cnn.download" in str(caught.value)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is truncated: 100000 bytes, expected 7840016"):
        mnist_files.ensure_mnist(data_copy, download=False)


def test_wrong_magic_is_named(data_copy: Path) -> None:
    path = mnist.raw_folder(data_copy) / "train-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[2:4] = b"\x08\x03"  # an image magic number in a label file
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte is truncated or corrupt"):
        data.load_split("train", data_copy)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte is corrupt or not an IDX label file"):
        mnist_files.ensure_mnist(data_copy, download=False)


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw + b"\x00",  # a byte more than the header says
        lambda raw: raw[:8] + (14).to_bytes(4, "big") + (56).to_bytes(4, "big") + raw[16:],  # 14x56 images, the same size
        lambda raw: raw[:16],  # the header alone
        lambda raw: b"",
    ],
    ids=["longer", "other-shape", "header-only", "empty"],
)
def test_the_study_loader_refuses_a_file_that_is_not_mnists_in_one_line(data_copy: Path, damage: Callable[[bytes], bytes]) -> None:
    path = mnist.raw_folder(data_copy) / "t10k-images-idx3-ubyte"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte is truncated or corrupt") as caught:
        data.load_split("test", data_copy)
    assert "\n" not in str(caught.value)
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        mnist_files.ensure_mnist(data_copy, download=False)


def test_notebook_1_knows_each_recipes_input_scaling() -> None:
    """Notebook 1 names a recipe's input scaling without loading the presets: ``unit`` for the seed's, ``standard`` for the rest."""
    from mnist_cnn.presets import PRESETS

    assert {name: preset.input_scaling for name, preset in PRESETS.items()} == {n: "unit" if n == "seed" else "standard" for n in PRESETS}


def test_flipped_pixel_is_caught_by_checksum(data_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = mnist.raw_folder(data_copy) / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[5_000] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="train-images-idx3-ubyte is corrupt: its MD5"):
        mnist_files.ensure_mnist(data_copy, download=False)
    # the train command checks the MD5s before it writes anything
    status = run_cli(train.main, ["--smoke", "--quiet", "--data-dir", str(data_copy), "--out", str(tmp_path / "out")])
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 1 and len(error) == 1 and "train-images-idx3-ubyte is corrupt: its MD5" in error[0], error
    assert not (tmp_path / "out").exists()


def test_the_study_loads_without_torchvision_or_the_tooling() -> None:
    """Importing MNIST's facts loads no torch, and the data module neither torchvision (seconds) nor the commands' tooling."""
    probe = (
        "import sys; import mnist_cnn.mnist; print('torch' in sys.modules); import mnist_cnn.data; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision' or m.startswith('mnist_cnn.tooling')))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["False", "[]"], result.stdout


def test_count_mismatch_is_reported(data_copy: Path) -> None:
    path = mnist.raw_folder(data_copy) / "t10k-labels-idx1-ubyte"
    raw = bytearray(path.read_bytes())
    raw[4:8] = (9_999).to_bytes(4, "big")
    path.write_bytes(bytes(raw[:-1]))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte is truncated or corrupt"):
        data.load_split("test", data_copy)
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte says it holds 9999 items, expected 10000"):
        mnist_files.ensure_mnist(data_copy, download=False)


def test_read_only_root_is_not_written(data_copy: Path) -> None:
    before = sorted(p.name for p in mnist.raw_folder(data_copy).iterdir())
    for path in [data_copy, *data_copy.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        assert len(data.load_split("test", data_copy)) == 10_000
    finally:
        for path in [data_copy, *data_copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    assert sorted(p.name for p in mnist.raw_folder(data_copy).iterdir()) == before


def test_scaling() -> None:
    images = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)
    unit = data.scale_images(images, "unit")
    assert unit.shape == (1, 1, 2, 2) and unit.max() == 1.0 and unit.min() == 0.0
    standard = data.scale_images(images, "standard")
    assert torch.allclose(standard, (unit - mnist.MNIST_MEAN) / mnist.MNIST_STD)


def test_in_memory_batches_cover_every_example_once() -> None:
    images, labels = torch.arange(10.0).view(10, 1, 1, 1), torch.arange(10)
    batches = data.InMemoryBatches(images, labels, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    seen = [batch_labels for _, batch_labels in batches]
    assert len(batches) == 3 and [len(b) for b in seen] == [4, 4, 2]
    assert sorted(torch.cat(seen).tolist()) == list(range(10))
    assert torch.cat(seen).tolist() != list(range(10)), "shuffle should change the order"
    for batch_images, batch_labels in batches:
        assert batch_images.flatten().long().tolist() == batch_labels.tolist(), "images and labels stay paired"


def test_shuffle_is_reproducible() -> None:
    images, labels = torch.zeros(100, 1, 1, 1), torch.arange(100)

    def order(seed: int) -> list[int]:
        batches = data.InMemoryBatches(images, labels, 32, shuffle=True, generator=torch.Generator().manual_seed(seed))
        return torch.cat([b for _, b in batches]).tolist()

    assert order(1) == order(1) and order(1) != order(2)


def test_torchvision_pipeline_matches_memory_pipeline(data_dir: Path) -> None:
    loader = torchvision_loader("test", 16, data_dir)
    images, labels = next(iter(loader))
    expected = data.scale_images(data.load_split("test", data_dir).images[:16], "unit")
    assert torch.allclose(images, expected) and labels.tolist()[:5] == [7, 2, 1, 0, 4]


def test_data_root_env_is_set_for_tests() -> None:
    assert os.environ.get("MNIST_DATA_DIR"), "the root conftest must point tests at a local MNIST copy"


def test_validation_split_is_balanced_fixed_and_disjoint(data_dir: Path) -> None:
    train = data.load_split("train", data_dir)
    rest, validation = data.validation_split(train)
    assert len(rest) == 55_000 and len(validation) == 5_000
    assert validation.labels.bincount(minlength=10).tolist() == [data.VALIDATION_PER_CLASS] * 10
    held_out = data.validation_indices(train.labels)
    assert torch.equal(held_out, data.validation_indices(train.labels)), "the same images for every run"
    assert torch.equal(validation.images, train.images[held_out])
    # no image is both held out and trained on: together they are the training set, each index once
    keep = torch.ones(60_000, dtype=torch.bool)
    keep[held_out] = False
    assert torch.equal(rest.labels, train.labels[keep]) and int(keep.sum()) == 55_000
    description = data.describe_validation(train)
    assert description["size"] == 5_000 and description["seed"] == data.VALIDATION_SEED and description["held_out"]
    assert len(description["indices_sha256"]) == 64


def test_validation_indices_depend_on_the_seed_only() -> None:
    labels = torch.arange(10).repeat_interleave(7)
    first = data.validation_indices(labels, per_class=3, seed=1)
    assert len(first) == 30 and labels[first].bincount().tolist() == [3] * 10
    assert torch.equal(first, data.validation_indices(labels, per_class=3, seed=1))
    assert not torch.equal(first, data.validation_indices(labels, per_class=3, seed=2))
    with pytest.raises(DataError, match="fewer than the 8"):
        data.validation_indices(labels, per_class=8)
