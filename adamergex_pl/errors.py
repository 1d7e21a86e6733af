"""Errors that mean "the user's input is wrong", so the CLI prints one line instead of a traceback.

They subclass the built-in exception a caller expects (``ValueError``, ``TypeError``, ``FileNotFoundError``),
so library users catch them as usual, while ``adamergex`` recognises them through ``UserInputError`` and
prints ``adamergex: error: <message>`` with exit code 2 (set ``ADAMERGEX_DEBUG=1`` for the traceback).
A message names the offending value, the expected form, and the fix where one is obvious.
"""

from __future__ import annotations

import errno
import os
import re


class UserInputError(Exception):
    """Marker base class: raised for bad user input, never for a bug in the package."""


class InvalidValueError(UserInputError, ValueError):
    """A value has the right type but is not acceptable (unknown name, out of range, conflicting options)."""


class InvalidTypeError(UserInputError, TypeError):
    """A value has the wrong type."""


class InputNotFoundError(UserInputError, FileNotFoundError):
    """A file or directory that the input names does not exist or lacks what is needed."""


class OutputNotWritableError(UserInputError, OSError):
    """A file or directory cannot be written or read where the input says: read-only, not a directory,
    permission denied, or the disk is full. Raised with the path, what it is for, and the fix."""


class RunInterrupted(Exception):
    """A run stopped by a signal (``SIGTERM``, ``SIGINT``) after saving what resumes it: ``adamergex`` prints
    the message and exits with ``exit_code``, 128 + the signal's number (143 for ``SIGTERM``, 130 for
    ``SIGINT``), so a wrapper script or a scheduler never takes it for a finished run."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# errno -> (what happened, the fix): the operating-system errors that the user's paths and disks cause
_OS_REASONS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", "free space there or choose another directory"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space there or choose another directory"),
    errno.EROFS: ("the file system is read-only", "choose a writable directory"),
    errno.EACCES: ("permission denied", "fix the permissions or choose another path"),
    errno.EPERM: ("operation not permitted", "fix the permissions or choose another path"),
    errno.ENOTDIR: ("a part of the path is a file, not a directory", "choose another path"),
    errno.EISDIR: ("it is a directory, not a file", "choose another path"),
    errno.EEXIST: ("it exists and is in the way", "remove it or choose another path"),
}


def as_os_error(err: BaseException) -> OSError | None:
    """``err`` if it is an ``OSError``; for a Rust library's error that carries one in its message
    (safetensors: ``"... No space left on device (os error 28)"``) an equivalent ``OSError``; else ``None``."""
    if isinstance(err, OSError):
        return err
    match = re.search(r"\(os error (\d+)\)", str(err))
    return OSError(int(match.group(1)), os.strerror(int(match.group(1)))) if match else None


def os_error_reason(err: BaseException) -> tuple[str, str] | None:
    """``(what happened, the fix)`` for an OS error that the user's paths or disk caused, else ``None``.

    Example:
        >>> os_error_reason(OSError(errno.ENOSPC, "No space left on device"))[0]
        'no space left on the device'
    """
    os_err = as_os_error(err)
    return _OS_REASONS.get(getattr(os_err, "errno", None)) if os_err is not None else None


def user_os_error(err: BaseException, what: str, path: object) -> OutputNotWritableError | None:
    """The one-line error for ``err``, raised while writing ``what`` at ``path``; ``None`` when ``err`` is not
    an OS error of the user's paths or disk (a bug keeps its traceback).

    Example:
        >>> str(user_os_error(OSError(errno.EROFS, "Read-only file system"), "checkpoint", "/ro/last.ckpt"))
        "cannot write checkpoint '/ro/last.ckpt': the file system is read-only; choose a writable directory"
    """
    reason = os_error_reason(err)
    if reason is None or isinstance(err, UserInputError):
        return None
    where = getattr(as_os_error(err), "filename", None)
    detail = f" ({where})" if where and str(where) != str(path) else ""
    return OutputNotWritableError(f"cannot write {what} {str(path)!r}{detail}: {reason[0]}; {reason[1]}")


def reraise_os_error(err: BaseException, what: str, path: object) -> None:
    """In an ``except`` block: raise :func:`user_os_error` of ``err`` when there is one, else ``err`` itself."""
    user = user_os_error(err, what, path)
    if user is not None:
        raise user from err
    raise err
