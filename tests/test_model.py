"""The networks: shapes through each block, parameter counts, and compatibility with the seed's weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mnist_cnn.errors import ConfigError
from mnist_cnn.model import VGG, SmallCNN, build_model, count_parameters, layer_shapes

SEED_KEYS = [
    f"{block}.{index}.{kind}"
    for block, indices in (("conv_block_1", (0, 2, 4)), ("conv_block_2", (0, 2, 4)), ("fully_connected_linear", (1,)))
    for index in indices
    for kind in ("weight", "bias")
]


@pytest.mark.parametrize("hidden", [8, 16, 32])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_vgg_shapes(hidden: int, batch_norm: bool) -> None:
    shapes = layer_shapes(VGG(hidden_units=hidden, batch_norm=batch_norm), torch.zeros(4, 1, 28, 28))
    assert [s for _, s in shapes] == [(4, 1, 28, 28), (4, hidden, 14, 14), (4, hidden, 7, 7), (4, 10)]


def test_default_vgg_matches_seed_layout() -> None:
    model = VGG()
    assert list(model.state_dict()) == SEED_KEYS
    assert count_parameters(model) == 19_610


def test_seed_weights_load_strictly(seed_weights) -> None:
    state = torch.load(seed_weights, map_location="cpu", weights_only=True)
    assert list(state) == SEED_KEYS
    VGG(hidden_units=16).load_state_dict(state, strict=True)


def test_features_feed_the_classifier() -> None:
    model = VGG().eval()
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(model.fully_connected_linear[1](model.features(x)), model(x), atol=1e-6)
    small = SmallCNN().eval()
    assert torch.allclose(small.classifier[-1](small.features(x)), small(x), atol=1e-6)


def test_small_cnn_output() -> None:
    assert SmallCNN()(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_build_model_errors() -> None:
    with pytest.raises(ConfigError, match="unknown architecture 'resnet'"):
        build_model("resnet")
    with pytest.raises(ConfigError, match="vgg has no option 'depth'"):
        build_model("vgg", depth=3)
    with pytest.raises(ConfigError, match=r"0 is out of bounds \(must be from 1 to 512\)"):
        VGG(hidden_units=0)
    with pytest.raises(ConfigError, match="expected one of conv, block, got 'layer'"):
        VGG(batch_norm=True, batch_norm_at="layer")


def test_vgg_pools_before_the_last_relu_and_can_normalise_once_per_block() -> None:
    # max-pool and ReLU commute, so pooling first computes the same function on a quarter of the values
    x = torch.randn(4, 1, 28, 28)
    model = VGG(hidden_units=8).eval()
    block = model.conv_block_1
    relu_then_pool = nn.MaxPool2d(2)(torch.relu(block[:5](x)))
    assert torch.equal(block(x), relu_then_pool)
    light = VGG(hidden_units=8, block2_units=12, batch_norm=True, batch_norm_at="block")
    norms = [m for m in light.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [n.num_features for n in norms] == [8, 12]
    assert light(x).shape == (4, 10)
    assert light.fully_connected_linear[1].in_features == 12 * 7 * 7


def test_a_stem_and_fewer_convolutions_per_block_set_where_the_cost_goes() -> None:
    """A stem (one convolution and a pool) moves both blocks to a quarter of the pixels; the seed's layout stays as it was."""
    x = torch.randn(4, 1, 28, 28)
    model = VGG(hidden_units=8, block2_units=12, convs_per_block=2, stem_units=6, batch_norm=True, batch_norm_at="block")
    assert [name for name, _ in layer_shapes(model, x)] == ["input", "stem", "conv_block_1", "conv_block_2", "fully_connected_linear"]
    assert dict(layer_shapes(model, x)) == {
        "input": (4, 1, 28, 28),
        "stem": (4, 6, 14, 14),
        "conv_block_1": (4, 8, 7, 7),
        "conv_block_2": (4, 12, 3, 3),
        "fully_connected_linear": (4, 10),
    }
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convolutions] == [(1, 6), (6, 8), (8, 8), (8, 12), (12, 12)]
    assert convolutions[0] is model.stem[0], "the stem's convolution reads the image (whitening sets it)"
    assert torch.equal(model.features(x), torch.flatten(model.conv_block_2(model.conv_block_1(model.stem(x))), 1))
    assert not hasattr(VGG(), "stem") and len(VGG().conv_block_1) == 7  # conv, ReLU, conv, ReLU, conv, pool, ReLU
    for bad, message in (({"convs_per_block": 4}, "4 is out of bounds"), ({"stem_units": -1}, "-1 is out of bounds")):
        with pytest.raises(ConfigError, match=message):
            build_model("vgg", **bad)
