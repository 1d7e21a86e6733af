"""SLURM batch jobs for adamergex commands: render sbatch scripts, submit them, chain them.

* :class:`JobResources`: the options of a job (resources, time, requeue signal, logs, set-up lines).
* :func:`render_sbatch_script`: the script for one command (launched with ``srun``, one task per device).
* :func:`submit_jobs` / :func:`submit_chain`: submit jobs with ``afterok`` dependencies (the AdaMergeX recipe:
  three fits in parallel, then merge and validate).
* :mod:`adamergex_pl.slurm.submit`: the ``adamergex submit`` command.
* Inside a job: :mod:`adamergex_pl.slurm.pinning` (what the CLI changes when ``ADAMERGEX_RUN_DIR`` is set) and
  :mod:`adamergex_pl.slurm.preemption` (the requeue signal, ``scontrol requeue``), used by
  ``callbacks.SlurmRequeue``. ``docs/cluster.md`` describes the whole.

Environment a submitted job gives its command (see :mod:`adamergex_pl.slurm.run_env`):

* ``ADAMERGEX_RUN_DIR``: an absolute directory pinned to the job id, the same on every run of a requeued job;
  the CLI writes trainer output (HPC checkpoints, logs, snapshots) there.
* SLURM's own: ``SLURM_JOB_ID``, ``SLURM_RESTART_COUNT`` (from the first requeue on), and per task
  ``SLURM_PROCID`` / ``SLURM_LOCALID`` / ``SLURM_NODEID`` / ``SLURM_NTASKS``, which Lightning's
  ``SLURMEnvironment`` reads.

The project's local test cluster: ``scripts/slurm/start_local_cluster.sh`` and ``stop_local_cluster.sh``.

Example:
    >>> from adamergex_pl.slurm import JobResources, render_sbatch_script
    >>> print(render_sbatch_script(["adamergex", "fit"], JobResources(time="02:00:00")))  # doctest: +SKIP
"""

from adamergex_pl.slurm.job_file import load_job_file
from adamergex_pl.slurm.jobs import (
    JobSubmission,
    SlurmJob,
    adamergex_command,
    default_program,
    submit_chain,
    submit_jobs,
)
from adamergex_pl.slurm.resources import JobResources
from adamergex_pl.slurm.run_env import RUN_DIR_ENV, hpc_checkpoint, pinned_run_dir, restart_count
from adamergex_pl.slurm.sbatch import SbatchError, SbatchNotFoundError, find_sbatch, sbatch_submit
from adamergex_pl.slurm.script import render_sbatch_script
from adamergex_pl.slurm.time_limit import parse_time_limit

__all__ = [
    "RUN_DIR_ENV",
    "JobResources",
    "JobSubmission",
    "SbatchError",
    "SbatchNotFoundError",
    "SlurmJob",
    "adamergex_command",
    "default_program",
    "find_sbatch",
    "hpc_checkpoint",
    "load_job_file",
    "parse_time_limit",
    "pinned_run_dir",
    "render_sbatch_script",
    "restart_count",
    "sbatch_submit",
    "submit_chain",
    "submit_jobs",
]
