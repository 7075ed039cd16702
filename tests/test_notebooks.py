"""The committed form of the notebooks (nbval executes them; this checks how they are stored and laid out).

Policy: notebooks are committed with the outputs of one clean top-to-bottom run (``make execute-notebooks``),
so execution counts run 1, 2, 3, ... with no errors, and ``# NBVAL_CHECK_OUTPUT`` cells have the reference
output that nbval compares against.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mnist_cnn import NOTEBOOKS_DIR

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def test_notebooks_are_numbered_in_sequence() -> None:
    numbers = [int(re.match(r"(\d\d)_[a-z0-9_]+\.ipynb$", p.name).group(1)) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(NOTEBOOKS) + 1)) and len(NOTEBOOKS) >= 4


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_layout(path: Path) -> None:
    notebook = _load(path)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    cells = notebook["cells"]
    number = int(path.name[:2])
    assert cells[0]["cell_type"] == "markdown" and _source(cells[0]).startswith(f"# {number}. "), "opens with its title"
    code = [c for c in cells if c["cell_type"] == "code"]
    imports = code[1] if "google.colab" in _source(code[0]) else code[0]  # the Colab install cell (tests/test_colab.py) comes first
    assert "%load_ext autoreload" in _source(imports) and "%autoreload 2" in _source(imports)
    assert "assert " in _source(code[-1]), "ends with checks on what must hold"
    headings = [line for c in cells if c["cell_type"] == "markdown" for line in _source(c).splitlines() if line.startswith("## ")]
    numbered, closing = headings[:-2], headings[-2:]
    assert numbered and all(re.match(rf"## {number}\.\d+ ", h) for h in numbered), headings
    assert closing == ["## Things to try", "## Further reading"], "ends with exercises and primary sources"
    assert "https://" in _source(cells[-1]), "further reading links to its sources"
    assert "What you will learn" in _source(cells[0])
    assert not any("sys.path" in _source(c) for c in code), "import the installed package instead"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_from_one_clean_run(path: Path) -> None:
    code = [c for c in _load(path)["cells"] if c["cell_type"] == "code"]
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"run `make execute-notebooks` to regenerate outputs: {counts}"
    errors = [i for i, c in enumerate(code) for o in c["outputs"] if o["output_type"] == "error"]
    assert not errors, f"error outputs in code cells {errors}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_checked_cells_are_text_with_reference_output(path: Path) -> None:
    for cell in _load(path)["cells"]:
        if cell["cell_type"] == "code" and "# NBVAL_CHECK_OUTPUT" in _source(cell):
            assert cell["outputs"], f"checked cell without reference output: {_source(cell)[:60]!r}"
            kinds = {kind for o in cell["outputs"] for kind in o.get("data", {})}
            assert not kinds & {"image/png", "application/vnd.jupyter.widget-view+json"}, "never check figures or progress bars"
            assert "tqdm" not in _source(cell) and "fit(" not in _source(cell)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_one_parameters_cell_defines_the_preset(path: Path) -> None:
    """``make study PRESET=fast`` (papermill) replaces the values of the one cell tagged ``parameters``."""
    cells = _load(path)["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{len(tagged)} cells tagged parameters"
    assert tagged[0]["cell_type"] == "code" and re.search(r'^PRESET = "[a-z]+"', _source(tagged[0]), re.M), _source(tagged[0])
    later = "".join(_source(c) for c in cells[cells.index(tagged[0]) + 1 :] if c["cell_type"] == "code")
    assert re.search(r"\bPRESET\b", later), "the notebook uses PRESET after setting it"
