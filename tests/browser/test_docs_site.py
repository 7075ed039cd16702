"""The documentation site as a reader sees it: built as ``make docs`` builds it, served, opened in Chromium.

The site is built with ``mkdocs build --strict`` into a temporary folder (the repository's ``build/`` is not
touched), served by ``python -m http.server`` on 127.0.0.1, and read in headless Chromium through Playwright:

- the build gives no warning, and a broken link fails it;
- the navigation reaches every page of the site, one per notebook and one per module of the package among them;
- every image of every page loads, and each notebook's page shows at least as many figures as the notebook holds;
- every link between the site's pages leads to a page that exists.

Chromium and Playwright are found as ``browser_tools`` says; MkDocs and its plugins come from requirements.txt.
Without them the tests that need them are skipped locally and fail under CI (the build checks need no browser).
"""

from __future__ import annotations

import json
import os
import pkgutil
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlparse

import pytest
from browser_tools import CHROMIUM, CHROMIUM_ARGS, free_port, require_browser_tools, skip_or_fail

from mnist_cnn import NOTEBOOKS_DIR, PROJECT_ROOT

#: End-to-end: real commands in subprocesses, or real browsers; `make unit` leaves them out, `make test` runs them.
pytestmark = pytest.mark.slow

CONFIG = PROJECT_ROOT / "mkdocs.yml"
PACKAGE_DIR = PROJECT_ROOT / "src" / "mnist_cnn"
BUILD_SECONDS = 600
SERVER_START_SECONDS = 30
PAGE_SECONDS = 60
#: What the site's build needs, with the package each comes from (all pinned in requirements.txt).
BUILD_MODULES = {
    "mkdocs": "mkdocs",
    "material": "mkdocs-material",
    "mkdocs_jupyter": "mkdocs-jupyter",
    "mkdocstrings_handlers.python": "mkdocstrings-python",
}
#: Every image on the page: where it comes from, whether it loaded, and whether it is a notebook's output.
IMAGES_JS = """() => Array.from(document.images).map(img => ({
    src: (img.currentSrc || img.src).slice(0, 120),
    loaded: img.complete && img.naturalWidth > 0,
    output: img.closest('.jp-OutputArea-output, .output_area, .jp-RenderedImage') !== null,
}))"""
#: The links of the site's navigation (Material renders the whole tree on every page, collapsed or not).
NAV_LINKS_JS = "() => Array.from(document.querySelectorAll('nav.md-nav--primary a.md-nav__link[href]')).map(a => a.href)"
#: The links in a page's content.
CONTENT_LINKS_JS = "() => Array.from(document.querySelectorAll('article a[href]')).map(a => a.href)"
#: The three above in one call to the page.
PAGE_JS = f"() => ({{nav: ({NAV_LINKS_JS})(), images: ({IMAGES_JS})(), content: ({CONTENT_LINKS_JS})()}})"


def build_site(config: Path, site_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``mkdocs build --strict`` as ``make docs`` does, into ``site_dir``.

    Args:
        config: The ``mkdocs.yml`` to build.
        site_dir: Where the site goes.
        cwd: The working directory; mkdocs-jupyter keeps its cache under it (``build/mkdocs-jupyter-cache``).

    Returns:
        The finished process, with its output as text.
    """
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site_dir)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=BUILD_SECONDS)


def warnings_in(log: str) -> list[str]:
    """The lines of a build log that mkdocs printed as warnings or errors."""
    return [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]


def image_outputs(notebook: Path) -> int:
    """How many outputs of the notebook are images (each is one figure on its page)."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    outputs = (output for cell in cells if cell["cell_type"] == "code" for output in cell.get("outputs", []))
    return sum(any(kind.startswith("image/") for kind in output.get("data", {})) for output in outputs)


def package_modules() -> list[str]:
    """The package's public modules and subpackages below ``mnist_cnn`` (``data``, ``tooling.cli.train``...),
    listed here independently of the site's own hook: every package found with ``pkgutil``, and its modules."""
    names, packages = [], [("", PACKAGE_DIR)]
    while packages:
        prefix, folder = packages.pop()
        for info in pkgutil.iter_modules([str(folder)]):
            if not info.name.startswith("_"):
                names.append(prefix + info.name)
                if info.ispkg:
                    packages.append((f"{prefix}{info.name}.", folder / info.name))
    return sorted(names)


@dataclass
class Site:
    """A built site: its folder, its build log, and the URL it is served at."""

    root: Path
    log: str
    url: str

    def pages(self) -> set[str]:
        """The URL of every page in the built folder (each is a folder's ``index.html``), the 404 page aside."""
        folders = (path.parent.relative_to(self.root).as_posix() for path in self.root.rglob("index.html"))
        return {self.url if folder == "." else urljoin(self.url, folder + "/") for folder in folders}


def _wait_for_server(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"http.server exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise TimeoutError(f"http.server did not answer at {url} within {SERVER_START_SECONDS} s")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Site:
    """The site built into a temporary folder, not yet served (its ``url`` is empty)."""
    missing = [package for module, package in BUILD_MODULES.items() if _missing(module)]
    if missing:
        skip_or_fail("the documentation site needs " + ", ".join(missing) + " (pip install -r requirements.txt)")
    work = tmp_path_factory.mktemp("docs")
    result = build_site(CONFIG, work / "site", cwd=work)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-5000:]}"
    return Site(root=work / "site", log=result.stderr + result.stdout, url="")


@pytest.fixture(scope="module")
def site(built: Site) -> Iterator[Site]:
    """The built site served on 127.0.0.1 at a free port (only the tests that open it in Chromium need this)."""
    require_browser_tools()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(built.root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_for_server(url, server)
        yield Site(root=built.root, log=built.log, url=url)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def _missing(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return True
    return False


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    """A page of headless Chromium, shared by the tests of this file (starting the browser is the slow part)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(PAGE_SECONDS * 1000)
            # Each page load fetches the search index (half a megabyte) and indexes it in a worker; nothing here
            # reads it, and skipping it takes about a fifth off opening the site's ~80 pages.
            page.route("**/search/search_index.json", lambda route: route.abort())
            page.route("**/assets/javascripts/workers/search.*", lambda route: route.abort())
            yield page
        finally:
            chromium.close()


def _open(page: Any, url: str) -> None:
    response = page.goto(url, wait_until="load")
    assert response is not None and response.ok, f"{url}: HTTP {response.status if response else 'no response'}"


def test_the_build_gives_no_warning(built: Site) -> None:
    assert warnings_in(built.log) == []
    assert "Documentation built" in built.log, built.log[-2000:]


def test_a_broken_link_fails_the_build(built: Site, tmp_path: Path) -> None:
    """The same build of a copy whose README links to a page that does not exist fails, naming that link alone."""
    copy = tmp_path / "project"
    copy.mkdir()
    for name in ("README.md", "mkdocs.yml"):
        shutil.copyfile(PROJECT_ROOT / name, copy / name)
    for folder in ("docs", "notebooks", "tools", "src"):
        shutil.copytree(PROJECT_ROOT / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    with (copy / "README.md").open("a", encoding="utf-8") as readme:
        readme.write("\nSee [the missing page](docs/no-such-page.md).\n")
    # In the first build's working directory, so the notebooks (unchanged) come from mkdocs-jupyter's cache.
    result = build_site(copy / "mkdocs.yml", tmp_path / "site", cwd=built.root.parent)
    assert result.returncode != 0, "a broken link must fail the strict build"
    warnings = warnings_in(result.stderr)
    assert len(warnings) == 1 and "no-such-page.md" in warnings[0], warnings


@dataclass
class Visited:
    """Every page of the site opened once in Chromium, and what each showed.

    Attributes:
        reached: The pages reached by following the navigation from the home page, as a reader clicking through.
        nav_links: Per page, where its navigation links; ``images``: its images (``IMAGES_JS``); ``content_links``:
            the links in its text.
    """

    reached: set[str]
    nav_links: dict[str, list[str]]
    images: dict[str, list[dict[str, Any]]]
    content_links: dict[str, list[str]]


@pytest.fixture(scope="module")
def visited(site: Site, browser: Any) -> Visited:
    """Each page opened once (loading pages is the slow part), the navigation followed first, then any page it missed."""
    result = Visited(reached={site.url}, nav_links={}, images={}, content_links={})

    def visit(url: str) -> None:
        _open(browser, url)
        shown = browser.evaluate(PAGE_JS)
        result.nav_links[url] = [urldefrag(link).url for link in shown["nav"]]
        result.images[url] = shown["images"]
        result.content_links[url] = [urldefrag(link).url for link in shown["content"]]

    queue = [site.url]
    while queue:
        url = queue.pop()
        visit(url)
        for target in result.nav_links[url]:
            if urlparse(target).netloc == urlparse(site.url).netloc and target not in result.reached:
                result.reached.add(target)
                queue.append(target)
    for url in sorted(site.pages() - result.nav_links.keys()):
        visit(url)
    return result


def test_the_navigation_reaches_every_page(site: Site, visited: Visited) -> None:
    pages = site.pages()
    # The site holds what it must: the README as home, every notebook and every module of the package.
    expected = {site.url}
    expected |= {urljoin(site.url, f"notebooks/{notebook.stem}/") for notebook in NOTEBOOKS_DIR.glob("*.ipynb")}
    expected |= {urljoin(site.url, f"api/mnist_cnn.{module}/") for module in package_modules()}
    assert expected <= pages, f"missing from the site: {sorted(expected - pages)}"
    reached = visited.reached
    assert pages - reached == set(), f"pages the navigation does not reach: {sorted(pages - reached)}"
    assert reached - pages == set(), f"navigation links to pages that do not exist: {sorted(reached - pages)}"


def test_every_page_shows_its_images_and_links_to_pages_that_exist(site: Site, visited: Visited, browser: Any) -> None:
    figures = {urljoin(site.url, f"notebooks/{notebook.stem}/"): image_outputs(notebook) for notebook in NOTEBOOKS_DIR.glob("*.ipynb")}
    assert sum(figures.values()) > 0, "the committed notebooks hold figures"
    broken, too_few, links = [], [], set()
    for url in sorted(site.pages()):
        images = visited.images[url]
        # the site's own images; an external one (the "Open in Colab" badge) cannot load where there is no internet
        own = [image for image in images if urlparse(image["src"]).netloc in ("", urlparse(site.url).netloc)]
        broken += [f"{url}: {image['src']}" for image in own if not image["loaded"]]
        shown = sum(image["output"] and image["loaded"] for image in images)
        if shown < figures.get(url, 0):
            too_few.append(f"{url}: {shown} figures shown, the notebook holds {figures[url]}")
        links |= {link for link in visited.content_links[url] if urlparse(link).netloc == urlparse(site.url).netloc}
    assert broken == [] and too_few == [], "\n".join(["images that do not load:", *broken, "notebook pages short of figures:", *too_few])
    # The README's picture is on the home page.
    assert any("drawing_pad" in image["src"] and image["loaded"] for image in visited.images[site.url])
    dead = []
    for link in sorted(links):
        response = browser.request.get(link)
        if not response.ok:
            dead.append(f"{link}: HTTP {response.status}")
    assert dead == [], "links to pages that do not exist:\n" + "\n".join(dead)
