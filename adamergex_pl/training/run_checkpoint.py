"""The run's resume point: ``last.ckpt`` at a step interval and at every epoch end, written atomically.

Lightning's ``ModelCheckpoint(save_last=True, save_top_k=0)`` without a step interval writes ``last.ckpt`` only
when fit ends, so a run killed after several epochs leaves nothing to resume from; with a step interval it
skips the epoch ends; and its default folder moves with the logger's version, so ``--ckpt_path last`` in a new
process finds nothing and silently starts again at epoch 0. :class:`RunCheckpoint` fixes all three, and keeps
one run's checkpoints from being mixed with another's.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from adamergex_pl.errors import InputNotFoundError, InvalidValueError, RunInterrupted, reraise_os_error
from adamergex_pl.slurm.requeue_callback import validation_due
from adamergex_pl.training.checkpoint_io import partial_prefix

LAST_CHECKPOINT = "last.ckpt"


class RunCheckpoint(ModelCheckpoint):
    """Writes ``<dirpath>/last.ckpt`` every ``every_n_train_steps`` optimizer steps, at every epoch end and at
    the end of fit, so that a fit killed at any moment resumes with ``--ckpt_path last``.

    Writes are atomic (a temporary file renamed into place, :mod:`adamergex_pl.training.checkpoint_io`): a full
    disk or a kill in the middle of a write leaves the previous ``last.ckpt``, never a truncated one; leftovers
    of an interrupted write are removed when the next fit starts. With an ``AdapterModule`` a checkpoint holds
    only the adapter and the optimizer, scheduler and loop state (kilobytes for the tiny model).

    The run's outputs are its own: the folder defaults to ``<trainer.default_root_dir>/checkpoints`` (stable
    across logger versions and requeued jobs); a *fresh* fit (no ``--ckpt_path``) into a folder that already
    holds checkpoints is refused unless ``overwrite`` is set, and ``--ckpt_path last`` when there is no
    ``last.ckpt`` is refused too, instead of silently starting again at epoch 0.

    ``SIGTERM`` or ``SIGINT`` (Ctrl+C) during training (one device) stops the fit at the next optimizer step from
    which it resumes exactly (after the epoch's end, or the validation, that is due first) with ``last.ckpt`` of
    that step, and raises :class:`~adamergex_pl.errors.RunInterrupted`: ``adamergex`` exits with 143 or 130,
    never 0. A second signal ends the process at once. Under DDP, Lightning's own handling stops the fit.

    Args:
        dirpath: where ``last.ckpt`` goes. Default: ``<trainer.default_root_dir>/checkpoints``.
        every_n_train_steps: optimizer steps between checkpoints (besides every epoch end).
        overwrite: let a fresh fit remove the checkpoints of an earlier run in ``dirpath`` instead of refusing.

    Raises:
        ValueError: ``every_n_train_steps`` is not a positive integer; a fresh fit into a folder that holds
            checkpoints (without ``overwrite``); ``--ckpt_path last`` without a ``last.ckpt``.

    Example:
        .. code-block:: yaml

            trainer:
              callbacks:
                - class_path: callbacks.RunCheckpoint
                  init_args: {every_n_train_steps: 500}
    """

    def __init__(
        self, dirpath: str | None = None, every_n_train_steps: int = 50, overwrite: bool = False
    ) -> None:
        if isinstance(every_n_train_steps, bool) or not isinstance(every_n_train_steps, int):
            raise InvalidValueError(
                f"RunCheckpoint(every_n_train_steps={every_n_train_steps!r}) must be a positive integer, e.g. 50"
            )
        if every_n_train_steps < 1:
            raise InvalidValueError(
                f"RunCheckpoint(every_n_train_steps={every_n_train_steps}) must be a positive integer, e.g. 50: "
                "a run that checkpoints only at the end of fit cannot resume after a kill"
            )
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,  # always last.ckpt, never last-v1.ckpt beside a stale one
        )
        self.overwrite = overwrite
        self._stop_signal: signal.Signals | None = None  # SIGTERM or SIGINT, received during training
        self._step_at_batch_start: int | None = None

    def run_dirpath(self, trainer: Trainer) -> Path:
        """The folder of this run's checkpoints (also before :meth:`setup`, when ``--ckpt_path last`` is
        resolved)."""
        return Path(self.dirpath or os.path.realpath(os.path.join(trainer.default_root_dir, "checkpoints")))

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.dirpath = str(self.run_dirpath(trainer))
        super().setup(trainer, pl_module, stage)
        if stage != "fit" or not trainer.is_global_zero:
            return
        directory = Path(self.dirpath)
        if directory.exists() and not directory.is_dir():
            raise InvalidValueError(
                f"RunCheckpoint folder {str(directory)!r} is a file; choose another --trainer.default_root_dir"
            )
        try:
            for stale in directory.glob(f".*{partial_prefix('')[1:]}*"):
                stale.unlink(missing_ok=True)  # a temporary file of a write that was killed
        except Exception as err:
            reraise_os_error(err, "checkpoint folder", directory)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # here, not in setup: only now does the trainer know whether it resumed from a checkpoint
        if trainer.is_global_zero and trainer.ckpt_path is None:
            self.check_fresh_run(trainer, pl_module)
        self._stop_signal = None
        if trainer.world_size == 1 and threading.current_thread() is threading.main_thread():
            # after Lightning's handlers (registered before training), which its teardown puts back
            for signum in (signal.SIGTERM, signal.SIGINT):
                if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored: e.g. after a SLURM requeue
                    signal.signal(signum, self._record_stop)

    def _record_stop(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None:  # the second one: stop at once
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self._stop_signal = signal.Signals(signum)
        rank_zero_info(
            f"RunCheckpoint: {self._stop_signal.name} received; stopping with a checkpoint at the next optimizer "
            "step that resumes exactly (send it again to stop at once)"
        )

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step_at_batch_start = trainer.global_step

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)  # the step interval
        if self._stop_signal is None or trainer.global_step == self._step_at_batch_start:
            return  # no signal, or gradients are being accumulated
        epoch_loop = trainer.fit_loop.epoch_loop
        if epoch_loop.batch_progress.is_last_batch or batch_idx + 1 >= trainer.num_training_batches:
            return  # the epoch end comes first (its snapshot and checkpoint): stop after it
        if not validation_due(trainer):  # a checkpoint taken before a due validation resumes without it
            self._stop(trainer)

    def _stop(self, trainer: Trainer) -> None:
        """Save ``last.ckpt`` of this step (unless saved already) and end the fit."""
        if self._may_save(trainer) and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        saved = (
            f"{self.dirpath}/{LAST_CHECKPOINT} holds it: resume with --ckpt_path last"
            if trainer.global_step > 0
            else "nothing was trained yet"
        )
        raise RunInterrupted(
            f"fit stopped by {self._stop_signal.name} at step {trainer.global_step} (epoch "
            f"{trainer.current_epoch}); {saved}",
            128 + self._stop_signal,
        )

    def check_fresh_run(self, trainer: Trainer, pl_module: LightningModule | None = None) -> None:
        """For a fit that resumes nothing: refuse a folder that holds checkpoints, or, with ``overwrite``,
        remove them (the CLI calls this before the trainer starts; :meth:`on_train_start` again).

        Raises:
            ValueError: the folder holds checkpoints and ``overwrite`` is false.
        """
        directory = self.run_dirpath(trainer)
        earlier = sorted(path.name for path in directory.glob("*.ckpt")) if directory.is_dir() else []
        if not earlier:
            return
        if not self.overwrite:
            shown = ", ".join(earlier[:3]) + (f" and {len(earlier) - 3} more" if len(earlier) > 3 else "")
            raise InvalidValueError(
                f"{directory} already holds the checkpoints of a run ({shown}); resume it with --ckpt_path last, "
                "remove that run's folder, choose another --trainer.default_root_dir, or set overwrite: true on "
                "callbacks.RunCheckpoint to start over"
            )
        if not trainer.is_global_zero:
            return
        try:
            for name in earlier:
                (directory / name).unlink(missing_ok=True)
        except Exception as err:
            reraise_os_error(err, "checkpoint folder", directory)
        rank_zero_info(
            f"RunCheckpoint: removed {len(earlier)} checkpoint(s) of an earlier run in {directory}"
        )

    @override
    def _find_last_checkpoints(self, trainer: Trainer) -> set[str]:
        # only called to resolve --ckpt_path last: refuse instead of Lightning's warning and a silent restart
        last = self.run_dirpath(trainer) / LAST_CHECKPOINT
        if not last.is_file():
            raise InputNotFoundError(
                f"--ckpt_path last: there is no {last}, so this run has no checkpoint to resume from; start "
                "it without --ckpt_path, or give a checkpoint file"
            )
        return {str(last)}

    def _may_save(self, trainer: Trainer) -> bool:
        return (
            not trainer.fast_dev_run
            and trainer.state.fn == TrainerFn.FITTING
            and not trainer.sanity_checking
            and trainer.global_step > 0
        )

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after validation and the epoch's snapshot: the state to resume the next epoch from, even when a
        # step-interval checkpoint was written at this same step before validation ran
        if self._may_save(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        if self._stop_signal is not None:
            self._stop(trainer)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        return  # the epoch end and the step interval cover every save; nothing is monitored

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # a fit stopped mid-epoch (max_steps, a stop request) checkpoints its final step too
        if self._may_save(trainer) and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
