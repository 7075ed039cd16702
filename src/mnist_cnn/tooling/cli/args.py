"""Shared plumbing for the ``python -m mnist_cnn.<command>`` entry points."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mnist_cnn.checks import NumberError, check_number
from mnist_cnn.errors import MnistCnnError
from mnist_cnn.text import display_name, escape_text

#: The largest ``--seed``: torch seeds are unsigned 64-bit, and 2**63-1 also fits every signed 64-bit field.
MAX_SEED = 2**63 - 1
#: The largest learning rate accepted: far above any that trains, yet finite in float32 (whose maximum is about 3.4e38).
MAX_LR = 1e6


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` once: only where the help text does not already say it and there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are a single line, with defaults shown (once) in ``--help``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse repeats what it could not use: a terminal escape or a line break in it must not reach the terminal raw
        self.exit(2, f"{self.prog}: error: {escape_text(message)} (see --help)\n")


def _parsed(text: str, whole: bool) -> int | float:
    """The number ``text`` spells (``int()`` or ``float()``), or the argparse error saying what was expected."""
    try:
        return int(text) if whole else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'a whole number' if whole else 'a number'}, got {text!r}") from None


def number_argument(text: str, *, whole: bool, **allowed: Any) -> Any:
    """``argparse`` type helper: parse ``text``, then check it with :func:`~mnist_cnn.checks.check_number`.

    Args:
        text: The argument as typed.
        whole: A whole number rather than any finite number.
        allowed: ``check_number``'s bounds (``low``, ``high``, ``low_open``, ``high_open``).

    Returns:
        The number.

    Raises:
        argparse.ArgumentTypeError: Not a number, or not allowed; argparse prints it after the option's name.
    """
    try:
        return check_number("argument", _parsed(text, whole), whole=whole, **allowed)
    except NumberError as error:
        raise argparse.ArgumentTypeError(f"{error.requirement}, got {text}") from None


def positive_int(text: str) -> int:
    """``argparse`` type: an integer of at least 1."""
    return number_argument(text, whole=True, low=1)


def thread_count(text: str) -> int | str:
    """``argparse`` type: ``adaptive`` or a number of threads from 1 to this machine's cores."""
    from mnist_cnn.tooling.runctl.threads import thread_setting

    try:
        return thread_setting(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def non_negative_int(text: str) -> int:
    """``argparse`` type: an integer of at least 0."""
    return number_argument(text, whole=True, low=0)


def positive_float(text: str) -> float:
    """``argparse`` type: a finite number greater than 0."""
    return number_argument(text, whole=False, low=0, low_open=True)


def seed_int(text: str) -> int:
    """``argparse`` type: a random seed, a whole number from 0 to 2**63-1."""
    return number_argument(text, whole=True, low=0, high=MAX_SEED)


def learning_rate(text: str) -> float:
    """``argparse`` type: a learning rate, finite, above 0 and at most :data:`MAX_LR`."""
    return number_argument(text, whole=False, low=0, low_open=True, high=MAX_LR)


def escape_output() -> None:
    """Let stdout and stderr print any text (e.g. a file name that is not valid UTF-8) as escapes instead of failing."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a closed or replaced stream (e.g. under pytest's capture)
                pass


def describe_os_error(error: OSError) -> str:
    """One sentence for an ``OSError``: what failed and on which file (e.g. ``No space left on device: models/x/model.pt``)."""
    reason = error.strerror or str(error) or type(error).__name__
    names = [
        display_name(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)
        for name in (error.filename, error.filename2)
        if name is not None
    ]
    return f"{reason}: {' -> '.join(names)}" if names else reason


def _name(name: object) -> str:
    # a path prints escaped; some calls name a file descriptor (an int) instead
    return display_name(name) if isinstance(name, (str, bytes, os.PathLike)) else escape_text(str(name))


def run_cli(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)``, turning user errors into one line on stderr and exit status 1.

    Args:
        main: The command's body; raises :class:`MnistCnnError` for problems the user can fix (an ``OSError``,
            such as a full disk or a permission, is reported in one line too).
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    prog = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "mnist_cnn"
    escape_output()
    try:
        return int(main(argv) or 0)
    except MnistCnnError as error:
        # messages escape the names they quote; this catches any that do not, so one error is always one line
        print(f"error: {escape_text(str(error))}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); silence the flush at exit instead of printing a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as error:
        # a permission, a full disk, a vanished file: the user's environment, not a bug
        print(f"error: {describe_os_error(error)}", file=sys.stderr)
        return 1
