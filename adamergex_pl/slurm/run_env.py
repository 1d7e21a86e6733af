"""The environment a job rendered by ``adamergex submit`` gives its command, and how the CLI reads it.

``ADAMERGEX_RUN_DIR`` (:data:`RUN_DIR_ENV`) is the one variable the script adds. It names a directory pinned
to the SLURM job id (default ``runs/slurm/<job name>-<job id>``, absolute), the same on every run of a
requeued job. The CLI honours it (:mod:`adamergex_pl.slurm.pinning`) so that a requeued ``fit`` resumes where
it stopped:

* ``trainer.default_root_dir`` = the run dir. ``callbacks.SlurmRequeue`` saves ``hpc_ckpt_<n>.ckpt`` there
  at the first optimizer-step boundary after the requeue signal, then requeues the job; on the next run the
  CLI passes the newest one as ``ckpt_path`` (:func:`hpc_checkpoint`; ``ckpt_path="hpc"`` would fail on a
  first run, where there is none yet). Snapshots (``<run dir>/snapshots``) land there too.
* loggers get a fixed ``version`` (``job_<id>``), not the next free ``version_<n>``, so that a restart
  appends to the same logs;
* the saved CLI config is overwritten on a restart (:func:`restart_count` > 0), with the ``ckpt_path`` it
  resumed from.

The SLURM variables are SLURM's own: ``SLURM_JOB_ID``, ``SLURM_RESTART_COUNT`` (absent on a first run),
``SLURM_PROCID`` and friends (set per task by ``srun``).

Example:
    >>> import os
    >>> os.environ[RUN_DIR_ENV] = "/runs/fit-42"
    >>> pinned_run_dir()
    PosixPath('/runs/fit-42')
    >>> del os.environ[RUN_DIR_ENV]
"""

from __future__ import annotations

import os
import re
from pathlib import Path

RUN_DIR_ENV = "ADAMERGEX_RUN_DIR"
_HPC_CHECKPOINT = re.compile(r"^hpc_ckpt_(\d+)\.ckpt$")


def pinned_run_dir() -> Path | None:
    """The run directory of this job (``$ADAMERGEX_RUN_DIR``), or ``None`` outside a submitted job.

    Example:
        >>> pinned_run_dir()  # doctest: +SKIP
        PosixPath('/work/runs/slurm/fit-1234')
    """
    value = os.environ.get(RUN_DIR_ENV, "").strip()
    return Path(value) if value else None


def restart_count() -> int:
    """How often SLURM has restarted this job (``$SLURM_RESTART_COUNT``; 0 on a first run or outside SLURM).

    Raises:
        ValueError: ``SLURM_RESTART_COUNT`` is set but not a whole number.
    """
    value = os.environ.get("SLURM_RESTART_COUNT", "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise ValueError(
            f"SLURM_RESTART_COUNT={value!r} is not a whole number; expected what SLURM sets, e.g. '1'"
        )
    return int(value)


def hpc_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest Lightning HPC checkpoint (``hpc_ckpt_<n>.ckpt``) in ``run_dir``; ``None`` if there is none.

    ``callbacks.SlurmRequeue`` writes these into ``trainer.default_root_dir`` (Lightning's own SLURM handler
    uses the same names); a first run has none, which is why ``ckpt_path="hpc"`` must not be passed
    unconditionally.

    Args:
        run_dir: the directory to look in; a missing directory has no checkpoint.

    Example:
        >>> hpc_checkpoint("/nonexistent") is None
        True
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        return None
    numbered = [
        (int(m.group(1)), path) for path in folder.iterdir() if (m := _HPC_CHECKPOINT.match(path.name))
    ]
    return max(numbered)[1] if numbered else None
