"""Preemption-safe SLURM requeue: checkpoint at an optimizer-step boundary after the requeue signal, then requeue."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal as _signal
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from adamergex_pl.slurm import preemption
from adamergex_pl.slurm.run_env import hpc_checkpoint

_HPC_NAME = re.compile(r"^hpc_ckpt_(\d+)\.ckpt$")
_TMP_DIR = ".requeue-tmp"  # no "hpc_ckpt_" in the name: Lightning's own HPC look-up lists the run dir


class SlurmRequeue(Callback):
    """On SLURM's requeue signal: save ``hpc_ckpt_<n>.ckpt`` at the next safe point, requeue the job, stop.

    The signal handler only records the signal (:mod:`adamergex_pl.slurm.preemption`). The checkpoint is taken
    in ``on_train_batch_end`` of a batch that completed an optimizer step, the same point at which
    ``ModelCheckpoint(every_n_train_steps=...)`` saves and from which a resumed run continues exactly (the
    DataModule skips the batches already trained on). Batches that are not safe are passed over:

    * a batch in the middle of gradient accumulation (its gradients are not in a checkpoint);
    * the last batch of an epoch, and a batch after which validation is due: Lightning resumes such a
      checkpoint without re-running ``on_train_epoch_end`` (no epoch snapshot) or that validation;
    * the last step of training (``max_steps``): the run finishes instead.

    Under DDP the ranks vote at each such boundary (one all-reduce of two numbers) whether any of them got the
    signal and whether validation is due on any, so they all save at the same step; ``save_checkpoint`` is
    collective and only rank zero writes.
    The file is written under ``<dirpath>/.requeue-tmp/`` and renamed into place, and older HPC checkpoints are
    then removed. Logging of that step finishes; at the start of the next batch rank zero runs
    ``scontrol requeue $SLURM_JOB_ID`` and every rank ends the run by raising
    :class:`~adamergex_pl.slurm.preemption.RequeueStop` (``adamergex`` exits with code 0; 1 if the requeue
    failed). No epoch-end snapshot or checkpoint is written for the unfinished epoch.

    On the next run, ``adamergex`` finds the newest ``hpc_ckpt_<n>.ckpt`` in ``$ADAMERGEX_RUN_DIR`` and resumes
    from it (see :mod:`adamergex_pl.slurm.run_env`). Outside SLURM the run still stops with its checkpoint.

    Validation, test and predict runs are not requeued: they save nothing, so a run longer than the time limit
    would start over forever. The signal is recorded and ignored; the job ends at its time limit.

    Use it instead of Lightning's ``SLURMEnvironment(auto_requeue=True)`` (whose handler saves inside the
    signal handler, at an arbitrary point of a step): ``adamergex`` adds this callback and
    ``SLURMEnvironment(auto_requeue=False)`` in submitted jobs. Lightning never installs its own handler for a
    signal that already has one, so this callback wins in plain Python too; pass
    ``plugins=[SLURMEnvironment(auto_requeue=False)]`` to say so.

    Args:
        dirpath: where HPC checkpoints go; default ``trainer.default_root_dir`` (the pinned run dir in a job
            from ``adamergex submit``), where ``adamergex`` looks for them on restart.
        signal: the requeue signal; default ``$ADAMERGEX_REQUEUE_SIGNAL`` (set by ``adamergex submit``) or
            ``SIGUSR1``.
        requeue: run ``scontrol requeue`` after saving; ``False`` only saves and stops.

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
        self.signal = preemption.requeue_signal(signal)
        self.dirpath = dirpath
        self.requeue = requeue
        self.requeues = 0  # how often this run was checkpointed for a requeue (kept in the checkpoint)
        self._step_at_batch_start: int | None = None
        self._saved: tuple[str, int] | None = None

    # ------------------------------------------------------------------ set-up
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(trainer.default_root_dir)
        preemption.arm(self.signal)  # before Lightning registers handlers: it then leaves this signal alone
        if trainer.is_global_zero:
            shutil.rmtree(Path(self.dirpath) / _TMP_DIR, ignore_errors=True)  # left by a run killed mid-save

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.requeues:
            rank_zero_info(
                f"SlurmRequeue: resumed at step {trainer.global_step} after {self.requeues} requeue(s)"
            )

    # ------------------------------------------------------------------ training
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
        asked, unsafe = preemption.received() is not None, validation_due(trainer)
        if trainer.world_size > 1:
            # Every rank votes at every boundary, signalled or not, so that all save at the same step or none
            # does: save_checkpoint is collective. One all-reduce of two numbers per optimizer step.
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
        preemption.clear()  # a signal after the last safe step: the run is complete, the job ends by itself

    def _at_step_boundary(self, trainer: Trainer, batch_idx: int) -> bool:
        """An optimizer step ended this batch, and neither the epoch nor training ends with it (the same on
        every rank; whether validation is due is voted on separately)."""
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
                match = _HPC_NAME.match(older.name)
                if match and int(match.group(1)) < number:
                    older.unlink(missing_ok=True)
        trainer.strategy.barrier("SlurmRequeue.save")
        rank_zero_info(
            f"SlurmRequeue: {preemption.received() or 'requeue signal'} received; saved {final} at step "
            f"{trainer.global_step} (epoch {trainer.current_epoch})"
        )
        return str(final), trainer.global_step

    def _stop(self, trainer: Trainer) -> None:
        path, step = self._saved
        self._saved = None
        preemption.clear()
        job = preemption.slurm_job_id()
        # The requeue makes SLURM cancel this step (SIGTERM to every task). The state is saved, and the run ends
        # right here; ignoring SIGTERM keeps Lightning's SIGTERM handler (which runs a DDP collective) out of it.
        _ignore_sigterm()
        if not trainer.is_global_zero:
            raise preemption.RequeueStop(path, step, job, None)
        if not self.requeue:
            raise preemption.RequeueStop(path, step, job, False, "SlurmRequeue(requeue=False)")
        if job is None:
            raise preemption.RequeueStop(path, step, None, False, "not running in a SLURM job")
        rank_zero_info(f"SlurmRequeue: requeueing SLURM job {job}")
        ok, said = preemption.requeue_job(job)
        stop = preemption.RequeueStop(path, step, job, ok, said)
        if ok:  # said now: SLURM is already ending this step, and may not wait for the way out
            rank_zero_info(f"SlurmRequeue: {stop.message()}")
        else:
            rank_zero_warn(f"SlurmRequeue: {said}")
        raise stop

    # ------------------------------------------------------------------ state
    @override
    def state_dict(self) -> dict[str, Any]:
        return {"requeues": self.requeues}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.requeues = int(state_dict.get("requeues", 0))


def _next_hpc_number(root: Path) -> int:
    newest = hpc_checkpoint(root)
    return 1 if newest is None else int(_HPC_NAME.match(newest.name).group(1)) + 1


def validation_due(trainer: Trainer) -> bool:
    """Whether Lightning runs validation right after this batch (its own private test, Lightning 2.6)."""
    try:
        epoch_loop = trainer.fit_loop.epoch_loop
        return bool(epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher))
    except AttributeError:  # a Lightning without these internals: assume the common case, epoch-end only
        return False


def _ignore_sigterm() -> None:
    with contextlib.suppress(ValueError):  # ValueError: not the main thread
        _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
