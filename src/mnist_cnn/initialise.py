"""Starting weights from fast-training work: a first convolution whitened on the data, and identity-like convolutions."""

from __future__ import annotations

import torch
from torch import nn

#: Added to every eigenvalue before dividing by its square root: keeps the flattest patch directions (pixel noise)
#: from being amplified without bound.
WHITEN_EPS = 5e-4
#: Training images whose patches estimate the covariance: plenty for a 9- or 25-dimensional estimate.
WHITEN_IMAGES = 5000


def convolutions(model: nn.Module) -> list[nn.Conv2d]:
    """The model's convolutions in the order they run (module order, which is the order of both networks here)."""
    return [module for module in model.modules() if isinstance(module, nn.Conv2d)]


@torch.no_grad()
def whiten_first_conv(model: nn.Module, images: torch.Tensor, eps: float = WHITEN_EPS) -> int:
    """Set the first convolution's filters to the training patches' principal directions, each scaled to unit variance.

    Why it helps: a random first layer spends the first epochs learning to see edges and strokes; the principal
    directions of the image patches already are those edges (ordered by how much of the images they explain), and
    scaling each to unit variance gives every later layer inputs of the same size. Filters come in +/- pairs so that
    the ReLU after them keeps both signs of every direction. Filters beyond twice the patch size keep their random
    start; with a bias, each filter is centred on the mean patch.

    Args:
        model: A network whose first :class:`~torch.nn.Conv2d` reads the images.
        images: Training images as the model sees them, ``[N, C, H, W]`` (only the first :data:`WHITEN_IMAGES` are read).

    Returns:
        How many filters were set.
    """
    conv = convolutions(model)[0]
    patches = nn.functional.unfold(images[:WHITEN_IMAGES].float(), conv.kernel_size)  # [N, C*k*k, positions]
    patches = patches.transpose(1, 2).reshape(-1, patches.shape[1]).double()
    eigenvalues, eigenvectors = torch.linalg.eigh(torch.cov(patches.T))  # ascending order
    directions = (eigenvectors.T / (eigenvalues.clamp(min=0) + eps).sqrt()[:, None]).flip(0)  # largest first
    pairs = min(conv.out_channels // 2, len(directions))
    filters = torch.cat([directions[:pairs], -directions[:pairs]]).to(conv.weight.dtype)
    conv.weight[: 2 * pairs] = filters.reshape(2 * pairs, *conv.weight.shape[1:])
    if conv.bias is not None:
        conv.bias[: 2 * pairs] = -(filters @ patches.mean(0).to(filters.dtype))
    return 2 * pairs


@torch.no_grad()
def identity_init(model: nn.Module) -> int:
    """Make every convolution after the first start as (part of) the identity, in place; returns how many were changed.

    Why it helps: a stack of random 3x3 convolutions starts by scrambling the image; started as the identity (its first
    filters copy its inputs, the rest stay random), a deep block first passes its input through and learns only what to
    add, so early steps are not spent undoing the scramble. The first convolution reads the image and is
    :func:`whiten_first_conv`'s to set.
    """
    changed = convolutions(model)[1:]
    for conv in changed:
        keep = min(conv.in_channels, conv.out_channels)
        nn.init.dirac_(conv.weight[:keep])
    return len(changed)
