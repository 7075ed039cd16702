"""The training and evaluation loops, on small slices of MNIST so they run in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mnist_cnn import data, engine
from mnist_cnn.augment import RandomAffine
from mnist_cnn.errors import TrainingDiverged
from mnist_cnn.model import VGG

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def small_splits(data_dir: Path) -> tuple[data.MNISTArrays, data.MNISTArrays]:
    return data.load_split("train", data_dir).head(1_024), data.load_split("test", data_dir).head(512)


def _batches(split: data.MNISTArrays, batch_size: int = 64, shuffle: bool = False, seed: int = 0) -> data.InMemoryBatches:
    return data.memory_batches(split, batch_size, "standard", shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def test_train_returns_history_with_epoch_zero(small_splits) -> None:
    train_split, test_split = small_splits
    torch.manual_seed(0)
    model = VGG(hidden_units=8, batch_norm=True)
    lines: list[str] = []
    history = engine.train(
        model, _batches(train_split, shuffle=True), _batches(test_split), nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), epochs=2, device=CPU, progress=False, log=lines.append,
    )
    assert history["epoch"] == [0, 1, 2]
    assert set(history) == set(engine.HISTORY_KEYS) and all(len(v) == 3 for v in history.values())
    assert history["seconds"][0] == 0.0 and all(s > 0 for s in history["seconds"][1:])
    assert history["train_loss"][2] < history["train_loss"][0]
    assert history["test_acc"][2] > 0.7 > history["test_acc"][0]
    assert len(lines) == 3 and lines[0].startswith("epoch  0")


def test_test_step_matches_a_hand_count(small_splits) -> None:
    _, test_split = small_splits
    torch.manual_seed(0)
    model = VGG(hidden_units=4).eval()
    loss, accuracy = engine.test_step(model, _batches(test_split, 100), nn.CrossEntropyLoss(), CPU)
    inputs = data.scale_images(test_split.images, "standard")
    with torch.no_grad():
        logits = model(inputs)
    assert accuracy == pytest.approx((logits.argmax(1) == test_split.labels).float().mean().item())
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, test_split.labels).item(), rel=1e-5)


def test_predict_is_batched_and_consistent(small_splits) -> None:
    _, test_split = small_splits
    model = VGG(hidden_units=4)
    predictions = engine.predict(model, _batches(test_split, 128), CPU)
    assert predictions.probabilities.shape == (512, 10)
    assert torch.allclose(predictions.probabilities.sum(1), torch.ones(512), atol=1e-5)
    assert torch.equal(predictions.predicted, predictions.probabilities.argmax(1))
    assert predictions.targets.tolist() == test_split.labels.tolist()


def test_bf16_autocast_and_channels_last_train(small_splits) -> None:
    train_split, _ = small_splits
    model = VGG(hidden_units=8, batch_norm=True).to(memory_format=torch.channels_last)
    loss, accuracy = engine.train_step(
        model, _batches(train_split, shuffle=True), nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.05),
        CPU, autocast_dtype=torch.bfloat16, channels_last=True,
    )
    assert 0 < loss < 2.4 and 0 <= accuracy <= 1


def test_divergence_stops_with_a_clear_message(small_splits) -> None:
    train_split, _ = small_splits
    model = VGG(hidden_units=8)
    with pytest.raises(TrainingDiverged, match="learning rate is probably too high"):
        engine.train_step(model, _batches(train_split), nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=1e6), CPU)


def test_random_affine_keeps_shape_and_mass() -> None:
    images = data.scale_images(torch.zeros(8, 28, 28, dtype=torch.uint8), "unit")
    images[:, :, 10:18, 10:18] = 1.0
    augmented = RandomAffine(max_shift=2, max_rotation=10, max_scale=0.1, generator=torch.Generator().manual_seed(0))(images)
    assert augmented.shape == images.shape
    assert not torch.equal(augmented, images)
    assert torch.allclose(augmented.sum((1, 2, 3)), images.sum((1, 2, 3)), rtol=0.25)
    identity = RandomAffine(max_shift=0, max_rotation=0, max_scale=0)(images)
    assert torch.allclose(identity, images, atol=1e-5)
