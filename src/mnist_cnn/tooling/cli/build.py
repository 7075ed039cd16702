"""Make's generated folders (the study re-run with other parameters, the documentation site), each built whole or not at all.

``make study PRESET=fast SEED=3`` and ``make docs`` hand their values to this module through the environment,
never through the shell, so no value can run as a command. Each build checks its values first, takes a lock (a
second build at once fails in one line), writes into a temporary folder beside its target and moves it into place
only when every step succeeded; a failed build leaves the previous folder as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from mnist_cnn import PROJECT_ROOT
from mnist_cnn.errors import ConfigError, MnistCnnError
from mnist_cnn.text import display_name
from mnist_cnn.tooling.cli.args import ArgumentParser, run_cli, seed_int

try:  # POSIX only; elsewhere builds are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

BUILD_DIR = PROJECT_ROOT / "build"
NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


class BuildFailed(MnistCnnError):
    """A step of the build failed; its own messages were printed above."""


@contextlib.contextmanager
def exclusive(lock: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock`` for the build, or fail in one line if another build holds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(f"another {what} is running (it holds {display_name(lock)}); wait for it to finish") from None
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def built_into(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` that replaces it only if the block ends without an error.

    Raises:
        ConfigError: ``target`` exists and is not a folder (it is left untouched).
    """
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ConfigError(f"{display_name(target)} is not a folder; move it away and build again")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def run_step(name: str, command: Sequence[str], env: dict[str, str]) -> None:
    """Run one step of a build; a non-zero exit fails the build (the step printed its own messages above)."""
    if subprocess.run(command, env=env, cwd=PROJECT_ROOT, check=False).returncode != 0:
        raise BuildFailed(f"{name} failed (its messages are above); nothing was replaced")


def study(preset: str, seed: int | None, notebooks: Sequence[Path] = NOTEBOOKS) -> Path:
    """Execute every notebook with ``PRESET``/``SEED`` into ``build/study/<preset>/``, its models and reports inside.

    Args:
        preset: A preset name (checked before anything runs).
        seed: The random seed, or ``None`` for each notebook's own.
        notebooks: The notebooks, in order (notebook 3 trains the model notebooks 4-7 load).

    Returns:
        The study's folder.
    """
    from mnist_cnn.presets import PRESETS

    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {display_name(preset)}: choose one of {', '.join(PRESETS)}")
    target = BUILD_DIR / "study" / preset
    with exclusive(BUILD_DIR / "study" / ".lock", "make study"), built_into(target) as staging:
        # the notebooks save and load models/<preset> under the study's own folder, never the project's models/
        env = {**os.environ, "MNIST_CNN_ARTIFACTS": str(staging)}
        for notebook in notebooks:
            command = [sys.executable, "-m", "papermill", "--cwd", str(notebook.parent), "-p", "PRESET", preset]
            if seed is not None:
                command += ["-p", "SEED", str(seed)]
            run_step(f"papermill on {notebook.name}", [*command, str(notebook), str(staging / notebook.name)], env)
    return target


def docs() -> Path:
    """Build the documentation site (MkDocs, strict) into ``build/site/``.

    Returns:
        The site's folder.
    """
    target = BUILD_DIR / "site"
    with exclusive(BUILD_DIR / ".docs.lock", "make docs"), built_into(target) as staging:
        # strict: a broken link or anchor fails the build; the variable silences Material's banner about MkDocs 2
        env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
        run_step("mkdocs build", [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(staging)], env)
    return target


def build_parser() -> ArgumentParser:
    """The build command's arguments."""
    parser = ArgumentParser(
        prog="python -m mnist_cnn.tooling.cli.build", description="Build a generated folder whole (make study, make docs)."
    )
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("study", help="every notebook with other parameters, into build/study/<PRESET>/")
    run.add_argument("--preset", default="default", help="the preset the notebooks train and load (default: default)")
    run.add_argument("--seed", type=seed_int, default=None, help="the random seed (default: each notebook's own)")
    sub.add_parser("docs", help="the documentation site, into build/site/")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and build. Returns the exit status."""
    args = build_parser().parse_args(argv)
    folder = study(args.preset, args.seed) if args.what == "study" else docs()
    print(f"built {display_name(folder.relative_to(PROJECT_ROOT))}/")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
