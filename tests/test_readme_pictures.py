"""The README's pictures: each is in the repository, and every figure a caption quotes is one a committed notebook prints.

A caption that quotes a number (``94.4 %``, ``0.9945``) that the notebook it names (``notebook 6``; else any notebook)
no longer prints describes a picture from another run: regenerate the picture, or reword the caption.
"""

from __future__ import annotations

import json
import re

import pytest

from mnist_cnn import NOTEBOOKS_DIR, PROJECT_ROOT

README = PROJECT_ROOT / "README.md"
PICTURE = re.compile(r"!\[(?P<caption>[^\]]*)\]\((?P<path>[^)\s]+)\)")
#: A percentage or a decimal: a measured figure (a digit's name, "answers 0", or "notebook 6" is not one).
FIGURE = re.compile(r"\d+(?:\.\d+)?\s*%|\d+\.\d+")


def figures(caption: str) -> list[str]:
    """The figures a caption quotes, written as the notebooks print them (``94.4 %`` -> ``94.4%``)."""
    return [re.sub(r"\s+", "", found) for found in FIGURE.findall(caption)]


def pictures() -> list[tuple[str, str]]:
    """(caption, path) of each picture in the README stored in the repository (badges from other sites are left out)."""
    found = [(m["caption"], m["path"]) for m in PICTURE.finditer(README.read_text())]
    return [(caption, path) for caption, path in found if not path.startswith(("https://", "http://", "../"))]


def printed(caption: str) -> str:
    """The text outputs of the committed notebooks the caption names ("notebook 6"), or of all when it names none."""
    named = {int(number) for number in re.findall(r"notebooks? (\d+)", caption)}
    texts = []
    for path in sorted(NOTEBOOKS_DIR.glob("*.ipynb")):
        if named and int(path.name[:2]) not in named:
            continue
        for cell in json.loads(path.read_text())["cells"]:
            for output in cell.get("outputs", []):
                texts.append("".join(output.get("text", "")))
                texts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


def test_figures_are_found_in_captions() -> None:
    assert figures("the network answers 0 at 94.4 %, accuracy 0.9945, in notebook 6") == ["94.4%", "0.9945"]


@pytest.mark.parametrize(("caption", "path"), pictures(), ids=[path for _, path in pictures()])
def test_picture_is_in_the_repository(caption: str, path: str) -> None:
    assert (PROJECT_ROOT / path).is_file(), f"README.md shows {path}, which is not in the repository"
    assert caption.strip(), f"README.md: {path} needs a caption (its alt text)"


@pytest.mark.parametrize(("caption", "path"), pictures(), ids=[path for _, path in pictures()])
def test_caption_quotes_only_figures_the_notebooks_print(caption: str, path: str) -> None:
    outputs = printed(caption)
    missing = [figure for figure in figures(caption) if figure not in outputs]
    assert not missing, f"README.md: the caption of {path} quotes {missing}, which the committed notebooks it names do not print"
