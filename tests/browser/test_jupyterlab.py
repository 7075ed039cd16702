"""The notebooks as a user sees them: JupyterLab in headless Chromium runs notebooks 1 and 6.

nbval checks that the notebooks execute; this checks that they work in the real front end too: the
kernel starts, Run All Cells finishes without error output, and the digit grid appears as an image. In
notebook 6 the test draws on the drawing pad with the mouse, a slanted line and then (after Clear) an
oval, and reads the network's answers, 1 and 0, back from the widget.

Needs Debian's Chromium and Playwright's Python package; ``browser_tools`` says how they are found, and
skips the test locally (fails it under CI) when they are missing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser_tools import CHROMIUM, CHROMIUM_ARGS, free_port, require_browser_tools

import mnist_cnn
from mnist_cnn import ARTIFACTS_ROOT, NOTEBOOKS_DIR

#: End-to-end: real commands in subprocesses, or real browsers; `make unit` leaves them out, `make test` runs them.
pytestmark = pytest.mark.slow

NOTEBOOK = "01_data_exploration.ipynb"
DRAW_NOTEBOOK = "06_draw_a_digit.ipynb"
TRAINING_NOTEBOOK = "03_training.ipynb"
#: Where ``benchmarks/notebook_timing.py`` asks the opt-in timing of notebook 3 to write its result.
TIMING_VARIABLE = "MNIST_CNN_TIME_NOTEBOOK3"
SCREENSHOTS = ARTIFACTS_ROOT / "browser"
SERVER_START_SECONDS = 90
RUN_ALL_SECONDS = 300
ANSWER_SECONDS = 60
#: The seed project's published weights (test accuracy 0.9782), beside the checkout as in tests/conftest.py.
SEED_WEIGHTS = Path(__file__).resolve().parents[3] / "shared" / "seed" / "mnist_VGG.pth"


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
    require_browser_tools()
    import secrets

    work = tmp_path_factory.mktemp("jupyterlab")
    root = work / "notebooks"
    # A copy, so running the notebook (and JupyterLab's autosave) never touches the committed files.
    shutil.copytree(NOTEBOOKS_DIR, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    # Start from notebooks without outputs, so every count, figure and message the test sees comes from this run
    # and not from outputs committed with the notebook.
    for name in (NOTEBOOK, DRAW_NOTEBOOK, TRAINING_NOTEBOOK):
        notebook = json.loads((root / name).read_text())
        for cell in notebook["cells"]:
            if cell["cell_type"] == "code":
                cell["execution_count"], cell["outputs"] = None, []
        notebook["metadata"].pop("widgets", None)
        (root / name).write_text(json.dumps(notebook, indent=1))
    # Notebook 6 loads models/default/model.pt (training it when missing, minutes on a busy CPU). The server gets
    # its own artifacts root in which that model is the seed's published weights, so the test neither depends on
    # notebook 3 having run first nor waits for training, and always draws for the same network.
    artifacts = work / "artifacts"
    if SEED_WEIGHTS.is_file():  # the seed's torch pickle, read as the commands read it, saved in this project's format
        from mnist_cnn.checkpoint import load_checkpoint
        from mnist_cnn.results import build_payload, save_checkpoint
        from mnist_cnn.tooling.safety.safe_load import read_checkpoint_file

        seed = load_checkpoint(SEED_WEIGHTS, reader=read_checkpoint_file)
        payload = build_payload(seed.model, arch=seed.arch, model_options=seed.model_options, input_scaling=seed.input_scaling)
        save_checkpoint(artifacts / "models" / "default" / "model.pt", payload)
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
        MNIST_CNN_ARTIFACTS=str(artifacts),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(work / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(work / "runtime"),
    )
    port, token = free_port(), secrets.token_hex(24)
    log = work / "jupyterlab.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        "--LabApp.extension_manager=readonly",
        "--ServerApp.terminals_enabled=False",
        "--allow-root",  # CI runs as root; the server only listens on 127.0.0.1 behind a random token
    ]
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
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


def _wait_for_idle_kernel(server: Server, notebook: str, seconds: float = 120) -> None:
    """Wait until ``notebook``'s kernel has started and is idle (the page alone cannot tell "not started yet")."""
    deadline = time.monotonic() + seconds
    sessions: object = None
    while time.monotonic() < deadline:
        sessions = _api(server.url, server.token, "/api/sessions")[1] or []
        kernels = [s.get("kernel") or {} for s in sessions if str(s.get("path", "")).endswith(notebook)]  # type: ignore[union-attr]
        if kernels and all(k.get("execution_state") == "idle" for k in kernels):
            return
        time.sleep(0.5)
    pytest.fail(f"no idle kernel for {notebook} after {seconds:.0f}s (sessions: {sessions}):\n{server.log_tail()}", pytrace=False)


def _shut_down_kernels(server: Server) -> None:
    """Stop the kernels a test started, so the next notebook does not share the CPU with an idle one."""
    try:
        for session in _api(server.url, server.token, "/api/sessions")[1] or []:
            _api(server.url, server.token, f"/api/sessions/{session['id']}", method="DELETE")
    except OSError:  # the server shuts its kernels down at the end anyway
        pass


@contextlib.contextmanager
def _browser_page(server: Server) -> Iterator[Any]:
    """A page in headless Debian Chromium; afterwards the browser closes and the kernels it started stop."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1100})
        finally:
            browser.close()
            _shut_down_kernels(server)


def _open_and_run_all(page, server: Server, notebook: str, screenshot: Path) -> float:
    """Open ``notebook`` in JupyterLab, Run All Cells, and fail with the first traceback shown, if any.

    Returns:
        Seconds from Run All Cells to the last cell's end, as the page saw it.
    """
    code_cells = sum(c["cell_type"] == "code" for c in json.loads((server.root / notebook).read_text())["cells"])
    # A workspace of its own, so JupyterLab does not reopen the notebooks an earlier test left open beside it.
    page.goto(f"{server.url}/lab/workspaces/nb{notebook[:2]}/tree/{notebook}?token={server.token}")
    page.wait_for_function(
        "(n) => document.querySelectorAll('.jp-NotebookPanel .jp-CodeCell').length === n", arg=code_cells, timeout=60_000
    )
    _wait_for_idle_kernel(server, notebook)

    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    started = time.monotonic()
    try:
        page.wait_for_function(RUN_FINISHED, arg=STDERR, timeout=RUN_ALL_SECONDS * 1000, polling=500)
        seconds = time.monotonic() - started
    finally:
        page.screenshot(path=str(screenshot))

    errors = [text for text in page.locator(STDERR).all_inner_texts() if "Traceback" in text or "Error" in text]
    assert not errors, f"error output in the notebook:\n{errors[0][:2000]}"
    prompts = page.locator(".jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
    assert all(p.strip().startswith("[") and p.strip()[1:-2].isdigit() for p in prompts), prompts
    outputs = "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    assert "all checks passed" in outputs
    return seconds


@pytest.mark.skipif(not os.environ.get(TIMING_VARIABLE), reason=f"a measurement, not a test: set {TIMING_VARIABLE}=out.json")
def test_notebook_3_timed_in_jupyterlab(jupyterlab: Server):
    """Run All of notebook 3 in JupyterLab in Chromium and record how long it took (benchmarks/notebook_timing.py)."""
    import re

    with _browser_page(jupyterlab) as page:
        seconds = _open_and_run_all(page, jupyterlab, TRAINING_NOTEBOOK, SCREENSHOTS / "03_training_end.png")
        outputs = "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
    epochs = [float(s) for s in re.findall(r"^epoch +[1-9]\d* \|.*\| (\d+\.\d)s$", outputs, flags=re.M)]
    training = re.search(r"after (\d+)s of training", outputs)
    threads = re.search(r"threads used \(\[step, count\] at each change\): (.*)$", outputs, flags=re.M)
    Path(os.environ[TIMING_VARIABLE]).write_text(
        json.dumps(
            {
                "run_all_seconds": seconds,
                "epoch_seconds": epochs,
                "training_seconds": int(training.group(1)) if training else None,
                "threads": threads.group(1) if threads else None,
            }
        )
    )


def test_notebook_1_runs_in_jupyterlab(jupyterlab: Server):
    with _browser_page(jupyterlab) as page:
        _open_and_run_all(page, jupyterlab, NOTEBOOK, SCREENSHOTS / "01_data_exploration_end.png")

        images = page.evaluate(IMAGES_OF_CELL, "plot_digit_grid")
        assert images, "the digit grid cell shows no image"
        grid = images[0]
        # 5x5 digits of 2 inches: hundreds of pixels each way, a little taller than wide.
        assert grid["complete"] and grid["width"] >= 400 and grid["height"] >= 400, grid

        figure = page.locator(".jp-CodeCell", has_text="plot_digit_grid").locator(".jp-OutputArea-output img").first
        figure.scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / "01_data_exploration.png"))
        figure.screenshot(path=str(SCREENSHOTS / "01_digit_grid.png"))


#: The pad's root element: data-sent / data-shown are the sequence numbers of the last drawing sent to the
#: kernel and of the answer on display (drawpad.js).
PAD = ".jp-NotebookPanel .mnist-drawpad"

#: True once more than ``n`` drawings were sent and the answer on display belongs to the last one.
ANSWERED = """
([selector, n]) => {
  const pad = document.querySelector(selector);
  return !!pad && Number(pad.dataset.sent) > n && pad.dataset.shown === pad.dataset.sent;
}
"""

#: What the pad shows: the answer, the top digits with their bar widths, and how much of the 28x28 image is lit.
PAD_STATE = """
(selector) => {
  const pad = document.querySelector(selector);
  const seen = pad.querySelector('canvas.seen').getContext('2d').getImageData(0, 0, 28, 28).data;
  let lit = 0;
  for (let i = 0; i < seen.length; i += 4) lit += seen[i] > 128 ? 1 : 0;
  return {
    answer: pad.querySelector('.answer').textContent.trim(),
    top: [...pad.querySelectorAll('.bar-row')].map(row => ({
      digit: row.dataset.digit,
      percent: parseFloat(row.querySelector('.bar-value').textContent),
      width: row.querySelector('.bar-fill').getBoundingClientRect().width,
    })),
    status: pad.querySelector('.status').textContent,
    litPixels: lit,
  };
}
"""


def _draw(page, box: dict, stroke: list[tuple[float, float]], steps: int = 4) -> None:
    """Draw one stroke with the mouse; points are fractions of the pad (0-1), moved through in small steps like a hand."""

    def at(point: tuple[float, float]) -> tuple[float, float]:
        return box["x"] + point[0] * box["width"], box["y"] + point[1] * box["height"]

    page.mouse.move(*at(stroke[0]))
    page.mouse.down()
    for point in stroke[1:]:
        page.mouse.move(*at(point), steps=steps)
    page.mouse.up()


def _one() -> list[tuple[float, float]]:
    """A '1' as a right hand writes it: top to bottom, leaning a little right at the top, centred, 64% of the pad tall."""
    return [(0.54, 0.18), (0.52, 0.34), (0.50, 0.50), (0.48, 0.66), (0.46, 0.82)]


def _zero() -> list[tuple[float, float]]:
    """A '0': an upright oval (40% x 60% of the pad) begun at the top and drawn anticlockwise, closing with a little overlap."""
    import math

    turns = [2 * math.pi * i / 36 for i in range(40)]  # 400 degrees: the end runs past the start, as pens do
    return [(0.5 - 0.2 * math.sin(t), 0.5 - 0.3 * math.cos(t)) for t in turns]


def test_drawing_pad_answers_in_jupyterlab(jupyterlab: Server):
    if not (jupyterlab.root.parent / "artifacts" / "models" / "default" / "model.pt").is_file():
        reason = f"the drawing test needs the seed project's weights at {SEED_WEIGHTS}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason}; CI must provide them", pytrace=False)
        pytest.skip(reason)
    with _browser_page(jupyterlab) as page:
        _open_and_run_all(page, jupyterlab, DRAW_NOTEBOOK, SCREENSHOTS / "06_draw_a_digit_end.png")

        canvas = page.locator(f"{PAD} canvas.pad")
        canvas.wait_for(state="visible", timeout=30_000)
        cell = page.locator(".jp-NotebookPanel .jp-CodeCell", has=page.locator(".mnist-drawpad"))
        cell.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        assert box and box["width"] >= 200 and abs(box["width"] - box["height"]) < 2, box
        # nothing drawn yet: no answer
        assert page.evaluate(PAD_STATE, PAD)["answer"] == ""

        def sent() -> int:
            return int(canvas.evaluate("c => c.closest('.mnist-drawpad').dataset.sent"))

        def wait_for_answer(before: int) -> dict:
            # the pad sends while a stroke is drawn too (throttled): wait for the answer to the last drawing sent
            page.wait_for_function(ANSWERED, arg=[PAD, before], timeout=ANSWER_SECONDS * 1000, polling=100)
            return page.evaluate(PAD_STATE, PAD)

        answers = {}
        for expected, stroke in ((1, _one()), (0, _zero())):
            before = sent()
            _draw(page, box, stroke)
            answers[expected] = wait_for_answer(before)
            cell.screenshot(path=str(SCREENSHOTS / f"06_drawing_pad_{expected}.png"))
            if expected == 1:
                before = sent()
                page.locator(f"{PAD} button.clear").click()
                cleared = wait_for_answer(before)
                assert cleared["answer"] == "" and cleared["top"] == [] and cleared["litPixels"] == 0, cleared

        for expected, state in answers.items():
            assert state["answer"] == str(expected), f"drew a {expected}, the pad answered {state}"
            top = state["top"]
            assert [row["digit"] for row in top][:1] == [str(expected)] and len(top) == 3, top
            percents = [row["percent"] for row in top]
            assert percents == sorted(percents, reverse=True) and 0 < sum(percents) <= 100.1, top
            assert top[0]["width"] > top[1]["width"], "the bars should be as long as the probabilities"
            # the 28x28 image the network saw holds the digit: a stroke's worth of lit pixels, not a blank or a blob
            assert 20 <= state["litPixels"] <= 300, state
        page.screenshot(path=str(SCREENSHOTS / "06_draw_a_digit.png"))
