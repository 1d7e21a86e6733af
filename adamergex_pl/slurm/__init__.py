"""SLURM batch jobs for adamergex commands: render sbatch scripts, submit them, chain them.

* :class:`JobResources`: the options of a job (resources, time, requeue signal, logs, set-up lines).
* :func:`render_sbatch_script`: the script for one command (launched with ``srun``, one task per device).
* :func:`submit_jobs` / :func:`submit_chain`: submit jobs with ``afterok`` dependencies (the AdaMergeX recipe:
  three fits in parallel, then merge and validate).
* :mod:`adamergex_pl.slurm.submit`: the ``adamergex submit`` command.
* Inside a job: :mod:`adamergex_pl.slurm.pinning` (what the CLI changes when ``ADAMERGEX_RUN_DIR`` is set) and
  :mod:`callbacks.slurm_requeue` (the requeue signal, ``scontrol requeue``), used by
  ``callbacks.SlurmRequeue``. ``docs/cluster.md`` describes the whole.

Environment a submitted job gives its command (see :mod:`adamergex_pl.slurm.pinning`):

* ``ADAMERGEX_RUN_DIR``: an absolute directory pinned to the job id, the same on every run of a requeued job;
  the CLI writes trainer output (HPC checkpoints, logs, snapshots) there.
* SLURM's own: ``SLURM_JOB_ID``, ``SLURM_RESTART_COUNT`` (from the first requeue on), and per task
  ``SLURM_PROCID`` / ``SLURM_LOCALID`` / ``SLURM_NODEID`` / ``SLURM_NTASKS``, which Lightning's
  ``SLURMEnvironment`` reads.

The project's local test cluster: ``scripts/slurm/start_local_cluster.sh`` and ``stop_local_cluster.sh``.

Example:
    >>> from adamergex_pl.slurm.resources import JobResources
    >>> from adamergex_pl.slurm.sbatch import render_sbatch_script
    >>> print(render_sbatch_script(["adamergex", "fit"], JobResources(time="02:00:00")))  # doctest: +SKIP
"""
