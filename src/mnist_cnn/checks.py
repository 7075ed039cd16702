"""Checking numbers a user gave: one helper for every field, option and argument.

:func:`check_number` raises one line that names the field and what it allows; :func:`read_number` is the same
check for readers of recorded files, which show what they can and answer ``None`` for the rest. The messages:

* not a number of the kind asked for (text, ``True``, ``1.5`` for a whole number, NaN, infinity): the kind and
  every bound, ``epochs must be a whole number at least 1, got 1.5``;
* below the lower bound: ``epochs must be at least 1, got 0``; a real number is told it must be
  ``a finite number above 0``, the words NaN and infinity get too;
* above the upper bound: ``seed must be at most 2**63-1, got 9223372036854775808``.

Bounds of ``2**k`` or ``2**k-1`` past 2**32 are written so. Booleans are never numbers here, although Python
counts them as ints.
"""

from __future__ import annotations

import math
from typing import Any

from mnist_cnn.errors import ConfigError
from mnist_cnn.text import escape_text

Number = int | float
#: Why a value was refused (:attr:`NumberError.reason`).
NOT_A_NUMBER, NOT_WHOLE, NOT_FINITE, OUT_OF_RANGE = "not a number", "not a whole number", "not a finite number", "out of range"


class NumberError(ConfigError):
    """A number a field does not allow. Its message is ``"<field> <requirement>, got <value>"``.

    Attributes:
        field: The field, option or argument, as named in the message.
        requirement: What the value must be, e.g. ``"must be at least 1"`` (what argparse prints after the option).
        reason: :data:`NOT_A_NUMBER`, :data:`NOT_WHOLE`, :data:`NOT_FINITE` or :data:`OUT_OF_RANGE`.
    """

    def __init__(self, field: str, value: Any, requirement: str, reason: str) -> None:
        super().__init__(f"{field} {requirement}, got {shown(value)}")
        self.field, self.requirement, self.reason = field, requirement, reason


def check_number(
    name: str,
    value: Any,
    *,
    whole: bool = False,
    low: Number | None = None,
    high: Number | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> Number:
    """Check that ``value`` is a number of the kind and in the range a field allows.

    Args:
        name: The field, option or argument, as the message names it.
        value: What was given (anything: it is checked).
        whole: Only an ``int`` will do (a float, even ``5.0``, is refused: see :func:`whole_float_as_int`);
            otherwise any finite ``int`` or ``float``.
        low: The smallest value allowed, or ``None``.
        high: The largest value allowed, or ``None`` (an infinite bound is no bound).
        low_open: ``low`` itself is not allowed (``above 0`` rather than ``at least 0``).
        high_open: ``high`` itself is not allowed (``below 1`` rather than ``at most 1``).

    Returns:
        ``value`` as an ``int`` when ``whole``, else as a ``float``.

    Raises:
        NumberError: Not a number of that kind, not finite, or out of range (a :class:`ConfigError`).
    """
    bounds = _Bounds(whole, low, high, low_open, high_open)
    number, problem = bounds.check(value)
    if problem is not None:
        raise NumberError(name, value, *problem)
    return number


def read_number(value: Any, *, whole: bool = False, low: Number | None = None, high: Number | None = None) -> Number | None:
    """:func:`check_number` for what a file recorded: the number, or ``None`` where it would raise.

    Args:
        value: A value read from a file.
        whole: Only an ``int`` will do.
        low: The smallest value allowed, or ``None``.
        high: The largest value allowed, or ``None``.

    Returns:
        ``value`` as an ``int`` (``whole``) or ``float``; ``None`` for text, NaN, a list, a number out of range...
    """
    number, problem = _Bounds(whole, low, high, False, False).check(value)
    return None if problem is not None else number


def whole_float_as_int(value: Any) -> Any:
    """A float with a whole value as an ``int`` (JSON and JavaScript may write 5 as ``5.0``); anything else unchanged."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def shown(value: Any) -> str:
    """``value`` for a message: its ``repr``, cut to a readable length and escaped to print on one line."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"a {value.bit_length()}-bit whole number"  # repr() refuses past 4,300 digits; the size says enough
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a user's object whose repr fails still gets a message
        text = f"<{type(value).__name__}>"
    return escape_text(text if len(text) <= 40 else text[:37] + "...")


def written(bound: Number) -> str:
    """A bound as messages write it: ``2**63-1`` and ``2**53`` for such large ints, ``1e+06`` for floats."""
    if isinstance(bound, float):
        return f"{bound:g}"
    if bound >= 2**32 and (bound & (bound + 1)) == 0:
        return f"2**{bound.bit_length()}-1"
    if bound >= 2**32 and (bound & (bound - 1)) == 0:
        return f"2**{bound.bit_length() - 1}"
    return str(bound)


class _Bounds:
    """What a field allows, and the words for it."""

    def __init__(self, whole: bool, low: Number | None, high: Number | None, low_open: bool, high_open: bool) -> None:
        self.whole = whole
        self.low = None if low is None or low == -math.inf else low
        self.high = None if high is None or high == math.inf else high
        self.lower = None if self.low is None else f"{'above' if low_open else 'at least'} {written(self.low)}"
        self.upper = None if self.high is None else f"{'below' if high_open else 'at most'} {written(self.high)}"
        self.low_open, self.high_open = low_open, high_open

    def allowed(self) -> str:
        """Every value allowed, e.g. ``"a whole number from 1 to 10"`` or ``"a finite number above 0 and at most 1e+06"``."""
        kind = "a whole number" if self.whole else "a finite number"
        if self.lower and self.upper and not (self.low_open or self.high_open):
            return f"{kind} from {written(self.low)} to {written(self.high)}"  # type: ignore[arg-type]
        return " ".join([kind, " and ".join(part for part in (self.lower, self.upper) if part)]).rstrip()

    def check(self, value: Any) -> tuple[Number, None] | tuple[None, tuple[str, str]]:
        """``(number, None)``, or ``(None, (requirement, reason))`` when ``value`` is not allowed."""
        kind_problem = self._kind_problem(value)
        if kind_problem is not None:
            return None, (f"must be {self.allowed()}", kind_problem)
        number = int(value) if self.whole else float(value)
        if self.low is not None and (number <= self.low if self.low_open else number < self.low):
            return None, (f"must be {self.lower}" if self.whole else f"must be a finite number {self.lower}", OUT_OF_RANGE)
        if self.high is not None and (number >= self.high if self.high_open else number > self.high):
            return None, (f"must be {self.upper}", OUT_OF_RANGE)
        return number, None

    def _kind_problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return NOT_A_NUMBER
        if self.whole:
            return None if isinstance(value, int) else NOT_WHOLE
        try:
            return None if math.isfinite(float(value)) else NOT_FINITE
        except OverflowError:  # an int past float's range (about 1.8e308)
            return NOT_FINITE
