"""Writing result files atomically: a reader (or a rerun after a crash) sees the old file or the new one, never
half of one.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "results.md"
    >>> write_text_atomic(path, "| a |\\n").read_text()
    '| a |\\n'
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | os.PathLike[str], text: str, *, mode: int | None = None) -> Path:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``.

    Args:
        path: the file to (re)place; its folder is created if missing.
        text: the content (UTF-8).
        mode: file permissions to set before the rename (e.g. ``0o755`` for a script); default: the
            temporary file's (``0o600``) widened to what the umask allows for a new file.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        OSError: the folder is not writable or the disk is full; the temporary file is removed first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(tmp, mode if mode is not None else 0o666 & ~current_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def current_umask() -> int:
    """The process's umask (read without changing it for longer than one call)."""
    current = os.umask(0)
    os.umask(current)
    return current


def write_jsonl_atomic(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``records`` as JSON Lines (one object per line, UTF-8, non-ASCII kept) atomically.

    Args:
        path: the file to (re)place.
        records: JSON-serialisable mappings (numbers, strings, lists, None); other values are written as text.

    Returns:
        ``path`` as a ``Path``.
    """
    text = "".join(json.dumps(dict(record), ensure_ascii=False, default=str) + "\n" for record in records)
    return write_text_atomic(path, text)
