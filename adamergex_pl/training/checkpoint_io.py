"""Checkpoints written atomically and read back with one-line errors: what every ``AdapterModule`` fit uses.

Lightning's ``TorchCheckpointIO`` writes a checkpoint in place, so a full disk or a ``kill -9`` in the middle of
a write leaves a truncated ``last.ckpt`` that every later resume trips over. :class:`AtomicCheckpointIO` writes
``.<name>.tmp-<random>`` beside the target, flushes it to the disk, and renames it over the target: a reader
sees the previous checkpoint or the new one, never part of one. A failed write removes its temporary file; one
left by a killed process is removed by the next write of the same checkpoint (and by ``callbacks.RunCheckpoint``
when a fit starts).

Reading: a checkpoint that is missing, a directory, empty, truncated or corrupt is refused with one line that
names it and says what to do, instead of a traceback from deep inside ``torch.load``.

``AdapterModule.setup`` installs it on the strategy (:func:`install`) unless a ``CheckpointIO`` plugin was
configured.
"""

from __future__ import annotations

import glob
import io
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

from adamergex_pl.errors import InputNotFoundError, InvalidValueError, reraise_os_error
from adamergex_pl.results.files import current_umask

_FIX = "resume from another checkpoint (e.g. an hpc_ckpt_<n>.ckpt) or start the fit again without --ckpt_path"


def partial_prefix(name: str) -> str:
    """The name prefix of the temporary files that writing the checkpoint ``name`` uses."""
    return f".{name}.tmp-"


def checkpoint_problem(path: str | os.PathLike[str], *, thorough: bool = False) -> str | None:
    """Why ``path`` cannot be a checkpoint, or ``None`` when it looks whole.

    Args:
        path: the checkpoint file (``torch.save``'s zip format).
        thorough: also check every member's CRC (reads the whole file); by default only the zip directory at
            the end of the file is read, which any truncation destroys.

    Example:
        >>> checkpoint_problem("no/such.ckpt")
        'it does not exist'
    """
    file = Path(path)
    if not file.exists():
        return "it does not exist"
    if file.is_dir():
        return "it is a directory, not a checkpoint file"
    if file.stat().st_size == 0:
        return "it is empty (0 bytes)"
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
            if not any(name.endswith("data.pkl") for name in names):
                return "it is a zip file but not a torch checkpoint (no data.pkl)"
            bad = archive.testzip() if thorough else None
    except zipfile.BadZipFile as err:
        return f"it is truncated or not a checkpoint ({err})"
    except OSError as err:
        return f"it cannot be read ({err.strerror or err})"
    if bad is not None:
        return f"it is corrupt (member {bad} fails its checksum)"
    return None


def check_checkpoint(path: str | os.PathLike[str], what: str = "--ckpt_path") -> Path:
    """``path`` if it is a whole checkpoint file, else a one-line error.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a directory, empty, truncated or corrupt.
    """
    problem = checkpoint_problem(path)
    if problem == "it does not exist":
        raise InputNotFoundError(
            f"{what} {str(path)!r} does not exist; give an existing checkpoint, 'last' (the newest of this "
            "run), or no --ckpt_path to start a fresh fit"
        )
    if problem is not None:
        raise InvalidValueError(f"{what} {str(path)!r} cannot be loaded: {problem}; {_FIX}")
    return Path(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose writes are atomic and whose bad reads are one line.

    Example:
        ``Trainer(plugins=[AtomicCheckpointIO()])``; ``AdapterModule`` installs it by itself.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise InvalidValueError(
                f"AtomicCheckpointIO does not take storage_options (got {storage_options!r}); drop them"
            )
        target = Path(path)
        buffer = io.BytesIO()  # serialised first: a full disk is then a plain OSError of the write below
        torch.save(checkpoint, buffer)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            for stale in target.parent.glob(glob.escape(partial_prefix(target.name)) + "*"):
                stale.unlink(missing_ok=True)  # left by a process killed while writing this checkpoint
            handle, tmp = tempfile.mkstemp(prefix=partial_prefix(target.name), dir=target.parent)
        except Exception as err:
            reraise_os_error(err, "checkpoint", target)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(buffer.getbuffer())
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(tmp, 0o666 & ~current_umask())
            os.replace(tmp, target)
        except BaseException as err:
            Path(tmp).unlink(missing_ok=True)
            reraise_os_error(err, "checkpoint", target)
        _sync_directory(target.parent)

    @override
    def load_checkpoint(self, path: Any, map_location: Any = lambda storage, loc: storage, weights_only=None):
        check_checkpoint(path)
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except Exception as err:
            problem = checkpoint_problem(path, thorough=True)
            if problem is None:
                raise  # a whole file that fails to load: not the user's input, keep the traceback
            raise InvalidValueError(f"checkpoint {str(path)!r} cannot be loaded: {problem}; {_FIX}") from err


def install(strategy) -> None:
    """Make ``strategy`` write and read checkpoints through :class:`AtomicCheckpointIO`, unless a checkpoint
    plugin other than Lightning's default is configured."""
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


def _sync_directory(directory: Path) -> None:
    """Flush the rename itself to the disk (a power cut would otherwise lose it); best effort."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
