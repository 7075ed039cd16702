"""Reproducibility: seeding every random generator, capturing and restoring their states, deterministic kernels."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from typing import Any

import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's and torch's random generators.

    Args:
        seed: Any integer.

    Returns:
        A fresh ``torch.Generator`` seeded with ``seed``, for data shuffling that does not
        depend on how many random numbers model initialisation consumed.
    """
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Capture every random state training draws from, as tensors and plain lists (a checkpoint keeps them as tensors and JSON).

    Args:
        generator: The data-shuffling/augmentation generator, if any.

    Returns:
        ``{"torch": ..., "cuda": [...] or None, "python": [version, [ints], gauss], "generator": ... or None}``: Python's
        state as lists, not the tuples ``random.getstate`` gives, which :func:`set_rng_state` turns back. (NumPy's
        generator is not captured: training never draws from it.)
    """
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        # only when CUDA was used: querying it would otherwise initialise CUDA for nothing
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "python": [version, list(internal), gauss],
        "generator": generator.get_state() if generator is not None else None,
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` captured (the CUDA part only where CUDA is available)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Within the block, make torch pick deterministic kernels (or not), then restore the previous settings.

    Enabled: ``torch.use_deterministic_algorithms(True, warn_only=True)`` (an op without a deterministic
    kernel warns rather than stopping a long run), cuDNN deterministic with autotuning off, and the
    cuBLAS workspace setting CUDA needs for reproducible matrix products. Torch's filling of every new
    ``torch.empty`` tensor with NaN, which deterministic mode also switches on, is left off: it only
    exposes reads of uninitialised memory (none here) and costs about a tenth of the CPU time.

    Args:
        enabled: Turn deterministic mode on (``False`` leaves torch's defaults in place).
    """
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.utils.deterministic.fill_uninitialized_memory,  # type: ignore[attr-defined]
    )
    if enabled:
        # must be set before cuBLAS initialises; harmless on machines without CUDA
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2], previous[3]
        torch.utils.deterministic.fill_uninitialized_memory = previous[4]  # type: ignore[attr-defined]
