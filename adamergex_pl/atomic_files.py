"""Atomic writes of files and folders: a reader, or a rerun after a kill -9, sees the old version or the new one.

Files and folders are built beside their target (``.tmp-<name>-<pid>@<host>-XXXXXXXX``, named after the
process that writes them) and renamed into place; a replaced folder is moved aside to ``.tmp-old-<name>`` first,
which :func:`finish_interrupted_writes` restores after a kill. Concurrent writers are safe: the publish of a
folder and the repair of a killed one hold an exclusive ``flock`` on the parent folder (so the last writer wins
and the folder is always one whole write), and a repair removes only what processes that are no longer alive on
this host left behind (another host's staging is left alone: its liveness cannot be told).

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
import fcntl
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

TMP = ".tmp-"  # staging files and folders: never a finished write
OLD = ".tmp-old-"  # a folder moved aside while its replacement is renamed into place
# the writer in a staging name: `-<pid>@<host>-` (folders, mkdtemp) or `.<pid>@<host>.` (files, mkstemp), then
# the 8 random characters tempfile adds
_OWNER = re.compile(r"([-.])(\d+)@([A-Za-z0-9_.-]+)\1[A-Za-z0-9_]{8}$")


def _host() -> str:
    """This machine's name as it appears in staging names."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "localhost"


def _owner_tag() -> str:
    return f"{os.getpid()}@{_host()}"


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
    handle, tmp = tempfile.mkstemp(prefix=f"{TMP}{target.name}.{_owner_tag()}.", dir=target.parent)
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
    """A new, empty staging folder beside ``target``, named after this process (its parent is created)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{TMP}{target.name}-{_owner_tag()}-", dir=target.parent))
    staging.chmod(0o777 & ~current_umask())  # mkdtemp makes it private
    return staging


def publish_dir(staging: Path, target: Path, *, replace: bool = True) -> None:
    """Rename ``staging`` to ``target``, replacing an existing ``target`` whole (put back if the rename fails).

    Holds the parent folder's lock, so concurrent publishes of one ``target`` follow each other: the last wins.

    Raises:
        FileExistsError: ``target`` exists (perhaps published by a concurrent writer) and ``replace`` is false.
        OSError: the rename failed; ``target`` is as it was.
    """
    with folder_lock(target.parent):
        if not (target.exists() or target.is_symlink()):
            staging.rename(target)
            return
        if not replace:
            raise FileExistsError(f"{str(target)!r} already exists (another run wrote it meanwhile)")
        old = target.with_name(f"{OLD}{target.name}")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        try:
            staging.rename(target)
        except OSError:
            old.rename(target)
            raise
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (other processes' publishes and repairs there wait).

    Not re-entrant: a second lock of one folder inside the first, in one process, would wait forever.
    """
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def remove_dir(path: Path) -> None:
    """Delete the folder ``path`` so that it is never seen half-deleted: rename it away first."""
    if not path.exists():
        return
    doomed = path.with_name(f"{TMP}drop-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def finish_interrupted_writes(folder: Path, name: str | None = None) -> list[str]:
    """Restore folders moved aside and remove staging leftovers in ``folder`` (of ``name`` only, or all).

    Leftovers of processes still alive on this host (a concurrent writer's staging), and of other hosts, are
    left alone; a folder moved aside is only ever seen here after its writer died (it holds the lock meanwhile).
    Returns what was done; raises OSError when ``folder`` cannot be changed.
    """
    done: list[str] = []
    if not folder.is_dir():
        return done
    with folder_lock(folder):
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
            elif (name is not None and not _staging_of(entry.name, name)) or _written_by_a_live_process(
                entry.name
            ):
                continue  # another target's, or a live writer's
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
    """Whether ``entry`` is ``.tmp-<name>-<pid>@<host>-XXXXXXXX`` or ``.tmp-<name>.<pid>@<host>.XXXXXXXX``
    (or, written before staging names carried their writer, ``.tmp-<name>-XXXXXXXX`` / ``.tmp-<name>.XXXXXXXX``).
    """
    rest = entry[len(TMP) :]
    if not rest.startswith(name):
        return False
    rest = rest[len(name) :]
    return (len(rest) == 9 and rest[0] in "-.") or bool(_OWNER.fullmatch(rest))


def _written_by_a_live_process(entry: str) -> bool:
    """Whether the staging name ``entry`` names a writer that is alive on this host, or one on another host."""
    match = _OWNER.search(entry)
    if match is None:
        return False  # no writer in the name: a leftover of a killed write
    if match.group(3) != _host():
        return True  # another machine's process (a shared file system): its liveness cannot be told here
    return process_alive(int(match.group(2)))


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts until it is reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


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
