"""Checking numbers a user gave: one helper for every field, option and argument, with one-line messages.

Messages name the field and what it allows (``epochs must be a whole number at least 1, got 1.5``); booleans are
never numbers here, although Python counts them as ints.
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
    """A number a field does not allow; the message is ``"<field> <requirement>, got <value>"``.

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
    """Check that ``value`` (anything) is a number the field allows; return it as an ``int`` when ``whole``, else a ``float``.

    Args:
        name: The field, option or argument, as the message names it.
        whole: Only an ``int`` will do (even ``5.0`` is refused: see :func:`whole_float_as_int`); else any finite number.
        low: The smallest value allowed (``None`` or infinite: no bound).
        high: The largest value allowed (``None`` or infinite: no bound).
        low_open: ``low`` itself is not allowed (``above 0`` rather than ``at least 0``).
        high_open: ``high`` itself is not allowed (``below 1`` rather than ``at most 1``).

    Raises:
        NumberError: Not a number of that kind, not finite, or out of range (a :class:`ConfigError`).
    """
    number, problem = _check(value, whole, low, high, low_open, high_open)
    if problem is not None:
        raise NumberError(name, value, *problem)
    return number  # type: ignore[return-value]


def read_number(value: Any, *, whole: bool = False, low: Number | None = None, high: Number | None = None) -> Number | None:
    """:func:`check_number` for what a file recorded: the number, or ``None`` (text, NaN, a list, out of range...)."""
    number, problem = _check(value, whole, low, high, False, False)
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


def _check(value: Any, whole: bool, low: Number | None, high: Number | None, low_open: bool, high_open: bool):
    """``(number, None)``, or ``(None, (requirement, reason))`` when ``value`` is not allowed."""
    low = None if low is None or low == -math.inf else low
    high = None if high is None or high == math.inf else high
    lower = None if low is None else f"{'above' if low_open else 'at least'} {written(low)}"
    upper = None if high is None else f"{'below' if high_open else 'at most'} {written(high)}"
    kind_problem = _kind_problem(value, whole)
    if kind_problem is not None:
        kind = "a whole number" if whole else "a finite number"
        if lower and upper and not (low_open or high_open):
            allowed = f"{kind} from {written(low)} to {written(high)}"  # type: ignore[arg-type]
        else:
            allowed = " ".join([kind, " and ".join(part for part in (lower, upper) if part)]).rstrip()
        return None, (f"must be {allowed}", kind_problem)
    number = int(value) if whole else float(value)
    if low is not None and (number <= low if low_open else number < low):
        return None, (f"must be {lower}" if whole else f"must be a finite number {lower}", OUT_OF_RANGE)
    if high is not None and (number >= high if high_open else number > high):
        return None, (f"must be {upper}", OUT_OF_RANGE)
    return number, None


def _kind_problem(value: Any, whole: bool) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return NOT_A_NUMBER
    if whole:
        return None if isinstance(value, int) else NOT_WHOLE
    try:
        return None if math.isfinite(float(value)) else NOT_FINITE
    except OverflowError:  # an int past float's range (about 1.8e308)
        return NOT_FINITE
