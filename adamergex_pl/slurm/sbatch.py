"""Calling ``sbatch``: find it, write a script where it can be read back, submit it, return the job id.

Example:
    >>> job_id = sbatch_submit("runs/slurm/jobs/fit.sbatch")  # doctest: +SKIP
    >>> job_id  # doctest: +SKIP
    '1234'
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from adamergex_pl.results.files import write_text_atomic
from adamergex_pl.slurm.resources import JobResources


class SbatchNotFoundError(FileNotFoundError):
    """``sbatch`` is not installed (or not on ``PATH``) where ``adamergex submit`` runs."""


class SbatchError(RuntimeError):
    """``sbatch`` refused a script or printed no job id; the message carries sbatch's own error."""


def find_sbatch(sbatch: str = "sbatch") -> str:
    """The path of the ``sbatch`` executable.

    Args:
        sbatch: a command name looked up on ``PATH``, or a path.

    Returns:
        The executable's path.

    Raises:
        SbatchNotFoundError: it is not found; the message says how to get it or how to do without it.

    Example:
        >>> find_sbatch()  # doctest: +SKIP
        '/usr/bin/sbatch'
    """
    found = shutil.which(sbatch)
    if found is None:
        raise SbatchNotFoundError(
            f"sbatch={sbatch!r} was not found on PATH, so the job cannot be submitted. Run this on a SLURM "
            "login node, install the SLURM client (Debian/Ubuntu: apt-get install slurm-client, or load your "
            "cluster's slurm module), pass --sbatch PATH, or use --dry-run to print the script without "
            "submitting it"
        )
    return found


def sbatch_submit(
    script_path: str | os.PathLike[str],
    *,
    extra_args: Sequence[str] = (),
    sbatch: str = "sbatch",
    timeout: float = 120.0,
) -> str:
    """Submit a script with ``sbatch --parsable`` and return its job id.

    Args:
        script_path: the script to submit.
        extra_args: sbatch options placed before the script, e.g. ``["--dependency=afterok:12"]``; they
            override the script's ``#SBATCH`` lines.
        sbatch: the sbatch command or path.
        timeout: seconds to wait for sbatch.

    Returns:
        The job id as sbatch prints it (``"1234"``; the cluster name of a federation is dropped).

    Raises:
        SbatchNotFoundError: sbatch is missing.
        SbatchError: sbatch failed, timed out, or printed no job id.
    """
    executable = find_sbatch(sbatch)
    cmd = [executable, "--parsable", *extra_args, os.fspath(script_path)]
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise SbatchError(f"sbatch did not answer within {timeout:.0f} s: {' '.join(cmd)}") from err
    if result.returncode != 0:
        raise SbatchError(
            f"sbatch refused {os.fspath(script_path)} (exit {result.returncode}): "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    job_id = result.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise SbatchError(f"sbatch printed no job id for {os.fspath(script_path)}: {result.stdout.strip()!r}")
    return job_id


def write_script(text: str, path: str | os.PathLike[str]) -> Path:
    """Write a script atomically (temporary file, then rename), executable, creating its directory.

    Args:
        text: the script.
        path: where it goes.

    Returns:
        The path written.
    """
    return write_text_atomic(path, text, mode=0o755)


def make_log_dirs(resources: JobResources, *, workdir: str | os.PathLike[str]) -> list[Path]:
    """Create the directories of ``resources.output`` and ``resources.error``: sbatch does not.

    A job whose log directory is missing fails at start without a word, so they are made at submission.

    Args:
        resources: the job's options (their log directories hold no patterns; ``JobResources`` checks it).
        workdir: the job's working directory, against which relative log paths resolve.

    Returns:
        The directories.
    """
    made = []
    for log in (resources.output, resources.error):
        if log is None:
            continue
        folder = (Path(workdir) / log).parent
        folder.mkdir(parents=True, exist_ok=True)
        made.append(folder)
    return made
