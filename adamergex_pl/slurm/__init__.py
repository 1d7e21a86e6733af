"""SLURM batch jobs for adamergex commands: render sbatch scripts, submit them, chain them.

Options in :mod:`~adamergex_pl.slurm.resources`, scripts in :mod:`~adamergex_pl.slurm.sbatch`, chains in
:mod:`~adamergex_pl.slurm.jobs`; inside a job, :mod:`~adamergex_pl.slurm.pinning`. See ``docs/cluster.md``.

Example:
    >>> from adamergex_pl.slurm.resources import JobResources
    >>> from adamergex_pl.slurm.sbatch import render_sbatch_script
    >>> print(render_sbatch_script(["adamergex", "fit"], JobResources(time="02:00:00")))  # doctest: +SKIP
"""
