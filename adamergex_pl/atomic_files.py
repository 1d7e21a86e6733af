"""Atomic writes of files and folders: a reader, or a rerun after a kill -9, sees the old version or the new one.

Files and folders are built beside their target (``.tmp-<name>...``) and renamed into place; a replaced folder
is moved aside to ``.tmp-old-<name>`` first, which :func:`finish_interrupted_writes` restores after a kill.

Example:
    >>> import tempfile, pathlib
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> write_atomic(root / "results.md", "| a |\\n").read_text()
    '| a |\\n'
    >>> staging = staging_dir(root / "adapter")
    >>> _ = (staging / "adapter_config.json").write_text("{}")
    >>> publish_dir(staging, root / "adapter")
    >>> sorted(p.name for p in root.iterdir())
    ['adapter', 'results.md']
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

TMP = ".tmp-"  # staging files and folders: never a finished write
OLD = ".tmp-old-"  # a folder moved aside while its replacement is renamed into place


def current_umask() -> int:
    """The process's umask."""
    current = os.umask(0)
    os.umask(current)
    return current


def write_atomic(
    path: str | os.PathLike[str],
    data: str | bytes | memoryview,
    *,
    mode: int | None = None,
    durable: bool = False,
) -> Path:
    """Write ``data`` (text as UTF-8) to a temporary file beside ``path``, then rename it over ``path``.

    Args:
        path: the file to (re)place; its folder is created if missing.
        data: the content.
        mode: file permissions (e.g. ``0o755``); default: what the umask allows.
        durable: ``fsync`` the file before the rename and its folder after it.

    Raises:
        OSError: the folder is not writable or the disk is full; the temporary file is removed first.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    finish_interrupted_writes(target.parent, target.name)  # a temporary file of a killed write of this file
    handle, tmp = tempfile.mkstemp(prefix=f"{TMP}{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.chmod(tmp, mode if mode is not None else 0o666 & ~current_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        _sync_directory(target.parent)
    return target


def write_jsonl_atomic(path: str | os.PathLike[str], records: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``records`` as UTF-8 JSON Lines atomically; values that are not JSON are written as text."""
    text = "".join(json.dumps(dict(record), ensure_ascii=False, default=str) + "\n" for record in records)
    return write_atomic(path, text)


def staging_dir(target: Path) -> Path:
    """A new, empty staging folder beside ``target`` (its parent is created)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{TMP}{target.name}-", dir=target.parent))
    staging.chmod(0o777 & ~current_umask())  # mkdtemp makes it private
    return staging


def publish_dir(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, replacing an existing ``target`` whole (put back if the rename fails)."""
    if not (target.exists() or target.is_symlink()):
        staging.rename(target)
        return
    old = target.with_name(f"{OLD}{target.name}")
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    try:
        staging.rename(target)
    except OSError:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def remove_dir(path: Path) -> None:
    """Delete the folder ``path`` so that it is never seen half-deleted: rename it away first."""
    if not path.exists():
        return
    doomed = path.with_name(f"{TMP}drop-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def finish_interrupted_writes(folder: Path, name: str | None = None) -> list[str]:
    """Restore folders moved aside and remove staging leftovers in ``folder`` (of ``name`` only, or all).

    Returns what was done; raises OSError when ``folder`` cannot be changed.
    """
    done = []
    if not folder.is_dir():
        return done
    for entry in sorted(folder.iterdir()):
        if not entry.name.startswith(TMP):
            continue
        if entry.name.startswith(OLD):
            original = folder / entry.name[len(OLD) :]
            if name is not None and original.name != name:
                continue
            if not (original.exists() or original.is_symlink()):
                entry.rename(original)
                done.append(f"restored {original.name}")
                continue
        elif name is not None and not _staging_of(entry.name, name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        done.append(f"removed {entry.name}")
    return done


def is_within(path: Path, directory: Path) -> bool:
    """Whether ``path`` is ``directory`` or lies under it (both resolved by the caller)."""
    return path == directory or directory in path.parents


def _staging_of(entry: str, name: str) -> bool:
    """Whether ``entry`` is ``.tmp-<name>-XXXXXXXX`` or ``.tmp-<name>.XXXXXXXX`` (mkdtemp/mkstemp add 8)."""
    rest = entry[len(TMP) :]
    return rest.startswith(name) and len(rest) == len(name) + 9 and rest[len(name)] in "-."


def _sync_directory(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(handle)
    finally:
        os.close(handle)
