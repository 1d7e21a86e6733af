"""A ``CSVLogger`` that appends to the ``metrics.csv`` it finds, so a requeued job keeps its first run's rows.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` in its version directory when it starts
("Previous log files in this directory will be deleted"). With the version pinned to the SLURM job id (as
``adamergex`` does in a submitted job, :mod:`adamergex_pl.slurm.pinning`), that would wipe the metrics of every
run before a requeue. This logger keeps the file and goes on appending; when new columns appear, the file is
rewritten once with the wider header (Lightning's own behaviour within a run).

A resumed run continues at the step after its checkpoint, so rows do not repeat when the run before it
stopped at its checkpoint (``callbacks.SlurmRequeue``); a run resumed from an older checkpoint repeats the
steps after it, as any appended log would.
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from typing_extensions import override


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that appends to an existing ``<save_dir>/<name>/<version>/metrics.csv``.

    Args:
        save_dir: the directory that holds ``<name>/<version>/``.
        name: experiment name (a sub-directory); ``""`` or ``None`` for none.
        version: the version directory (``version_<n>`` for an int); give a fixed string so restarts find it.
        prefix: put at the beginning of metric keys.
        flush_logs_every_n_steps: how often rows are written to disk.

    Example:
        .. code-block:: yaml

            trainer:
              logger:
                class_path: adamergex_pl.slurm.resumable_csv_logger.ResumableCSVLogger
                init_args: {save_dir: runs/x, version: run}
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
