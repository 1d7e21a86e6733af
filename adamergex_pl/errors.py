"""Errors that mean "the user's input is wrong", so the CLI prints one line instead of a traceback.

They subclass the built-in exception a caller expects (``ValueError``, ``TypeError``, ``FileNotFoundError``),
so library users catch them as usual, while ``adamergex`` recognises them through ``UserInputError`` and
prints ``adamergex: error: <message>`` with exit code 2 (set ``ADAMERGEX_DEBUG=1`` for the traceback).
A message names the offending value, the expected form, and the fix where one is obvious.
"""

from __future__ import annotations


class UserInputError(Exception):
    """Marker base class: raised for bad user input, never for a bug in the package."""


class InvalidValueError(UserInputError, ValueError):
    """A value has the right type but is not acceptable (unknown name, out of range, conflicting options)."""


class InvalidTypeError(UserInputError, TypeError):
    """A value has the wrong type."""


class InputNotFoundError(UserInputError, FileNotFoundError):
    """A file or directory that the input names does not exist or lacks what is needed."""
