"""Reproducibility: seeding every random generator, capturing their states, deterministic kernels."""

from __future__ import annotations

import contextlib
import os
import random
import sys
from collections.abc import Iterator
from typing import Any

import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's and torch's random generators (every CUDA device's included).

    Returns:
        A fresh ``torch.Generator`` seeded with ``seed``: data shuffling then does not depend on what initialisation drew.
    """
    random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state training draws from, the data ``generator``'s included, as tensors and plain lists (not NumPy's: unused).

    Returns:
        ``{"torch": ..., "cuda": [...] or None, "python": [version, [ints], gauss], "generator": ... or None}``.
    """
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        # only when CUDA was used: querying it would otherwise initialise CUDA for nothing
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None,
        "python": [version, list(internal), gauss],
        "generator": generator.get_state() if generator is not None else None,
    }


@contextlib.contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Within the block, make torch pick deterministic kernels (or leave its defaults), then restore the previous settings.

    Enabled: deterministic algorithms that warn rather than stop a long run where an op has no deterministic kernel,
    cuDNN deterministic without autotuning, and the cuBLAS workspace CUDA needs for reproducible matrix products.
    Filling every new ``torch.empty`` tensor with NaN, which deterministic mode also switches on, stays off: it only
    exposes reads of uninitialised memory (none here) and costs about a tenth of the CPU time.
    """
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        torch.utils.deterministic.fill_uninitialized_memory,  # type: ignore[attr-defined]
    )
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS initialises; harmless without CUDA
        _use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        _use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = previous[2], previous[3]
        torch.utils.deterministic.fill_uninitialized_memory = previous[4]  # type: ignore[attr-defined]


def _use_deterministic_algorithms(mode: bool, warn_only: bool) -> None:
    """``torch.use_deterministic_algorithms``, without loading Inductor when nothing has loaded it.

    The public function imports ``torch._inductor.config`` only to set Inductor's own deterministic flag: about
    0.5 s of every training command's 10 s smoke run on a 2-core Zen 3 (9.4-10.0 s against 10.1-10.5 s). Nothing
    in this project compiles; where something has loaded Inductor already, its flag is set as torch sets it.
    """
    if "torch._inductor.config" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        torch._C._set_deterministic_algorithms(mode, warn_only=warn_only)
