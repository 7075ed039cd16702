"""The package's two layers: the study's core never imports the tooling, and the notebooks import only the core."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mnist_cnn"
#: ``python -m mnist_cnn.<command>`` keeps working through these faces, which only hand over to the tooling.
COMMAND_FACES = {"train.py", "evaluate.py", "predict.py", "compare.py", "download.py"}


def imported_modules(source: str) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``source`` names, at any depth (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def core_modules() -> list[Path]:
    return sorted(
        path
        for path in PACKAGE.rglob("*.py")
        if "tooling" not in path.relative_to(PACKAGE).parts and path.relative_to(PACKAGE).as_posix() not in COMMAND_FACES
    )


def test_the_checker_sees_imports_at_any_depth() -> None:
    source = "def f():\n    from mnist_cnn.tooling.runctl import resume\n"
    assert "mnist_cnn.tooling.runctl" in imported_modules(source)


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_the_core_never_imports_the_tooling(path: Path) -> None:
    tooling = sorted(name for name in imported_modules(path.read_text()) if name.startswith("mnist_cnn.tooling"))
    assert not tooling, f"{path.relative_to(ROOT)} imports the tooling layer: {tooling}"


def test_the_command_faces_only_hand_over() -> None:
    for name in COMMAND_FACES:
        source = (PACKAGE / name).read_text()
        assert imported_modules(source) <= {f"mnist_cnn.tooling.cli.{name[:-3]}", f"mnist_cnn.tooling.cli.{name[:-3]}.console_main"}


@pytest.mark.parametrize("notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.stem)
def test_notebooks_import_only_the_core(notebook: Path) -> None:
    cells = json.loads(notebook.read_text())["cells"]
    code = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
    assert not [name for name in imported_modules(code) if name.startswith("mnist_cnn.tooling")]
