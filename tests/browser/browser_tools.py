"""What the browser tests share: where Chromium is, how it starts, and when a missing tool skips or fails.

The tests drive Debian's Chromium (``apt-get install chromium``; ``CHROMIUM_PATH`` names another build, as the
GitHub workflow does) through Playwright's Python package, pinned in requirements.txt. Playwright's own browser
download is never used. Without these tools a test is skipped on a developer's machine, but fails under CI
(``CI=true``), where ``.ci/run`` installs them.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def in_ci() -> bool:
    """Whether this runs under CI (``CI`` set to 1, true or yes), where every tool must be present."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def skip_or_fail(reason: str) -> None:
    """Skip the test on a developer's machine; fail it under CI, which must provide what is missing.

    Args:
        reason: What is missing, e.g. ``"browser test needs Chromium at /usr/bin/chromium"``.
    """
    if in_ci():
        pytest.fail(f"{reason}; CI must install them (.ci/run does)", pytrace=False)
    pytest.skip(reason)


def require_browser_tools() -> None:
    """Skip when Chromium or Playwright is missing, except under CI, where that is a failure."""
    missing = []
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install -r requirements.txt)")
    if missing:
        skip_or_fail("browser test needs " + " and ".join(missing))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
