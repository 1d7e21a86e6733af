"""Changing a snapshot root so that a kill at any moment leaves complete snapshots and a ``last`` that points
at one (the steps ``callbacks.AdapterSnapshot`` takes, and how the next run finishes an interrupted one).

Every change is a rename, which is atomic on one file system:

* a new snapshot is built in ``.tmp-epoch=<N>-<random>/`` and renamed to ``epoch=<N>``; an existing
  ``epoch=<N>`` (an epoch written again) is first renamed to ``.tmp-old-epoch=<N>``;
* ``last`` is replaced by renaming the link ``.tmp-last`` over it;
* a snapshot is removed by renaming it to ``.tmp-drop-epoch=<N>-<pid>-<ns>`` and then deleting that.

:func:`finish_interrupted_writes`, at the start of the next fit, deletes what a killed run left half-made, puts
back an ``epoch=<N>`` that was moved aside but not replaced, and re-points a ``last`` that dangles.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from adamergex_pl.training.snapshots import LAST_LINK, list_snapshots

TMP = ".tmp-"
OLD = ".tmp-old-"
DROP = ".tmp-drop-"


def is_within(path: Path, directory: Path) -> bool:
    """Whether ``path`` is ``directory`` or lies under it (both resolved by the caller)."""
    return path == directory or directory in path.parents


def point_last(root: Path, name: str) -> None:
    """Atomically make ``<root>/last`` a relative symlink to ``name``."""
    link_tmp = root / f"{TMP}{LAST_LINK}"
    link_tmp.unlink(missing_ok=True)
    link_tmp.symlink_to(name)
    os.replace(link_tmp, root / LAST_LINK)


def replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing an existing ``target`` (a re-run epoch).

    A kill between the two renames leaves ``.tmp-old-<target>``, which :func:`finish_interrupted_writes`
    moves back.
    """
    if not target.exists():
        new.rename(target)
        return
    old = target.with_name(f"{OLD}{target.name}")
    shutil.rmtree(old, ignore_errors=True)
    target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def remove_dir(path: Path) -> None:
    """Delete the directory ``path`` so that it is never seen half-deleted: rename it away first."""
    if not path.exists():
        return
    doomed = path.with_name(f"{DROP}{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    path.rename(doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def finish_interrupted_writes(root: Path) -> list[str]:
    """Finish what a run killed while changing ``root`` left behind; return what was done, for the log.

    Raises:
        OSError: ``root`` cannot be changed (read-only, full).
    """
    done = []
    for entry in sorted(root.iterdir()):
        name = entry.name
        if name.startswith(OLD) and not (root / name[len(OLD) :]).exists():
            entry.rename(root / name[len(OLD) :])  # moved aside, never replaced: put it back
            done.append(f"restored {name[len(OLD) :]}")
        elif name.startswith(TMP):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            done.append(f"removed {name}")
    last = root / LAST_LINK
    if last.is_symlink() and not last.exists():
        remaining = list_snapshots(root)
        if remaining:
            point_last(root, remaining[-1][1].name)
        else:
            last.unlink()
        done.append("re-pointed last")
    return done
