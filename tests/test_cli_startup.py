"""The commands answer ``--help`` and usage errors before importing torch and the other heavy libraries.

Checked with ``python -X importtime``, which lists every module a process imported: no wall-clock time
is asserted, only that the slow imports never happen on these paths.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_cnn import PROJECT_ROOT

HEAVY = ("torch", "torchvision", "torchmetrics", "matplotlib", "sklearn", "pandas", "seaborn", "numpy", "PIL")
COMMANDS = ("train", "evaluate", "predict", "download", "compare")


def imported_modules(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python -X importtime -m ARGS`` and return the result and the names of every module it imported."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
    )
    modules = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "mnist_cnn.tooling.cli.args" in modules, "importtime output not understood"
    return result, modules


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(name for name in modules if name.split(".")[0] in HEAVY)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_answers_without_heavy_imports(command: str) -> None:
    result, modules = imported_modules(f"mnist_cnn.{command}", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: python -m mnist_cnn.{command}")
    assert not heavy_in(modules), heavy_in(modules)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["mnist_cnn.train", "--epochs", "0"], "--epochs: must be at least 1, got 0"),
        (["mnist_cnn.train", "--preset", "turbo"], "invalid choice: 'turbo'"),
        (["mnist_cnn.evaluate", "--batch-size", "0"], "--batch-size: must be at least 1"),
        (["mnist_cnn.predict", "--checkpoint", "m.pt", "--top-k", "11", "x.png"], "--top-k: must be at most 10"),
        (["mnist_cnn.download", "--no-such-option"], "unrecognized arguments"),
        (["mnist_cnn.compare", "--no-such-option"], "unrecognized arguments"),
    ],
)
def test_usage_errors_answer_without_heavy_imports(args: list[str], fragment: str) -> None:
    result, modules = imported_modules(*args)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert len(errors) == 1 and fragment in errors[0], errors
    assert not heavy_in(modules), heavy_in(modules)


def test_the_check_sees_heavy_imports() -> None:
    """The same probe on a path that needs torch finds it, so the tests above can fail."""
    result, modules = imported_modules("mnist_cnn.train", "--device", "tpu")
    assert result.returncode == 1 and "unknown device 'tpu'" in result.stderr
    assert "torch" in heavy_in(modules)


def test_predict_imports_only_what_it_uses(seed_weights: Path) -> None:
    """Classifying an image needs torch, numpy and Pillow, not torchvision, torchmetrics or the plotting libraries."""
    image = PROJECT_ROOT / "docs" / "images" / "sample_digit_3.jpg"
    result, modules = imported_modules("mnist_cnn.predict", "--checkpoint", str(seed_weights), str(image), "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(str(image))
    assert {"torch", "numpy", "PIL"} <= {name.split(".")[0] for name in modules}
    unused = ("torchvision", "torchmetrics", "matplotlib", "sklearn", "pandas", "seaborn")
    assert not [name for name in modules if name.split(".")[0] in unused]
