"""MkDocs hooks: the documentation site is built from files where they live in the repository.

``mkdocs.yml`` names this file under ``hooks``. It adds to the site, without copying anything:

- ``README.md`` as the home page (``index.md``), so the README is the site's front door;
- every notebook in ``notebooks/`` under ``notebooks/`` (mkdocs-jupyter renders them with their committed
  outputs), so a link written for GitHub, ``notebooks/01_data_exploration.ipynb`` from the README, works on
  the site too;
- one API reference page per module of ``src/mnist_cnn``, subpackages included, found in the source folder at every build, so a
  module that is added, renamed or removed never leaves the reference stale.

Links are written for GitHub (relative to the file in the repository); `on_page_markdown` rewrites them
to where the pages land on the site. The nav entries ``notebooks/*.ipynb`` and ``api/*.md`` in
``mkdocs.yml`` are expanded here into one entry per notebook and per module.
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "mnist_cnn"
PACKAGE_DIR = ROOT / "src" / PACKAGE
NOTEBOOKS_DIR = ROOT / "notebooks"
DOCS_FOLDER = "docs"
NOTEBOOKS_GLOB = "notebooks/*.ipynb"
API_GLOB = "api/*.md"

# A Markdown link or image: the text part, the target, and an optional title. Targets never hold spaces here.
LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")
# The CI badge points at GitHub's own pages (../../actions/...), which exist on GitHub only.
# Sphinx cross-reference roles in docstrings (":func:`fit`"), which Markdown renders as the role's name followed
# by code; the API pages show the code alone.
SPHINX_ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|exc|obj):(?=<code>)")
#: A link in a notebook's rendered HTML to a page of ``docs/`` (``../docs/benchmarks.md#anchor``), as GitHub and
#: JupyterLab follow it from ``notebooks/``.
NOTEBOOK_DOCS_LINK = re.compile(r'href="(\.\./docs/[^"#]+\.md)(#[^"]*)?"')
GITHUB_ONLY_BADGE = re.compile(r"^\[!\[[^\]]*\]\(\.\./\.\./[^)]*\)\]\(\.\./\.\./[^)]*\)[ \t]*\n", re.MULTILINE)


def package_modules() -> list[str]:
    """The public modules of the package, as dotted names, in alphabetical order.

    Read from the source folder, subpackages included (``mnist_cnn.digits``, ``mnist_cnn.tooling.cli``...),
    without importing anything (importing would pull in torch for every build).

    Returns:
        Names such as ``"mnist_cnn.data"`` or ``"mnist_cnn.tooling.cli.train"``, and each subpackage's own name;
        modules whose name starts with ``_`` (other than a package's ``__init__``) are left out.
    """
    names = []
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts and not any(part.startswith("_") for part in parts):
            names.append(".".join((PACKAGE, *parts)))
    return sorted(names)


def notebooks() -> list[Path]:
    """The notebooks of the study, in their numbered order."""
    return sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def notebook_title(path: Path) -> str:
    """The notebook's first Markdown heading (``# 1. Data exploration``), else its file name."""
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def api_page(module: str) -> str:
    """The Markdown of one module's reference page: a heading and the mkdocstrings directive."""
    return f"# `{module}`\n\n::: {module}\n"


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    """Expand the nav's placeholders into one entry per notebook and per module."""

    def expand(items: list[Any]) -> list[Any]:
        out: list[Any] = []
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) and len(item) == 1 else item
            if value == NOTEBOOKS_GLOB:
                out.append({next(iter(item)): [{notebook_title(nb): f"notebooks/{nb.name}"} for nb in notebooks()]})
            elif value == API_GLOB:
                out.append({next(iter(item)): [{module: f"api/{module}.md"} for module in package_modules()]})
            elif isinstance(value, list):
                out.append({next(iter(item)): expand(value)})
            else:
                out.append(item)
        return out

    config.nav = expand(config.nav or [])
    return config


# Before mkdocs-jupyter's on_files, which turns the .ipynb files it finds into notebook pages.
@event_priority(100)
def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add the README, the notebooks and the generated API pages to the site's files."""
    files.append(File.generated(config, "index.md", abs_src_path=str(ROOT / "README.md")))
    for path in notebooks():
        # src_dir is the repository, so the notebook keeps its path (notebooks/...) on the site, as on GitHub.
        notebook = File(f"notebooks/{path.name}", src_dir=str(ROOT), dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls)
        files.append(notebook)
    for module in package_modules():
        files.append(File.generated(config, f"api/{module}.md", content=api_page(module)))
    return files


def repository_path(page: Page) -> str:
    """Where the page's Markdown lives in the repository, relative to its root (``README.md``, ``docs/setup.md``)."""
    if page.file.src_uri == "index.md":
        return "README.md"
    return f"{DOCS_FOLDER}/{page.file.src_uri}"


def site_uri(repo_path: str) -> str | None:
    """Where a file of the repository is on the site (its ``src_uri``), or ``None`` when it is not on the site."""
    if repo_path == "README.md":
        return "index.md"
    if repo_path.startswith(f"{DOCS_FOLDER}/"):
        return repo_path[len(DOCS_FOLDER) + 1 :]
    if repo_path.startswith("notebooks/"):
        return repo_path
    return None


def rewrite_link(target: str, page_repo_path: str, page_src_uri: str) -> str:
    """A link written relative to the page's place in the repository, made relative to its place on the site.

    Args:
        target: The link as written, e.g. ``docs/setup.md#with-conda`` in the README.
        page_repo_path: The page's path in the repository, e.g. ``README.md``.
        page_src_uri: The page's path among the site's files, e.g. ``index.md``.

    Returns:
        The rewritten link. Absolute URLs, anchors within the page and links to files that are not on the site
        come back unchanged (mkdocs' strict build then reports the last as broken).
    """
    if "://" in target or target.startswith(("#", "/", "mailto:")):
        return target
    path, hash_, anchor = target.partition("#")
    repo_target = posixpath.normpath(posixpath.join(posixpath.dirname(page_repo_path), path))
    uri = site_uri(repo_target)
    if uri is None:
        return target
    relative = posixpath.relpath(uri, posixpath.dirname(page_src_uri) or ".")
    return relative + hash_ + anchor


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Rewrite the README's and docs pages' links for the site, and drop the GitHub-only CI badge."""
    if page.file.src_uri.startswith("api/"):
        return markdown
    repo_path = repository_path(page)
    markdown = GITHUB_ONLY_BADGE.sub("", markdown)
    return LINK.sub(lambda m: m.group(1) + rewrite_link(m.group(2), repo_path, page.file.src_uri) + m.group(3), markdown)


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """On the API pages, drop the Sphinx role names that docstrings put before a name in backticks; on the notebook
    pages, point links to ``docs/`` pages at those pages on the site."""
    if page.file.src_uri.startswith("api/"):
        return SPHINX_ROLE.sub("", html)
    if page.file.src_uri.startswith("notebooks/"):

        def on_the_site(match: re.Match[str]) -> str:
            uri = site_uri(posixpath.normpath(posixpath.join("notebooks", match.group(1))))
            target = files.get_file_from_path(uri) if uri else None
            if target is None:  # not a page of the site: left as written, and the link check reports it
                return match.group(0)
            return f'href="{posixpath.relpath(target.url or ".", page.url or ".")}/{match.group(2) or ""}"'

        return NOTEBOOK_DOCS_LINK.sub(on_the_site, html)
    return html
