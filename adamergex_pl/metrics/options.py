"""Option letters of multiple-choice items: ``0 ↔ "A" ↔ "(A)"``, and reading a letter from a choice string.

Letters are upper-case ``A``-``Z``; anything else is refused, since a mis-read letter would hide an extraction bug.
"""

from __future__ import annotations

import operator
import re
import string

from adamergex_pl.errors import InvalidTypeError, InvalidValueError

__all__ = ["index_to_letter", "option_index", "option_letter"]

_OPTION = re.compile(r"^(?:([A-Z])|\(([A-Z])\)(?:\s.*)?)$", re.DOTALL)


def _check_num_options(num_options: int | None) -> None:
    if num_options is not None and (
        isinstance(num_options, bool) or not isinstance(num_options, int) or not 1 <= num_options <= 26
    ):
        raise InvalidValueError(f"num_options={num_options!r} must be an integer from 1 to 26")


def option_index(option: str, num_options: int | None = None) -> int:
    """The 0-based index of an option given as ``"B"``, ``"(B)"`` or ``"(B) funny"``.

    Raises:
        TypeError: If ``option`` is not a string.
        ValueError: If ``option`` has none of the accepted forms, or its letter is outside the option set.

    Example:
        >>> option_index("C"), option_index("(B) funny")
        (2, 1)
    """
    _check_num_options(num_options)
    if not isinstance(option, str):
        raise InvalidTypeError(f"option={option!r} must be a string such as 'B', '(B)' or '(B) funny'")
    match = _OPTION.match(option.strip())
    if match is None:
        raise InvalidValueError(
            f"option={option!r} is not an option letter; expected 'B', '(B)' or a choice string '(B) ...' "
            "with an upper-case letter A-Z"
        )
    index = string.ascii_uppercase.index(match.group(1) or match.group(2))
    if num_options is not None and index >= num_options:
        last = string.ascii_uppercase[num_options - 1]
        raise InvalidValueError(
            f"option={option!r} is outside the option set A-{last} (num_options={num_options}); "
            "check the answer extraction, or raise num_options if the items have more options"
        )
    return index


def option_letter(option: str, num_options: int | None = None) -> str:
    """The bare letter of an option given as ``"B"``, ``"(B)"`` or ``"(B) funny"``.

    Raises:
        TypeError: If ``option`` is not a string.
        ValueError: As :func:`option_index`.

    Example:
        >>> option_letter("(D) followers")
        'D'
    """
    return string.ascii_uppercase[option_index(option, num_options)]


def index_to_letter(index: int, parenthesized: bool = False) -> str:
    """The letter (``"B"``) or tag (``"(B)"``) of the option at a 0-based index.

    Raises:
        TypeError: If ``index`` is not an integer.
        ValueError: If ``index`` is outside 0-25.

    Example:
        >>> index_to_letter(1), index_to_letter(1, parenthesized=True)
        ('B', '(B)')
    """
    if isinstance(index, bool) or not hasattr(index, "__index__"):
        raise InvalidTypeError(f"index={index!r} must be an int from 0 to 25")
    index = operator.index(index)
    if not 0 <= index < 26:
        raise InvalidValueError(f"index={index} is outside 0-25; there are only 26 option letters A-Z")
    letter = string.ascii_uppercase[index]
    return f"({letter})" if parenthesized else letter
