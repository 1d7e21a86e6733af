"""The requeue signal: a handler that only records it, and the ``scontrol requeue`` that follows later.

:class:`SlurmRequeue` acts at a safe point of training; Lightning's ``auto_requeue`` saves inside the handler.

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

import contextlib
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from adamergex_pl.errors import InvalidValueError

REQUEUE_SIGNAL_ENV = "ADAMERGEX_REQUEUE_SIGNAL"
DEFAULT_REQUEUE_SIGNAL = "SIGUSR1"

_received: list[str] = []  # names of the requeue signals seen since the last clear()


_HPC_CHECKPOINT = re.compile(r"^hpc_ckpt_(\d+)\.ckpt$")


def hpc_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """The newest Lightning HPC checkpoint (``hpc_ckpt_<n>.ckpt``) in ``run_dir``; ``None`` if there is none.

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


def requeue_signal(name: str | None = None) -> signal.Signals:
    """The requeue signal named ``name`` (e.g. ``"usr1"``), else ``$ADAMERGEX_REQUEUE_SIGNAL``, else ``SIGUSR1``.

    Raises:
        ValueError: The name is not a signal, or is one that must keep ending the process (``SIGTERM``, ...).

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

    A previously installed Python handler is still called; the default action (termination) is not.

    Raises:
        ValueError: ``signum`` is ``SIGTERM``, ``SIGINT``, ``SIGKILL`` or ``SIGSTOP``.
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
    """The id that ``scontrol requeue`` takes for this job: ``<array job>_<task>`` for array tasks."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and array_task:
        return f"{array_job}_{array_task}"
    return os.environ.get("SLURM_JOB_ID") or None


def requeue_job(job_id: str, scontrol: str = "scontrol", timeout: float = 60.0) -> tuple[bool, str]:
    """Run ``scontrol requeue <job_id>`` (``timeout`` in seconds); return whether it worked and what scontrol said.

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
        checkpoint: The checkpoint the next run resumes from.
        step: The global step it holds.
        job_id: The SLURM job, or ``None`` outside SLURM.
        requeued: Whether this process requeued the job; ``None`` on ranks other than zero.
        detail: What ``scontrol`` said, or why there was no requeue.

    Example:
        >>> RequeueStop("/r/hpc_ckpt_1.ckpt", 12, "42", True).exit_code
        0
    """

    def __init__(
        self, checkpoint: str, step: int, job_id: str | None, requeued: bool | None, detail: str = ""
    ) -> None:
        self.checkpoint, self.step, self.job_id = checkpoint, step, job_id
        self.requeued, self.detail = requeued, detail
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


_TMP_DIR = ".requeue-tmp"  # no "hpc_ckpt_" in the name: Lightning's own HPC look-up lists the run dir


class SlurmRequeue(Callback):
    """On SLURM's requeue signal: save ``hpc_ckpt_<n>.ckpt`` at the next safe point, requeue the job, stop.

    It saves after an optimizer step (not mid-accumulation, at an epoch's last batch, before a due validation
    or at the last step), then every rank raises :class:`RequeueStop`. Only fit runs are requeued.

    Args:
        dirpath: Where HPC checkpoints go; default ``trainer.default_root_dir`` (searched on restart).
        signal: The requeue signal; default ``$ADAMERGEX_REQUEUE_SIGNAL`` or ``SIGUSR1``.
        requeue: Run ``scontrol requeue`` after saving; ``False`` only saves and stops.

    Raises:
        ValueError: ``signal`` is not a signal name, or is one that SLURM uses to end jobs (``SIGTERM``).

    Example:
        .. code-block:: python

            trainer = Trainer(
                callbacks=[SlurmRequeue()], plugins=[SLURMEnvironment(auto_requeue=False)], max_epochs=3
            )
            trainer.fit(module, datamodule=data, ckpt_path=hpc_checkpoint(trainer.default_root_dir))
    """

    def __init__(self, dirpath: str | None = None, signal: str | None = None, requeue: bool = True) -> None:
        self.signal = requeue_signal(signal)
        self.dirpath = dirpath
        self.requeue = requeue
        self.requeues = 0  # how often this run was checkpointed for a requeue (kept in the checkpoint)
        self._step_at_batch_start: int | None = None
        self._saved: tuple[str, int] | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(trainer.default_root_dir)
        arm(self.signal)  # before Lightning registers handlers: it then leaves this signal alone
        if trainer.is_global_zero:
            shutil.rmtree(Path(self.dirpath) / _TMP_DIR, ignore_errors=True)  # left by a run killed mid-save

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.requeues:
            rank_zero_info(
                f"SlurmRequeue: resumed at step {trainer.global_step} after {self.requeues} requeue(s)"
            )

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._saved is not None:
            self._stop(trainer)
        self._step_at_batch_start = trainer.global_step

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._saved is not None or not self._at_step_boundary(trainer, batch_idx):
            return
        asked, unsafe = received() is not None, _validation_due(trainer)
        if trainer.world_size > 1:
            # all ranks vote at every boundary: save_checkpoint is collective, so all save at one step or none
            votes = torch.tensor([float(asked), float(unsafe)], device=trainer.strategy.root_device)
            votes = trainer.strategy.reduce(votes, reduce_op="sum")
            asked, unsafe = bool(votes[0] > 0), bool(votes[1] > 0)
        if asked and not unsafe:
            self._saved = self._save(trainer)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._saved is not None:  # training ended right after the checkpoint: nothing left to requeue for
            rank_zero_info("SlurmRequeue: training finished after the requeue signal; not requeueing")
            self._saved = None
        clear()  # a signal after the last safe step: the run is complete, the job ends by itself

    def _at_step_boundary(self, trainer: Trainer, batch_idx: int) -> bool:
        """An optimizer step ended this batch, and neither the epoch nor training ends with it."""
        if self._step_at_batch_start is None or trainer.global_step == self._step_at_batch_start:
            return False  # no optimizer step in this batch: gradients are being accumulated
        if trainer.max_steps >= 0 and trainer.global_step >= trainer.max_steps:
            return False
        epoch_loop = trainer.fit_loop.epoch_loop
        return not (epoch_loop.batch_progress.is_last_batch or batch_idx + 1 >= trainer.num_training_batches)

    def _save(self, trainer: Trainer) -> tuple[str, int]:
        root = Path(self.dirpath)
        number = trainer.strategy.broadcast(_next_hpc_number(root) if trainer.is_global_zero else None)
        final = root / f"hpc_ckpt_{number}.ckpt"
        partial = root / _TMP_DIR / final.name
        self.requeues += 1  # before saving: the checkpoint records this requeue
        trainer.save_checkpoint(partial, weights_only=False)  # collective; rank zero writes
        if trainer.is_global_zero:
            os.replace(partial, final)  # the run dir never holds a half-written HPC checkpoint
            shutil.rmtree(root / _TMP_DIR, ignore_errors=True)
            for older in root.glob("hpc_ckpt_*.ckpt"):
                match = _HPC_CHECKPOINT.match(older.name)
                if match and int(match.group(1)) < number:
                    older.unlink(missing_ok=True)
        trainer.strategy.barrier("SlurmRequeue.save")
        rank_zero_info(
            f"SlurmRequeue: {received() or 'requeue signal'} received; saved {final} at step "
            f"{trainer.global_step} (epoch {trainer.current_epoch})"
        )
        return str(final), trainer.global_step

    def _stop(self, trainer: Trainer) -> None:
        path, step = self._saved
        self._saved = None
        clear()
        job = slurm_job_id()
        # the requeue SIGTERMs every task; Lightning's SIGTERM handler (a DDP collective) must stay out of it
        _ignore_sigterm()
        if not trainer.is_global_zero:
            raise RequeueStop(path, step, job, None)
        if not self.requeue:
            raise RequeueStop(path, step, job, False, "SlurmRequeue(requeue=False)")
        if job is None:
            raise RequeueStop(path, step, None, False, "not running in a SLURM job")
        rank_zero_info(f"SlurmRequeue: requeueing SLURM job {job}")
        ok, said = requeue_job(job)
        stop = RequeueStop(path, step, job, ok, said)
        if ok:  # said now: SLURM is already ending this step, and may not wait for the way out
            rank_zero_info(f"SlurmRequeue: {stop.message()}")
        else:
            rank_zero_warn(f"SlurmRequeue: {said}")
        raise stop

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"requeues": self.requeues}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.requeues = int(state_dict.get("requeues", 0))


def _next_hpc_number(root: Path) -> int:
    newest = hpc_checkpoint(root)
    return 1 if newest is None else int(_HPC_CHECKPOINT.match(newest.name).group(1)) + 1


def _validation_due(trainer: Trainer) -> bool:
    """Whether Lightning runs validation right after this batch (its own private test, Lightning 2.6)."""
    try:
        epoch_loop = trainer.fit_loop.epoch_loop
        return bool(epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    except AttributeError:  # a Lightning without these internals: assume the common case, epoch-end only
        return False


def _ignore_sigterm() -> None:
    with contextlib.suppress(ValueError):  # ValueError: not the main thread
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
