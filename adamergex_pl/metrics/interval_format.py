"""How a value with its interval is shown in tables: ``0.186 [0.098, 0.288]`` (one source for every table).

The three numbers use the same fixed number of decimals. A value that rounds to zero prints without a sign
(``0.000``, never ``-0.000``), NaN prints as ``nan``, and a value without an interval prints alone.
"""

from __future__ import annotations

import math
import numbers

from adamergex_pl.errors import InvalidValueError

__all__ = ["format_with_interval"]


def _fixed(value: float, digits: int) -> str:
    if math.isnan(value):
        return "nan"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_with_interval(value: float, ci_low: float | None, ci_high: float | None, digits: int = 3) -> str:
    """``"<value> [<ci_low>, <ci_high>]"`` with ``digits`` decimals, or ``"<value>"`` when there is no interval.

    Args:
        value: The point estimate (a mean, or a difference of means).
        ci_low: Lower end of the interval, or None with ``ci_high`` None when there is no interval.
        ci_high: Upper end of the interval, or None.
        digits: Number of decimals, a non-negative integer.

    Returns:
        The text for a table cell.

    Raises:
        InvalidValueError: If ``digits`` is not a non-negative integer, a number is not a real number, or
            exactly one end of the interval is None.

    Example:
        >>> format_with_interval(0.1864, 0.0981, 0.2876)
        '0.186 [0.098, 0.288]'
        >>> format_with_interval(-0.0004, -0.0123, 0.0110, digits=2)
        '0.00 [-0.01, 0.01]'
        >>> format_with_interval(0.5, None, None)
        '0.500'
    """
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 0:
        raise InvalidValueError(f"digits={digits!r} must be a non-negative integer, e.g. 3")
    if (ci_low is None) != (ci_high is None):
        raise InvalidValueError(
            f"ci_low={ci_low!r} and ci_high={ci_high!r}: pass both ends of the interval, or neither"
        )
    shown = _fixed(_as_float("value", value), int(digits))
    if ci_low is None or ci_high is None:
        return shown
    low = _fixed(_as_float("ci_low", ci_low), int(digits))
    high = _fixed(_as_float("ci_high", ci_high), int(digits))
    return f"{shown} [{low}, {high}]"


def _as_float(name: str, number: object) -> float:
    """``float(number)`` for a real number (also a numpy or 0-dim torch scalar); refuses text and booleans."""
    if not isinstance(number, (str, bytes, bool)):
        try:
            return float(number)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    raise InvalidValueError(f"{name}={number!r} must be a real number, e.g. 0.5")
