"""``adamergex fit`` in a pinned run dir (``ADAMERGEX_RUN_DIR``, as in a submitted job), stopped by the requeue
signal and run again: it resumes from its HPC checkpoint and ends exactly like an uninterrupted run.

In process and without SLURM (the signal comes from ``requeue_pacer.SignalAtStep``; with no job to requeue,
the first run exits with code 1); ``test_slurm_fit.py`` does the same through a real cluster.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT
from safetensors.torch import load_file

from adamergex_pl.cli import main

CONFIG = str(REPO_ROOT / "configs/tiny/task_lora.yaml")
FIT = ("fit", "--config", CONFIG, "--trainer.enable_progress_bar", "false")
SIGNAL_AT_12 = ("--trainer.callbacks+=requeue_pacer.SignalAtStep", "--trainer.callbacks.at_step=12")
LOGS = Path("lightning_logs/job_pinned")  # the fixed logger version outside SLURM


def fit_in(run_dir: Path, monkeypatch, *extra: str) -> int:
    """``adamergex fit`` with ``ADAMERGEX_RUN_DIR=run_dir``, from a working directory of its own."""
    workdir = run_dir.with_name(run_dir.name + "-cwd")
    workdir.mkdir(exist_ok=True)
    monkeypatch.chdir(workdir)  # the config's ModelCheckpoint path is relative
    monkeypatch.setenv("ADAMERGEX_RUN_DIR", str(run_dir))
    return main([*FIT, *extra])


def snapshot_tree(run_dir: Path) -> dict[str, str]:
    root = run_dir / "snapshots"
    return {p.name: (str(p.readlink()) if p.is_symlink() else "dir") for p in sorted(root.iterdir())}


def train_steps(run_dir: Path) -> list[int]:
    with (run_dir / LOGS / "metrics.csv").open() as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]


@pytest.mark.slow
@pytest.mark.usefixtures("clean_requeue_signal")
def test_stopped_by_the_requeue_signal_then_resumed_matches_an_uninterrupted_run(tmp_path, monkeypatch):
    straight, requeued = tmp_path / "straight", tmp_path / "requeued"
    assert fit_in(straight, monkeypatch) == 0
    assert not list(straight.glob("hpc_ckpt_*"))

    assert fit_in(requeued, monkeypatch, *SIGNAL_AT_12) == 1  # stopped; outside SLURM nobody requeues
    checkpoint = requeued / "hpc_ckpt_1.ckpt"
    saved = torch.load(checkpoint, weights_only=False)
    assert (saved["global_step"], saved["epoch"]) == (12, 1)
    assert sum(t.numel() for t in saved["state_dict"].values()) < 50_000, "adapter-only"
    # epoch 0 was snapshotted, epoch 1 was not finished: no snapshot for it, `last` stays on epoch 0
    assert snapshot_tree(requeued) == {"epoch=0": "dir", "last": "epoch=0"}

    assert fit_in(requeued, monkeypatch, *SIGNAL_AT_12) == 0  # the run dir's checkpoint is picked up
    config = yaml.safe_load((requeued / LOGS / "config.yaml").read_text())  # the restart's, overwritten
    assert (config["ckpt_path"], config["trainer"]["default_root_dir"]) == (str(checkpoint), str(requeued))

    for run in (straight, requeued):
        assert snapshot_tree(run) == {"epoch=0": "dir", "epoch=1": "dir", "last": "epoch=1"}
        assert not list((run / "snapshots").glob(".tmp-*"))
    for epoch, step in (("epoch=0", 9), ("epoch=1", 18)):
        infos = [
            json.loads((run / "snapshots" / epoch / "snapshot.json").read_text())
            for run in (straight, requeued)
        ]
        assert infos[0]["global_step"] == infos[1]["global_step"] == step
        a, b = (
            load_file(run / "snapshots" / epoch / "adapter_model.safetensors") for run in (straight, requeued)
        )
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    # one log for both runs, each step once (the first run's rows survive the restart)
    assert train_steps(requeued) == train_steps(straight) == list(range(18))
