"""The requeue signal: a handler that only records it, and the ``scontrol requeue`` that follows later.

SLURM sends the requeue signal (``--signal=SIGUSR1@<seconds>`` before the time limit, ``scancel --signal=USR1``,
or at preemption with ``PreemptParameters=send_user_signal``) to every task of the job's steps. What to do
about it is decided at a safe point of training by ``callbacks.SlurmRequeue``; this module holds the parts that
do not need a Trainer:

* :func:`arm` installs a handler that records the signal and does nothing else. ``adamergex`` arms it at start-up
  inside a submitted job, before the model loads and before data-loader workers fork (they inherit it), so an
  early signal is remembered instead of killing the process (the default action of ``SIGUSR1``).
* :func:`received` says whether it came; :func:`clear` forgets it.
* :func:`requeue_job` runs ``scontrol requeue <job id>``. SLURM then cancels the running step (``SIGTERM``, then
  ``SIGKILL`` after ``KillWait``) and queues the job again under the same id, so it must come last: after the
  checkpoint is complete.
* :class:`RequeueStop` is raised to end a run that was checkpointed for a requeue; ``adamergex`` turns it into
  its exit code.

Why not Lightning's ``SLURMEnvironment(auto_requeue=True)``: its handler saves the HPC checkpoint inside the
signal handler, i.e. wherever the main thread was when the signal came (between the optimizer step and the
progress counters, or midway through gradient accumulation, whose gradients are not saved), and under DDP it
calls the collective ``save_checkpoint`` from a handler that fires at a different point on each rank. Then
training goes on until SLURM kills it, writing snapshots and checkpoints newer than the HPC checkpoint.

Example:
    >>> import os, signal
    >>> previous = signal.getsignal(signal.SIGUSR1)
    >>> arm(signal.SIGUSR1)
    >>> os.kill(os.getpid(), signal.SIGUSR1)
    >>> received()
    'SIGUSR1'
    >>> clear(); received() is None
    True
    >>> _ = signal.signal(signal.SIGUSR1, previous)
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from typing import Any

from adamergex_pl.errors import InvalidValueError

REQUEUE_SIGNAL_ENV = "ADAMERGEX_REQUEUE_SIGNAL"
DEFAULT_REQUEUE_SIGNAL = "SIGUSR1"

_received: list[str] = []  # names of the requeue signals seen since the last clear()


def requeue_signal(name: str | None = None) -> signal.Signals:
    """The requeue signal named ``name``, else ``$ADAMERGEX_REQUEUE_SIGNAL``, else ``SIGUSR1``.

    ``adamergex submit`` exports ``ADAMERGEX_REQUEUE_SIGNAL`` with the job's ``--signal`` name.

    Args:
        name: a signal name such as ``"SIGUSR1"`` or ``"USR1"`` (any case).

    Raises:
        ValueError: the name is not a signal of this platform, or names a signal that must keep ending the
            process (``SIGTERM``, ``SIGINT``, ``SIGKILL``, ``SIGSTOP``).

    Example:
        >>> requeue_signal("usr2").name
        'SIGUSR2'
    """
    text = (name or os.environ.get(REQUEUE_SIGNAL_ENV) or DEFAULT_REQUEUE_SIGNAL).strip().upper()
    full = text if text.startswith("SIG") else f"SIG{text}"
    try:
        signum = signal.Signals[full]
    except KeyError:
        raise InvalidValueError(
            f"requeue signal {text!r} is not a signal name; expected e.g. 'SIGUSR1' (the name given to "
            "adamergex submit --signal-name)"
        ) from None
    _check_catchable(signum)
    return signum


def _check_catchable(signum: signal.Signals) -> None:
    if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL, signal.SIGSTOP):
        raise InvalidValueError(
            f"{signum.name} cannot be the requeue signal: it must keep ending the process (SLURM ends jobs "
            "with SIGTERM); use SIGUSR1 or SIGUSR2"
        )


def arm(signum: signal.Signals) -> None:
    """Record ``signum`` when it arrives instead of acting on it (idempotent; main thread only).

    A Python handler that was installed before is still called after recording; the default action
    (terminating the process for ``SIGUSR1``) is not.

    Args:
        signum: the requeue signal.

    Raises:
        ValueError: ``signum`` is ``SIGTERM``, ``SIGINT``, ``SIGKILL`` or ``SIGSTOP``, which must keep ending
            the process.
    """
    signum = signal.Signals(signum)
    _check_catchable(signum)
    if threading.current_thread() is not threading.main_thread():
        return  # Python only lets the main thread install handlers; the Trainer runs there anyway
    previous = signal.getsignal(signum)
    if getattr(previous, "_adamergex_requeue", False):
        return

    def record(number: int, frame: Any) -> None:
        _received.append(signal.Signals(number).name)
        if callable(previous):
            previous(number, frame)

    record._adamergex_requeue = True  # type: ignore[attr-defined]
    signal.signal(signum, record)


def received() -> str | None:
    """The name of the requeue signal if it arrived since the last :func:`clear`, else ``None``."""
    return _received[-1] if _received else None


def clear() -> None:
    """Forget a received signal (after acting on it)."""
    _received.clear()


def slurm_job_id() -> str | None:
    """The id that ``scontrol requeue`` takes for this job: ``<array job>_<task>`` for array tasks.

    Example:
        >>> slurm_job_id()  # doctest: +SKIP
        '1234_7'
    """
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or None


def requeue_job(job_id: str, scontrol: str = "scontrol", timeout: float = 60.0) -> tuple[bool, str]:
    """Run ``scontrol requeue <job_id>``; return whether it worked and what scontrol said.

    Args:
        job_id: the job, as :func:`slurm_job_id` gives it.
        scontrol: the scontrol command or path.
        timeout: seconds to wait for scontrol.

    Example:
        >>> requeue_job("1", scontrol="/nonexistent/scontrol")[0]
        False
    """
    try:
        result = subprocess.run(
            [scontrol, "requeue", job_id], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"{scontrol} requeue {job_id} failed: {err}"
    said = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        return False, f"{scontrol} requeue {job_id} exited with {result.returncode}: {said or '(no output)'}"
    return True, said


class RequeueStop(Exception):
    """Ends a run that saved its checkpoint for a requeue; ``adamergex`` exits with :attr:`exit_code`.

    Args:
        checkpoint: the checkpoint the next run resumes from.
        step: the global step it holds.
        job_id: the SLURM job, or ``None`` outside SLURM.
        requeued: ``True`` if this process requeued the job, ``False`` if it tried and failed or could not,
            ``None`` on ranks other than zero (rank zero requeues).
        detail: what ``scontrol`` said, or why there was no requeue.

    Example:
        >>> RequeueStop("/r/hpc_ckpt_1.ckpt", 12, "42", True).exit_code
        0
    """

    def __init__(
        self, checkpoint: str, step: int, job_id: str | None, requeued: bool | None, detail: str = ""
    ) -> None:
        self.checkpoint, self.step, self.job_id, self.requeued, self.detail = (
            checkpoint,
            step,
            job_id,
            requeued,
            detail,
        )
        super().__init__(self.message())

    @property
    def exit_code(self) -> int:
        """0 when the job was requeued (or another rank requeues it), 1 when it was not."""
        return 1 if self.requeued is False else 0

    def message(self) -> str:
        """One line for the log."""
        where = f"saved {self.checkpoint} at step {self.step}"
        if self.requeued is None:
            return f"stopped for a requeue ({where}); rank 0 requeues the job"
        if self.requeued:
            return f"requeued SLURM job {self.job_id} ({where}); it resumes from there"
        return (
            f"stopped for a requeue ({where}) but the job was not requeued: {self.detail}; run the same command "
            "again with the same ADAMERGEX_RUN_DIR to resume"
        )
