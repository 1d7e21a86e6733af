"""``SlurmRequeue`` on a tiny Lightning model: where it checkpoints after the requeue signal, and how it stops.

No SLURM here: the signal is sent by the process to itself, and ``scontrol`` is a stub on ``PATH``. The real
cluster, DDP and exact resumption of ``adamergex fit`` are tested in ``test_slurm_fit.py`` and
``test_requeue_resume.py``.
"""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.demos.boring_classes import BoringModel

from adamergex_pl.errors import InvalidValueError
from callbacks import SlurmRequeue, slurm_requeue
from callbacks.slurm_requeue import RequeueStop

pytestmark = pytest.mark.usefixtures("clean_requeue_signal")


class SignalAt(Callback):
    """Send SIGUSR1 to this process at the end of batch ``batch_idx`` of ``epoch``; count batches and hooks."""

    def __init__(self, epoch: int, batch_idx: int) -> None:
        self.at = (epoch, batch_idx)
        self.batches: list[tuple[int, int]] = []
        self.events: list[tuple[str, int]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches.append((trainer.current_epoch, batch_idx))
        if (trainer.current_epoch, batch_idx) == self.at:
            os.kill(os.getpid(), signal.SIGUSR1)

    def on_train_epoch_end(self, trainer, pl_module):
        self.events.append(("epoch_end", trainer.global_step))

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.events.append(("validation", trainer.global_step))


def fit(root: Path, at: tuple[int, int], ckpt_path: str | None = None, **trainer_args):
    """Fit a BoringModel with the signal at ``at``; return the pacer and the RequeueStop (or None)."""
    pacer = SignalAt(*at)
    args = dict(
        default_root_dir=root,
        accelerator="cpu",
        max_epochs=2,
        limit_train_batches=8,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
    )
    trainer = Trainer(**{**args, **trainer_args}, callbacks=[pacer, SlurmRequeue()])
    torch.manual_seed(0)
    try:
        trainer.fit(BoringModel(), ckpt_path=ckpt_path)
    except RequeueStop as stop:
        return pacer, stop
    return pacer, None


def saved_step(path: str | Path) -> int:
    return torch.load(path, weights_only=False)["global_step"]


@pytest.mark.filterwarnings(
    "ignore:You're resuming from a checkpoint that ended before"
)  # BoringModel's data
def test_checkpoint_after_the_signalled_step_then_stop_before_the_next_batch(tmp_path):
    pacer, stop = fit(tmp_path, at=(0, 2))
    assert stop is not None and stop.step == 3
    assert stop.checkpoint == str(tmp_path / "hpc_ckpt_1.ckpt") and saved_step(stop.checkpoint) == 3
    assert pacer.batches == [(0, 0), (0, 1), (0, 2)]  # batch 3 was fetched but never trained on
    # outside SLURM there is nothing to requeue: the run stops with its checkpoint and says how to go on
    assert (stop.requeued, stop.exit_code) == (False, 1)
    assert "not running in a SLURM job" in stop.message() and "ADAMERGEX_RUN_DIR" in stop.message()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hpc_ckpt_1.ckpt"]  # no temporary left
    assert slurm_requeue.received() is None

    # the resumed run counts the requeue, writes the next number and removes the older checkpoint
    pacer, stop = fit(tmp_path, at=(1, 1), ckpt_path=str(tmp_path / "hpc_ckpt_1.ckpt"))
    assert pacer.batches[0] == (0, 3) and stop.step == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hpc_ckpt_2.ckpt"]
    checkpoint = torch.load(tmp_path / "hpc_ckpt_2.ckpt", weights_only=False)
    assert checkpoint["callbacks"]["SlurmRequeue"] == {"requeues": 2}


def test_waits_for_the_optimizer_step_that_ends_gradient_accumulation(tmp_path):
    _, stop = fit(tmp_path, at=(0, 2), accumulate_grad_batches=2)  # batch 2 starts an accumulation
    assert stop.step == 2 and saved_step(stop.checkpoint) == 2  # saved after batch 3, with its step


def test_passes_over_the_last_batch_of_an_epoch(tmp_path):
    pacer, stop = fit(tmp_path, at=(0, 7))
    # resuming a checkpoint of the last batch would skip on_train_epoch_end (snapshots) and validation
    assert stop.step == 9 and pacer.batches[-1] == (1, 0)
    assert pacer.events == [("validation", 8), ("epoch_end", 8)]


def test_passes_over_a_batch_after_which_validation_is_due(tmp_path):
    pacer, stop = fit(tmp_path, at=(0, 3), val_check_interval=4)
    assert stop.step == 5 and pacer.events == [("validation", 4)]


def test_a_signal_at_the_last_step_lets_training_finish(tmp_path):
    pacer, stop = fit(tmp_path, at=(0, 2), max_steps=3)
    assert stop is None and pacer.batches == [(0, 0), (0, 1), (0, 2)]
    assert not list(tmp_path.glob("hpc_ckpt_*")) and slurm_requeue.received() is None


def test_a_signal_before_training_is_kept_for_the_first_safe_step(tmp_path):
    slurm_requeue.arm(signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGUSR1)  # e.g. while the base model loads
    _, stop = fit(tmp_path, at=(5, 0))
    assert stop.step == 1


def fake_scontrol(tmp_path: Path, monkeypatch, exit_code: int = 0) -> Path:
    """An ``scontrol`` on PATH that appends its arguments to a file and exits with ``exit_code``."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "scontrol-calls.txt"
    bin_dir.mkdir()
    script = bin_dir / "scontrol"
    script.write_text(f'#!/bin/sh\necho "$@" >> {calls}\necho "scontrol said no" >&2\nexit {exit_code}\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_requeues_the_job_with_scontrol_after_saving(tmp_path, monkeypatch):
    calls = fake_scontrol(tmp_path, monkeypatch)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    _, stop = fit(tmp_path / "run", at=(0, 1))
    assert calls.read_text() == "requeue 42\n"
    assert (stop.requeued, stop.exit_code, stop.job_id) == (True, 0, "42")
    assert (tmp_path / "run" / "hpc_ckpt_1.ckpt").is_file()
    # SLURM cancels the step right after the requeue: its SIGTERM must not interrupt the way out
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN  # Lightning's teardown restored it

    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    fit(tmp_path / "array", at=(0, 1))
    assert calls.read_text().splitlines()[-1] == "requeue 40_3"


def test_a_failed_requeue_is_reported_with_what_scontrol_said(tmp_path, monkeypatch):
    fake_scontrol(tmp_path, monkeypatch, exit_code=1)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    with pytest.warns(UserWarning, match="scontrol requeue 42 exited with 1: scontrol said no"):
        _, stop = fit(tmp_path / "run", at=(0, 1))
    assert (stop.requeued, stop.exit_code) == (False, 1)
    assert "scontrol said no" in stop.message() and (tmp_path / "run" / "hpc_ckpt_1.ckpt").is_file()


def test_requeue_signal_names():
    assert slurm_requeue.requeue_signal("usr2") is signal.SIGUSR2
    assert slurm_requeue.requeue_signal("SIGUSR1") is signal.SIGUSR1
    with pytest.raises(InvalidValueError, match="SIGTERM cannot be the requeue signal"):
        SlurmRequeue(signal="SIGTERM")
    with pytest.raises(InvalidValueError, match="'NOPE' is not a signal name"):
        slurm_requeue.requeue_signal("nope")


def test_the_handler_only_records_and_keeps_an_earlier_python_handler():
    seen = []
    signal.signal(signal.SIGUSR1, lambda number, frame: seen.append(number))
    slurm_requeue.arm(signal.SIGUSR1)
    slurm_requeue.arm(signal.SIGUSR1)  # idempotent: one record per signal
    os.kill(os.getpid(), signal.SIGUSR1)
    assert slurm_requeue.received() == "SIGUSR1" and seen == [signal.SIGUSR1]
