"""Starting ``python -m mnist_cnn.train`` as a live subprocess, for the tests of locks, signals and lost runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def environment() -> dict[str, str]:
    """This process's environment with unbuffered output, so a child's progress lines arrive as they are printed."""
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def start_training(out: Path, *args: str) -> subprocess.Popen:
    """Start ``train ARGS --out OUT`` and return once it has finished epoch 1 (``last.pt`` exists and it is mid-run)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mnist_cnn.train", *args, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("epoch  1 |"):
            return process
    process.wait()
    pytest.fail(f"training ended (status {process.returncode}) before epoch 1: {process.stderr.read()}")
