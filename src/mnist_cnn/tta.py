"""Test-time augmentation: a model's logits averaged over copies of each image shifted by a pixel."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

#: The views: the image itself and one-pixel shifts up, down, left and right. MNIST digits sit in the middle
#: 20x20 of a 28x28 frame, so rolling by a pixel only moves background from one edge to the other.
SHIFTS: tuple[tuple[int, int], ...] = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


@torch.no_grad()
def tta_logits(model: nn.Module, images: torch.Tensor, shifts: tuple[tuple[int, int], ...] = SHIFTS) -> torch.Tensor:
    """The mean of ``model``'s logits over ``images`` shifted by each of ``shifts`` (rows, columns).

    Why it helps: a digit drawn a pixel off-centre is a slightly different input, and the network's mistakes
    on it differ from view to view; averaging the views cancels part of them. It costs one forward pass per view
    (five by default) at inference time, nothing in training.

    Args:
        model: The network, in evaluation mode.
        images: ``[N, 1, 28, 28]`` images as the model sees them.
        shifts: ``(rows, columns)`` offsets; ``(0, 0)`` is the image itself.

    Returns:
        ``[N, classes]`` averaged logits.
    """
    views = [model(torch.roll(images, shifts=shift, dims=(2, 3))) for shift in shifts]
    return torch.stack(views).float().mean(0)


@torch.no_grad()
def tta_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    shifts: tuple[tuple[int, int], ...] = SHIFTS,
) -> float:
    """Accuracy of :func:`tta_logits` over ``(images, labels)`` batches.

    Args:
        model: The trained network (put in evaluation mode here).
        batches: Evaluation batches, e.g. the validation split.
        device: Where ``model`` lives.
        shifts: The views to average.

    Returns:
        The fraction of images whose averaged logits pick the right digit.
    """
    model.eval()
    correct = seen = 0
    for images, labels in batches:
        predicted = tta_logits(model, images.to(device), shifts).argmax(1).cpu()
        correct += int((predicted == labels).sum())
        seen += len(labels)
    return correct / max(seen, 1)


def tta_test_accuracy(model: nn.Module, scaling: str, data_dir: str | None, device: torch.device, batch_size: int = 1000) -> float:
    """:func:`tta_accuracy` on the 10,000 MNIST test images, scaled as the model was trained (``"unit"`` or ``"standard"``)."""
    from mnist_cnn.data import load_split, memory_batches

    return tta_accuracy(model, memory_batches(load_split("test", data_dir), batch_size, scaling), device)
