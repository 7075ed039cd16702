"""The notebooks as a user sees them: JupyterLab in headless Chromium runs notebook 1 and shows its figures.

nbval checks that the notebooks execute; this checks that they work in the real front end too: the
kernel starts, Run All Cells finishes without error output, and the digit grid appears as an image.

Needs Debian's Chromium (``apt-get install chromium``) and Playwright's Python package (pinned in
requirements.txt). Playwright's own browser download is never used. Without them the test is skipped
locally, but fails under CI (``CI=true``), where ``.ci/run`` installs them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import mnist_cnn
from mnist_cnn.config import ARTIFACTS_ROOT, NOTEBOOKS_DIR

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NOTEBOOK = "01_data_exploration.ipynb"
SCREENSHOTS = ARTIFACTS_ROOT / "browser"
SERVER_START_SECONDS = 90
RUN_ALL_SECONDS = 300


def _require_browser_tools() -> None:
    """Skip when Chromium or Playwright is missing, except under CI, where that is a failure."""
    missing = []
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install -r requirements.txt)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI must install them (.ci/run does)", pytrace=False)
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Server:
    """A running JupyterLab: where it listens, its token, and its log."""

    url: str
    token: str
    root: Path
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def _api(server_url: str, token: str, path: str, method: str = "GET") -> tuple[int, object]:
    """Call the Jupyter server's REST API; returns the status and the decoded JSON body (or ``None``)."""
    request = urllib.request.Request(f"{server_url}{path}", method=method, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = response.read()
        return response.status, json.loads(body) if body.strip() else None


def _stop(process: subprocess.Popen, url: str, token: str) -> None:
    """Shut the server down politely (which also stops its kernels), then by signal, then by force."""
    try:
        if process.poll() is None:
            _api(url, token, "/api/shutdown", method="POST")
            process.wait(timeout=20)
    except Exception:  # the server may already be gone or unresponsive: fall through to signals
        pass
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)  # its own session: this reaches nothing we did not start
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory) -> Iterator[Server]:
    """JupyterLab on 127.0.0.1 with a random token, serving a temporary copy of notebooks/."""
    _require_browser_tools()
    import secrets

    work = tmp_path_factory.mktemp("jupyterlab")
    root = work / "notebooks"
    # A copy, so running the notebook (and JupyterLab's autosave) never touches the committed files.
    shutil.copytree(NOTEBOOKS_DIR, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    # Start from a notebook without outputs, so every count, figure and message the test sees comes from this run
    # and not from outputs committed with the notebook.
    notebook = json.loads((root / NOTEBOOK).read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["execution_count"], cell["outputs"] = None, []
    (root / NOTEBOOK).write_text(json.dumps(notebook, indent=1))
    settings = work / "settings"
    # Render every cell (no windowing) so all outputs are in the page, and do not ask about news.
    for plugin, values in (
        ("@jupyterlab/notebook-extension/tracker", {"windowingMode": "none"}),
        ("@jupyterlab/apputils-extension/notification", {"fetchNews": "false", "checkForUpdates": False}),
    ):
        target = settings / f"{plugin}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))

    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the tests' Agg backend would stop inline figures from showing
    # The kernel imports the package under test even when another copy is installed.
    package_root = str(Path(mnist_cnn.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(work / "runtime"),
    )
    port, token = _free_port(), secrets.token_hex(24)
    log = work / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
        "--allow-root",  # CI runs as root; the server only listens on 127.0.0.1 behind a random token
    ]
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as log_file:
        process = subprocess.Popen(command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log_file,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(url=url, token=token, root=root, log=log)
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with status {process.returncode}:\n{server.log_tail()}", pytrace=False)
            try:
                if _api(url, token, "/api/status")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not answer within {SERVER_START_SECONDS}s:\n{server.log_tail()}", pytrace=False)
            time.sleep(0.5)
        yield server
    finally:
        _stop(process, url, token)


#: Error outputs (JupyterLab renders a traceback as stderr) and warnings or logs (stderr too, but harmless).
STDERR = ".jp-NotebookPanel .jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"

#: True when the kernel is idle again and every code cell shows an execution count, or a cell failed
#: (Run All stops there, so the cells after it would never get a count).
RUN_FINISHED = """
(stderr) => {
  const prompts = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt')];
  const status = document.querySelector('.jp-NotebookPanel .jp-Notebook-ExecutionIndicator');
  const idle = !status || status.getAttribute('data-status') === 'idle';
  const failed = [...document.querySelectorAll(stderr)].some(o => o.textContent.includes('Traceback'));
  const numbered = prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
  return idle && (numbered || failed);
}
"""


#: Natural sizes of the images in the output of the cell whose source mentions ``needle``.
IMAGES_OF_CELL = """
(needle) => {
  const cell = [...document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell')]
    .find(c => c.querySelector('.jp-InputArea-editor').textContent.includes(needle));
  if (!cell) return null;
  return [...cell.querySelectorAll('.jp-OutputArea-output img')]
    .map(img => ({complete: img.complete, width: img.naturalWidth, height: img.naturalHeight}));
}
"""


def _wait_for_idle_kernel(server: Server, seconds: float = 120) -> None:
    """Wait until the notebook's kernel has started and is idle (the page alone cannot tell "not started yet")."""
    deadline = time.monotonic() + seconds
    kernels: object = None
    while time.monotonic() < deadline:
        kernels = _api(server.url, server.token, "/api/kernels")[1]
        if kernels and all(k.get("execution_state") == "idle" for k in kernels):
            return
        time.sleep(0.5)
    pytest.fail(f"no idle kernel after {seconds:.0f}s (kernels: {kernels}):\n{server.log_tail()}", pytrace=False)


def test_notebook_1_runs_in_jupyterlab(jupyterlab: Server):
    from playwright.sync_api import sync_playwright

    code_cells = sum(c["cell_type"] == "code" for c in json.loads((jupyterlab.root / NOTEBOOK).read_text())["cells"])
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(f"{jupyterlab.url}/lab/tree/{NOTEBOOK}?token={jupyterlab.token}")
            page.wait_for_function(
                "(n) => document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell').length === n", arg=code_cells, timeout=60_000
            )
            _wait_for_idle_kernel(jupyterlab)

            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            try:
                page.wait_for_function(RUN_FINISHED, arg=STDERR, timeout=RUN_ALL_SECONDS * 1000, polling=500)
            finally:
                page.screenshot(path=str(SCREENSHOTS / "01_data_exploration_end.png"))

            errors = [text for text in page.locator(STDERR).all_inner_texts() if "Traceback" in text or "Error" in text]
            assert not errors, f"error output in the notebook:\n{errors[0][:2000]}"
            prompts = page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
            assert all(p.strip().startswith("[") and p.strip()[1:-2].isdigit() for p in prompts), prompts
            outputs = "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
            assert "all checks passed" in outputs

            images = page.evaluate(IMAGES_OF_CELL, "plot_digit_grid")
            assert images, "the digit grid cell shows no image"
            grid = images[0]
            # 5x5 digits of 1.6 inches: hundreds of pixels each way, a little taller than wide.
            assert grid["complete"] and grid["width"] >= 400 and grid["height"] >= 400, grid

            figure = page.locator(".jp-CodeCell", has_text="plot_digit_grid").locator(".jp-OutputArea-output img").first
            figure.scroll_into_view_if_needed()
            page.screenshot(path=str(SCREENSHOTS / "01_data_exploration.png"))
            figure.screenshot(path=str(SCREENSHOTS / "01_digit_grid.png"))
        finally:
            browser.close()
