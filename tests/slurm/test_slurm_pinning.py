"""The pieces that keep a requeued job's output in one place: config pinning, the appending CSV logger, the
snapshots' clean-up on resume, and the Trainer arguments added inside a job."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from jsonargparse import Namespace
from lightning.pytorch import Trainer
from lightning.pytorch.plugins.environments import LightningEnvironment, SLURMEnvironment

from adamergex_pl.slurm.pinning import ResumableCSVLogger, pin_config, requeue_trainer_kwargs
from callbacks import AdapterSnapshot, SlurmRequeue


def config(logger=None, ckpt_path=None) -> Namespace:
    return Namespace(trainer=Namespace(default_root_dir="runs/x", logger=logger), ckpt_path=ckpt_path)


def csv_logger(class_path="lightning.pytorch.loggers.CSVLogger", version=None) -> Namespace:
    return Namespace(class_path=class_path, init_args=Namespace(save_dir="logs", name="n", version=version))


def test_pin_config_points_output_at_the_run_dir_with_fixed_logger_versions(tmp_path):
    cfg = config()
    assert pin_config(cfg, "fit", tmp_path, version="job_7") is None  # first run: start cleanly
    assert cfg.ckpt_path is None and cfg.trainer.default_root_dir == str(tmp_path)
    logger = cfg.trainer.logger
    assert logger.class_path == "adamergex_pl.slurm.pinning.ResumableCSVLogger"
    assert (logger.init_args.save_dir, logger.init_args.version) == (str(tmp_path), "job_7")

    tensorboard = csv_logger("lightning.pytorch.loggers.TensorBoardLogger")
    cfg = config(logger=[csv_logger(), tensorboard, csv_logger(version="mine")])
    pin_config(cfg, "validate", tmp_path, version="job_7")
    plain, board, own = cfg.trainer.logger
    assert plain.class_path.endswith("ResumableCSVLogger") and plain.init_args.version == "job_7"
    assert plain.init_args.save_dir == "logs"  # the user's directory is kept
    assert board.class_path.endswith("TensorBoardLogger") and board.init_args.version == "job_7"
    assert own.init_args.version == "mine"
    cfg = config(logger=False)
    pin_config(cfg, "fit", tmp_path)
    assert cfg.trainer.logger is False


def test_a_restart_resumes_from_the_newest_hpc_checkpoint(tmp_path):
    for name in ("hpc_ckpt_1.ckpt", "hpc_ckpt_10.ckpt", "hpc_ckpt_2.ckpt", "hpc_ckpt_3.ckpt.tmp"):
        (tmp_path / name).write_bytes(b"")
    cfg = config(ckpt_path="first-run.ckpt")
    assert pin_config(cfg, "fit", tmp_path) == tmp_path / "hpc_ckpt_10.ckpt"
    assert cfg.ckpt_path == str(tmp_path / "hpc_ckpt_10.ckpt")  # wins over the first run's ckpt_path
    cfg = config(ckpt_path="given.ckpt")
    pin_config(cfg, "validate", tmp_path)
    assert cfg.ckpt_path == "given.ckpt"  # only fit resumes


def test_requeue_trainer_kwargs_add_the_callback_once_and_turn_lightnings_requeue_off(monkeypatch):
    for name in ("SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    snapshot = AdapterSnapshot()
    kwargs = requeue_trainer_kwargs({"callbacks": [snapshot], "plugins": None})
    assert kwargs["callbacks"][0] is snapshot and isinstance(kwargs["callbacks"][1], SlurmRequeue)
    assert "plugins" not in kwargs  # not in a SLURM job

    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "fit")
    kwargs = requeue_trainer_kwargs({"callbacks": [SlurmRequeue(requeue=False)]})
    assert "callbacks" not in kwargs  # the config's own SlurmRequeue is kept
    (plugin,) = kwargs["plugins"]
    assert isinstance(plugin, SLURMEnvironment) and plugin.auto_requeue is False
    own = LightningEnvironment()
    assert "plugins" not in requeue_trainer_kwargs({"plugins": own})  # a configured environment is kept


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_resumable_csv_logger_appends_across_restarts(tmp_path):
    first = ResumableCSVLogger(tmp_path, version="job_1")
    first.log_metrics({"train/loss": 1.0}, step=0)
    first.finalize("failed")
    second = ResumableCSVLogger(tmp_path, version="job_1")  # the restart: same directory
    second.log_metrics({"train/loss": 0.5}, step=1)
    second.log_metrics({"train/loss": 0.25, "val/loss": 0.75}, step=2)  # a new column widens the header
    second.finalize("success")
    rows = read_rows(tmp_path / "lightning_logs" / "job_1" / "metrics.csv")
    assert [(r["step"], r["train/loss"], r["val/loss"]) for r in rows] == [
        ("0", "1.0", ""),
        ("1", "0.5", ""),
        ("2", "0.25", "0.75"),
    ]


def fake_snapshot(root: Path, epoch: int, step: int) -> None:
    folder = root / f"epoch={epoch}"
    folder.mkdir(parents=True)
    (folder / "snapshot.json").write_text(json.dumps({"epoch": epoch, "global_step": step}))


def test_snapshots_newer_than_the_resumed_step_are_dropped_and_last_repointed(tmp_path):
    for epoch, step in ((0, 9), (1, 18), (2, 27)):
        fake_snapshot(tmp_path, epoch, step)
    (tmp_path / "last").symlink_to("epoch=2")
    AdapterSnapshot()._drop_snapshots_after(tmp_path, step=12)  # resumed mid-epoch 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=0", "last"]
    assert (tmp_path / "last").readlink() == Path("epoch=0")
    AdapterSnapshot()._drop_snapshots_after(tmp_path, step=5)
    assert list(tmp_path.iterdir()) == []


def test_a_run_from_scratch_is_refused_over_existing_snapshots_and_leaves_them_alone(tmp_path):
    # behaviour changed (issue 17): a fresh run no longer writes its epochs among an earlier run's
    fake_snapshot(tmp_path / "snapshots", 0, 9)
    callback = AdapterSnapshot()
    trainer = Trainer(default_root_dir=tmp_path, logger=False, enable_checkpointing=False)
    callback.setup(trainer, None, "fit")
    with pytest.raises(ValueError, match=r"snapshots already holds the snapshots of a run \(epoch=0\)"):
        callback.on_train_start(trainer, None)  # no ckpt_path: a fresh run
    assert (tmp_path / "snapshots" / "epoch=0").is_dir()


@pytest.mark.parametrize("signal_name", ["SIGUSR2", "usr2"])
def test_slurm_requeue_takes_its_signal_from_the_job(monkeypatch, signal_name):
    import signal

    monkeypatch.setenv("ADAMERGEX_REQUEUE_SIGNAL", signal_name)
    assert SlurmRequeue().signal is signal.SIGUSR2
