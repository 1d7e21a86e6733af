"""SLURM batch jobs for adamergex commands: render sbatch scripts, submit them, chain them.

:mod:`~adamergex_pl.slurm.resources` (a job's options), :mod:`~adamergex_pl.slurm.sbatch` (its script),
:mod:`~adamergex_pl.slurm.jobs` (``afterok`` chains), :mod:`~adamergex_pl.slurm.submit` (``adamergex submit``);
inside a job, :mod:`~adamergex_pl.slurm.pinning` and :mod:`callbacks.slurm_requeue`. A job's command gets
``ADAMERGEX_RUN_DIR`` (pinned to the job id) and SLURM's own variables. See ``docs/cluster.md``.

Example:
    >>> from adamergex_pl.slurm.resources import JobResources
    >>> from adamergex_pl.slurm.sbatch import render_sbatch_script
    >>> print(render_sbatch_script(["adamergex", "fit"], JobResources(time="02:00:00")))  # doctest: +SKIP
"""
