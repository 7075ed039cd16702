"""The networks: the seed's VGG-style CNN (optionally with batch norm) and a small fast CNN."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mnist_cnn.mnist import IMAGE_SIZE, NUM_CLASSES
from mnist_cnn.model_options import check_options


def _conv_block(in_channels: int, hidden_units: int, batch_norm: bool, batch_norm_at: str = "conv", convs: int = 3) -> nn.Sequential:
    every_conv = batch_norm and batch_norm_at == "conv"
    layers: list[nn.Module] = []
    for i in range(convs):
        layers.append(nn.Conv2d(in_channels if i == 0 else hidden_units, hidden_units, kernel_size=3, padding=1, bias=not every_conv))
        if every_conv:
            layers.append(nn.BatchNorm2d(hidden_units))
        if i < convs - 1:
            layers.append(nn.ReLU())
    # Pool before the block's last ReLU: max-pool and ReLU commute, and the ReLU then touches a quarter of the
    # values. Parameter names are unchanged (neither layer has any), so the seed's weights still load.
    layers.append(nn.MaxPool2d(kernel_size=2))
    if batch_norm and batch_norm_at == "block":
        # One normalisation per block, on the pooled map: a quarter of the values of one after each convolution.
        layers.append(nn.BatchNorm2d(hidden_units))
    layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """A VGG-style CNN for 28x28 digits: two blocks of 3x3 convolutions (three each in the seed), each then a 2x2 max-pool.

    With ``batch_norm=False`` (the default) the layer names match the seed project's published weights exactly:
    ``conv_block_1.{0,2,4}``, ``conv_block_2.{0,2,4}``, ``fully_connected_linear.1``.

    Args:
        hidden_units: Channels in every convolution (16 in the seed).
        batch_norm: Add ``BatchNorm2d`` layers (convolutions they follow drop their bias).
        batch_norm_at: ``"conv"`` to normalise after every convolution, ``"block"`` once per block, after the
            max-pool (lighter: two normalisations on pooled maps instead of six on full ones).
        block2_units: Channels in the second block (default: ``hidden_units``).
        convs_per_block: Convolutions in each block (3 in the seed).
        stem_units: With a positive number, a stem first: one convolution with that many channels at full
            resolution, then its own 2x2 max-pool, so both blocks run at a quarter and a sixteenth of the pixels
            (the blocks' cost falls about fourfold; the linear layer then reads a 3x3 map). 0 (the seed): no stem.
    """

    def __init__(
        self,
        hidden_units: int = 16,
        in_channels: int = 1,
        num_classes: int = NUM_CLASSES,
        batch_norm: bool = False,
        batch_norm_at: str = "conv",
        block2_units: int | None = None,
        convs_per_block: int = 3,
        stem_units: int = 0,
    ) -> None:
        super().__init__()
        block2_units = hidden_units if block2_units is None else block2_units
        check_options(
            "vgg",
            {
                "hidden_units": hidden_units,
                "block2_units": block2_units,
                "batch_norm_at": batch_norm_at,
                "convs_per_block": convs_per_block,
                "stem_units": stem_units,
            },
        )
        side = IMAGE_SIZE
        if stem_units:  # [N, in, 28, 28] -> [N, s, 28, 28] -> pool -> [N, s, 14, 14]
            self.stem = _conv_block(in_channels, stem_units, batch_norm, batch_norm_at, convs=1)
            in_channels, side = stem_units, side // 2
        # [N, in, 28, 28] -> [N, h, 28, 28] x3 -> pool -> [N, h, 14, 14] (after a stem: 14 -> 7)
        self.conv_block_1 = _conv_block(in_channels, hidden_units, batch_norm, batch_norm_at, convs_per_block)
        # [N, h, 14, 14] -> [N, h2, 14, 14] x3 -> pool -> [N, h2, 7, 7] (after a stem: 7 -> 3)
        self.conv_block_2 = _conv_block(hidden_units, block2_units, batch_norm, batch_norm_at, convs_per_block)
        # [N, h2, 7, 7] -> flatten -> [N, h2*49] -> [N, 10]
        side //= 4
        self.fully_connected_linear = nn.Sequential(nn.Flatten(), nn.Linear(block2_units * side * side, num_classes))

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "stem"):
            x = self.stem(x)
        return self.conv_block_2(self.conv_block_1(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened output of the convolution blocks (the linear layer's input)."""
        return torch.flatten(self._blocks(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fully_connected_linear(self._blocks(x))


class SmallCNN(nn.Module):
    """A small, fast two-convolution CNN in the style of the fastest public MNIST recipes.

    28x28 -> conv 5x5 (``channels1``) -> 24x24 -> pool -> 12x12 -> conv 3x3 (``channels2``) -> 10x10 -> pool -> 5x5 -> fc
    (``fc_units``) -> fc.

    Args:
        batch_norm: Add ``BatchNorm2d`` after each convolution (which then drops its bias).
        batch_norm_at: ``"conv"`` to normalise the convolution's output, ``"block"`` after the max-pool (a quarter of the values).
    """

    def __init__(
        self,
        channels1: int = 24,
        channels2: int = 32,
        fc_units: int = 256,
        batch_norm: bool = False,
        num_classes: int = NUM_CLASSES,
        batch_norm_at: str = "conv",
    ) -> None:
        super().__init__()
        check_options("small_cnn", {"channels1": channels1, "channels2": channels2, "fc_units": fc_units, "batch_norm_at": batch_norm_at})

        def block(conv: nn.Conv2d) -> nn.Sequential:
            norm = [nn.BatchNorm2d(conv.out_channels)] if batch_norm else []
            if batch_norm_at == "block":
                return nn.Sequential(conv, nn.MaxPool2d(2), *norm, nn.ReLU())
            return nn.Sequential(conv, *norm, nn.MaxPool2d(2), nn.ReLU())

        self.conv_block_1 = block(nn.Conv2d(1, channels1, kernel_size=5, bias=not batch_norm))
        self.conv_block_2 = block(nn.Conv2d(channels1, channels2, kernel_size=3, bias=not batch_norm))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(channels2 * 5 * 5, fc_units), nn.ReLU(), nn.Linear(fc_units, num_classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden fully connected layer's activations (the last layer's input)."""
        return self.classifier[:-1](self.conv_block_2(self.conv_block_1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv_block_2(self.conv_block_1(x)))


ARCHITECTURES: dict[str, type[nn.Module]] = {"vgg": VGG, "small_cnn": SmallCNN}


def build_model(arch: str = "vgg", **options: Any) -> nn.Module:
    """A freshly initialised ``"vgg"`` or ``"small_cnn"`` with that class's ``options`` (e.g. ``hidden_units=16``).

    Raises:
        ConfigError: Unknown architecture or option.
    """
    check_options(arch, options)
    return ARCHITECTURES[arch](**options)


def layer_shapes(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """Run ``example`` through the model's top-level children in order (as ``VGG`` and ``SmallCNN`` run) and record each output's shape.

    Returns:
        ``[("input", shape), (child name, shape after it), ...]``.
    """
    shapes = [("input", tuple(example.shape))]
    x = example
    with torch.no_grad():
        for name, child in model.named_children():
            x = child(x)
            shapes.append((name, tuple(x.shape)))
    return shapes


def parameter_table(model: nn.Module) -> list[tuple[str, tuple[int, ...], int]]:
    """Each parameter tensor's name, shape and number of values."""
    return [(name, tuple(p.shape), p.numel()) for name, p in model.named_parameters()]


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Total number of (trainable) parameter values."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
