"""Activations, penultimate features and 2-D embeddings (notebook 5's helpers), on a small untrained VGG."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from mnist_cnn.analysis import Predictions, most_confident_mistakes
from mnist_cnn.digits.figures import plot_preprocessing
from mnist_cnn.digits.inference import Prediction
from mnist_cnn.digits.preprocess import preprocess
from mnist_cnn.errors import ConfigError
from mnist_cnn.features import collect_activations, default_layers, embed_2d, extract_features, nearest_centroid_accuracy
from mnist_cnn.model import VGG


@pytest.fixture()
def model() -> VGG:
    torch.manual_seed(0)
    return VGG(hidden_units=4, batch_norm=True).eval()


def test_collect_activations_records_each_block_and_removes_its_hooks(model):
    images = torch.rand(3, 1, 28, 28)
    activations = collect_activations(model, images)
    assert list(activations) == default_layers(model) == ["conv_block_1", "conv_block_2"]
    assert [tuple(a.shape) for a in activations.values()] == [(3, 4, 14, 14), (3, 4, 7, 7)]
    assert all(not module._forward_hooks for module in model.modules())
    with torch.no_grad():
        assert torch.allclose(activations["conv_block_2"].flatten(1), model.features(images))


def test_collect_activations_names_unknown_layers(model):
    assert set(collect_activations(model, torch.rand(1, 1, 28, 28), ["conv_block_1.0"])) == {"conv_block_1.0"}
    with pytest.raises(ConfigError, match="no layer"):
        collect_activations(model, torch.rand(1, 1, 28, 28), ["conv3"])


def test_features_in_batches_match_one_pass(model):
    images = torch.rand(10, 1, 28, 28)
    with torch.no_grad():
        expected = model.features(images)
    assert torch.allclose(extract_features(model, images, batch_size=3), expected, atol=1e-6)


def test_embeddings_are_2d_and_reproducible():
    features = torch.randn(120, 64)
    assert embed_2d(features, "pca").shape == (120, 2)
    first, second = (embed_2d(features[:60], "tsne", seed=1, tsne_iterations=250) for _ in range(2))
    assert first.shape == (60, 2) and np.allclose(first, second)
    with pytest.raises(ConfigError, match="unknown embedding"):
        embed_2d(features, "umap")


def test_most_confident_mistakes_come_first():
    probabilities = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7]])
    predictions = Predictions(targets=torch.tensor([0, 0, 0, 1]), predicted=probabilities.argmax(1), probabilities=probabilities)
    assert most_confident_mistakes(predictions).tolist() == [1, 2]
    assert most_confident_mistakes(predictions, 1).tolist() == [1]


def test_plot_preprocessing_draws_every_step():
    digit = np.zeros((40, 30), np.float32)
    digit[5:35, 12:18] = 255  # a "1"
    steps = preprocess(255 - digit)
    fig = plot_preprocessing(steps, Prediction(file="x", digit=1, probability=0.9, top_k=[(1, 0.9), (7, 0.1)]))
    assert len(fig.axes) == 6
    plt.close(fig)


def test_nearest_centroid_accuracy_is_one_for_separate_groups_and_low_for_mixed_ones():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    apart = rng.normal(size=(200, 2)) * 0.1 + labels[:, None] * 10.0
    assert nearest_centroid_accuracy(apart, labels) == 1.0
    mixed = rng.normal(size=(200, 2))
    assert nearest_centroid_accuracy(mixed, torch.from_numpy(labels)) < 0.5
