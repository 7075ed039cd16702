"""Notebook 3 timed as people run it: Run All in JupyterLab in Chromium, against nbconvert from the terminal.

Each round executes notebook 3 once from the terminal (``jupyter nbconvert --execute``) and once in JupyterLab
in headless Chromium (the opt-in ``test_notebook_3_timed_in_jupyterlab`` of ``tests/browser``), interleaved,
each with its own empty artifacts folder so ``models/`` is never touched. Reported: the whole notebook's wall
time and the training time the notebook itself prints (``after Ns of training``: the three epochs of section
3.7). Needs Chromium and Playwright, as the browser tests do. Run it on a quiet machine.

Usage: ``python benchmarks/notebook_timing.py [--rounds 2] [--out benchmarks/notebook_timing.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "03_training.ipynb"


def training_seconds(text: str) -> int | None:
    """The training time notebook 3 prints when it saves its model."""
    found = re.search(r"after (\d+)s of training", text)
    return int(found.group(1)) if found else None


def from_terminal() -> dict:
    """Execute notebook 3 with nbconvert into a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="nb3-terminal-") as work:
        env = {**os.environ, "MNIST_CNN_ARTIFACTS": work}
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", str(NOTEBOOK), "--output-dir", work],
            check=True,
            capture_output=True,
            env=env,
            cwd=NOTEBOOK.parent,
        )
        seconds = time.perf_counter() - started
        executed = (Path(work) / NOTEBOOK.name).read_text()
    threads = re.search(r"threads used \(\[step, count\] at each change\): (.*?)(\\n|\")", executed)
    return {
        "where": "terminal (nbconvert)",
        "run_all_seconds": seconds,
        "training_seconds": training_seconds(executed),
        "threads": threads.group(1) if threads else None,
    }


def in_browser() -> dict:
    """Run All of notebook 3 in JupyterLab in Chromium through the opt-in browser test."""
    with tempfile.TemporaryDirectory(prefix="nb3-browser-") as work:
        out = Path(work) / "timing.json"
        env = {**os.environ, "MNIST_CNN_TIME_NOTEBOOK3": str(out), "MNIST_CNN_ARTIFACTS": work}
        completed = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/browser/test_jupyterlab.py", "-k", "notebook_3"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        if completed.returncode != 0 or not out.exists():
            raise SystemExit(f"the browser run failed:\n{completed.stdout[-3000:]}")
        row = json.loads(out.read_text())
    return {"where": "JupyterLab in Chromium", **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of terminal and browser")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("notebook_timing.json"), help="JSON output")
    args = parser.parse_args()
    rows = []
    for _ in range(args.rounds):
        for measure in (from_terminal, in_browser):
            rows.append(measure())
            row = rows[-1]
            print(
                f"{row['where']}: notebook {row['run_all_seconds']:.1f}s, training {row['training_seconds']}s, threads {row['threads']}",
                flush=True,
            )
    summary = []
    for where in dict.fromkeys(r["where"] for r in rows):
        runs = [r for r in rows if r["where"] == where]
        summary.append(
            {
                "where": where,
                "runs": len(runs),
                "run_all_seconds_median": statistics.median(r["run_all_seconds"] for r in runs),
                "training_seconds_median": statistics.median(r["training_seconds"] for r in runs),
            }
        )
    print("\n| notebook 3 | runs | whole notebook (s, median) | training, as the notebook prints it (s, median) |")
    print("|---|---|---|---|")
    for row in summary:
        print(f"| {row['where']} | {row['runs']} | {row['run_all_seconds_median']:.1f} | {row['training_seconds_median']:.0f} |")
    args.out.write_text(json.dumps({"summary": summary, "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
