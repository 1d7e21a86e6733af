"""What ``adamergex`` changes in a run inside a job from ``adamergex submit`` (``$ADAMERGEX_RUN_DIR`` set).

* :func:`pin_config` sets ``trainer.default_root_dir`` to the run dir, gives loggers a fixed ``version``
  (``job_<SLURM_JOB_ID>``; a ``CSVLogger`` becomes :class:`ResumableCSVLogger`) and makes ``fit`` resume from
  the newest HPC or ``last.ckpt`` checkpoint. Paths set explicitly in the config are kept.
* :func:`requeue_trainer_kwargs` adds ``callbacks.SlurmRequeue`` to the Trainer, not to the saved config.

Example:
    >>> from jsonargparse import Namespace
    >>> config = Namespace(trainer=Namespace(default_root_dir="runs/x", logger=None), ckpt_path=None)
    >>> pin_config(config, "fit", Path("/runs/fit-42"), version="job_42") is None
    True
    >>> config.trainer.default_root_dir, config.trainer.logger.init_args.version
    ('/runs/fit-42', 'job_42')
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from jsonargparse import Namespace
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from typing_extensions import override

from callbacks.slurm_requeue import hpc_checkpoint

RUN_DIR_ENV = "ADAMERGEX_RUN_DIR"


def pinned_run_dir() -> Path | None:
    """The run directory of this job (``$ADAMERGEX_RUN_DIR``), or ``None`` outside a submitted job."""
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


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``<save_dir>/<name>/<version>/metrics.csv``.

    Args:
        save_dir: The directory that holds ``<name>/<version>/``.
        name: Experiment name (a sub-directory); ``""`` or ``None`` for none.
        version: The version directory; give a fixed string so restarts find it.
        prefix: Put at the beginning of metric keys.
        flush_logs_every_n_steps: How often rows are written to disk.

    Example:
        .. code-block:: yaml

            trainer:
              logger: {class_path: adamergex_pl.slurm.pinning.ResumableCSVLogger, init_args: {version: run}}
    """

    @property
    @override
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer, minus the deletion: starts from the existing file's columns."""

    @override
    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys = sorted(key for key in header if key)


# Loggers whose `version` names a sub-directory of their save_dir (pinning it makes restarts append there).
_VERSIONED_LOGGERS = ("CSVLogger", "TensorBoardLogger")
_RESUMABLE_CSV = "adamergex_pl.slurm.pinning.ResumableCSVLogger"
_LIGHTNING_CSV = ("lightning.pytorch.loggers.CSVLogger", "lightning.pytorch.loggers.csv_logs.CSVLogger")


def logger_version() -> str:
    """The fixed logger version of this job: ``job_<SLURM_JOB_ID>`` (``job_pinned`` outside SLURM)."""
    return f"job_{os.environ.get('SLURM_JOB_ID') or 'pinned'}"


def pin_config(config: Namespace, subcommand: str, run_dir: Path, version: str | None = None) -> Path | None:
    """Point ``cli.config[subcommand]`` at the absolute ``run_dir`` in place; return the checkpoint ``fit``
    resumes from, or ``None``. ``version`` defaults to :func:`logger_version`."""
    trainer = config.trainer
    trainer.default_root_dir = str(run_dir)
    trainer.logger = _pin_loggers(trainer.logger, run_dir, version or logger_version())
    if subcommand != "fit":
        return None
    checkpoint = _newest_checkpoint(run_dir)
    if checkpoint is not None:
        config.ckpt_path = str(checkpoint)  # a restart: this wins over a ckpt_path given for the first run
    return checkpoint


def _newest_checkpoint(run_dir: Path) -> Path | None:
    """The HPC checkpoint or ``checkpoints/last.ckpt`` (a job killed without the signal), whichever is further on."""
    hpc, last = hpc_checkpoint(run_dir), run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return hpc
    if hpc is None:
        return last
    return last if _global_step(last) > _global_step(hpc) else hpc


def _global_step(path: Path) -> int:
    """A checkpoint's ``global_step``, read without loading its tensors (memory-mapped); -1 if unreadable."""
    import torch

    try:
        return int(torch.load(path, map_location="cpu", mmap=True, weights_only=True).get("global_step", -1))
    except Exception:  # a damaged file: the other one wins, and loading it later says what is wrong
        return -1


def _pin_loggers(logger: Any, run_dir: Path, version: str) -> Any:
    if logger is None or logger is True:
        init_args = Namespace(
            save_dir=str(run_dir),
            name="lightning_logs",
            version=version,
            prefix="",
            flush_logs_every_n_steps=100,
        )
        return Namespace(class_path=_RESUMABLE_CSV, init_args=init_args)
    if isinstance(logger, list):
        return [_pin_loggers(item, run_dir, version) for item in logger]
    if isinstance(logger, Namespace) and str(logger.get("class_path", "")).endswith(_VERSIONED_LOGGERS):
        if logger.class_path in _LIGHTNING_CSV:
            logger.class_path = _RESUMABLE_CSV  # same arguments; keeps the rows of earlier runs
        init_args = logger.get("init_args")
        if init_args is not None and init_args.get("version") is None:
            init_args.version = version
    return logger


def requeue_trainer_kwargs(trainer_init: dict[str, Any]) -> dict[str, Any]:
    """``SlurmRequeue`` and ``SLURMEnvironment(auto_requeue=False)`` unless ``trainer_init`` has them."""
    from lightning.pytorch.plugins.environments import ClusterEnvironment, SLURMEnvironment

    from callbacks.slurm_requeue import SlurmRequeue, requeue_signal

    kwargs: dict[str, Any] = {}
    callbacks = _as_list(trainer_init.get("callbacks"))
    if not any(isinstance(callback, SlurmRequeue) for callback in callbacks):
        kwargs["callbacks"] = [*callbacks, SlurmRequeue()]
    plugins = _as_list(trainer_init.get("plugins"))
    if SLURMEnvironment.detect() and not any(isinstance(p, ClusterEnvironment) for p in plugins):
        kwargs["plugins"] = [*plugins, SLURMEnvironment(auto_requeue=False, requeue_signal=requeue_signal())]
    return kwargs


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
