"""Test-only callbacks that put the requeue signal at a known step (importable by jobs: ``PYTHONPATH=tests``).

* :class:`PauseForRequeueSignal` (real SLURM jobs): at ``at_step`` of a job's first run, every rank writes
  ``<run dir>/paused-rank<r>`` and waits until the requeue signal has arrived (the test sends it with
  ``scancel --signal=USR1`` once it sees the files). The requeue then happens at exactly that step, and the
  test does not depend on how fast a loaded machine trains.
* :class:`SignalAtStep` (in-process tests): sends the requeue signal to its own process at ``at_step``.

Both run in ``on_train_batch_end`` before ``SlurmRequeue`` (config callbacks come first), so that callback sees
the signal at the same step.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from adamergex_pl.slurm.pinning import pinned_run_dir, restart_count
from callbacks import slurm_requeue


class PauseForRequeueSignal(Callback):
    """Wait at ``at_step`` of a job's first run until the requeue signal arrives (at most ``timeout`` s)."""

    def __init__(self, at_step: int, timeout: float = 120.0) -> None:
        self.at_step = at_step
        self.timeout = timeout

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step != self.at_step or restart_count() > 0:
            return
        run_dir = pinned_run_dir() or Path(trainer.default_root_dir)
        (run_dir / f"paused-rank{trainer.global_rank}").write_text(str(os.getpid()))
        deadline = time.monotonic() + self.timeout
        while slurm_requeue.received() is None and time.monotonic() < deadline:
            time.sleep(0.05)


class SignalAtStep(Callback):
    """Send the requeue signal to this process after optimizer step ``at_step``."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.at_step:
            os.kill(os.getpid(), slurm_requeue.requeue_signal())
