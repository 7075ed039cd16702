"""Batch data augmentation on tensors: small random shifts, rotations and scalings, done in one ``grid_sample``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class RandomAffine:
    """Randomly shift, rotate and scale a batch of images ``[N, C, H, W]`` already on the device.

    Args:
        max_shift: Largest shift in pixels, in each direction.
        max_rotation: Largest rotation in degrees, either way.
        max_scale: Largest relative change of size (0.1 means 0.9x to 1.1x).
        generator: Random generator (on the CPU) for reproducible draws.
    """

    def __init__(
        self, max_shift: float = 2.0, max_rotation: float = 10.0, max_scale: float = 0.1, generator: torch.Generator | None = None
    ) -> None:
        self.max_shift = max_shift
        self.max_rotation = max_rotation
        self.max_scale = max_scale
        self.generator = generator

    def _uniform(self, n: int, limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=self.generator) * 2 - 1) * limit

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        angle = self._uniform(n, math.radians(self.max_rotation))
        scale = 1 + self._uniform(n, self.max_scale)
        # affine_grid works in [-1, 1] coordinates, so a shift of p pixels is 2p / size
        shift_x = self._uniform(n, 2 * self.max_shift / width)
        shift_y = self._uniform(n, 2 * self.max_shift / height)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
        theta = theta.to(device=images.device, dtype=images.dtype)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        # zeros padding is right for unit-scaled inputs; for standardised inputs pad with the background value
        background = images.amin(dim=(1, 2, 3), keepdim=True)
        warped = F.grid_sample(images - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return warped + background
