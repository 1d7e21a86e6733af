"""Submitting jobs that depend on each other: the AdaMergeX recipe as a small DAG of sbatch jobs.

:func:`submit_chain`: three fits in parallel, then merge and evaluate (``afterok``; a failed parent cancels its
children). :func:`submit_jobs` takes any DAG.

Example:
    >>> fits = [SlurmJob(adamergex_command(["fit", "--config", f"{n}.yaml"]), JobResources(job_name=n))
    ...         for n in ("fit_task", "fit_ref_src", "fit_ref_tgt")]
    >>> merge_command = adamergex_command(["merge", "--config", "merge.yaml"])
    >>> merge = SlurmJob(merge_command, JobResources(job_name="merge"))
    >>> submitted = submit_chain(fits, merge)  # doctest: +SKIP
    >>> [job.job_id for job in submitted]  # doctest: +SKIP
    ['101', '102', '103', '104']
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.slurm.resources import JobResources
from adamergex_pl.slurm.sbatch import (
    SbatchError,
    find_sbatch,
    make_log_dirs,
    render_sbatch_script,
    sbatch_submit,
    write_script,
)

DEFAULT_JOBS_DIR = "runs/slurm/jobs"


@dataclass(frozen=True)
class SlurmJob:
    """One job of a submission: the command, its resources, and the jobs it must wait for.

    Args:
        command: The program and its arguments (see :func:`adamergex_command`).
        resources: The job's options; ``resources.job_name`` names the job within a submission.
        after: Names of jobs of the same submission that must succeed first (``afterok``).

    Raises:
        ValueError: ``command`` is empty, or ``after`` is not a list of names.

    Example:
        >>> SlurmJob(["adamergex", "merge"], JobResources(job_name="merge"), after=["fit_a", "fit_b"]).name
        'merge'
    """

    command: list[str]
    resources: JobResources = field(default_factory=JobResources)
    after: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if (
            isinstance(self.command, str)
            or not self.command
            or not all(isinstance(a, str) for a in self.command)
        ):
            raise ValueError(
                f"command={self.command!r} is not a command; expected a non-empty list of strings"
            )
        if isinstance(self.after, str) or not all(isinstance(a, str) for a in self.after):
            raise ValueError(
                f"after={self.after!r} must be a list of job names, e.g. ['fit_task', 'fit_ref']"
            )
        object.__setattr__(self, "command", list(self.command))
        object.__setattr__(self, "after", list(self.after))

    @property
    def name(self) -> str:
        """The job's name (``resources.job_name``)."""
        return self.resources.job_name


@dataclass(frozen=True)
class JobSubmission:
    """What was submitted for one job (in a dry run: what would be, with ``job_id`` None)."""

    name: str
    script: str
    script_path: Path
    sbatch_args: list[str]
    job_id: str | None
    resources: JobResources

    @property
    def log_path(self) -> str:
        """The job's ``--output`` with ``%j`` and ``%x`` filled in when the job id is known."""
        return expand_job_patterns(self.resources.output, self.job_id, self.name)


def default_program() -> str:
    """The ``adamergex`` script of the running environment (nodes must share its file system), or ``adamergex``."""
    beside = Path(sys.executable).with_name("adamergex")
    return str(beside) if beside.is_file() else "adamergex"


def adamergex_command(args: Sequence[str], program: str | None = None) -> list[str]:
    """The command line that runs ``adamergex <args>`` in a job.

    A leading ``adamergex`` in ``args`` is dropped; ``program`` defaults to :func:`default_program`.

    Raises:
        ValueError: ``args`` is empty, or its first word is no adamergex subcommand.

    Example:
        >>> adamergex_command(["adamergex", "validate", "--config", "v.yaml"], program="adamergex")
        ['adamergex', 'validate', '--config', 'v.yaml']
    """
    words = list(args)
    if words and Path(words[0]).name == "adamergex":
        words = words[1:]
    if not words:
        raise ValueError(
            "no adamergex command given; expected e.g. ['fit', '--config', 'fit.yaml'] "
            "(on the command line: adamergex submit [options] -- fit --config fit.yaml)"
        )
    _check_subcommand(words[0])
    return [program or default_program(), *words]


def _check_subcommand(word: str) -> None:
    """Refuse a job whose command is no ``adamergex`` subcommand (a typo would only fail on the cluster)."""
    import difflib

    from adamergex_pl.cli import EXTRA_COMMANDS, LIGHTNING_COMMANDS

    known = [*LIGHTNING_COMMANDS, *EXTRA_COMMANDS]
    if word in known:
        return
    close = difflib.get_close_matches(word, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise InvalidValueError(
        f"{word!r} is not an adamergex command; {hint}expected one of {', '.join(known)} (to run another "
        "program, give adamergex submit --program PROGRAM)"
    )


def submit_jobs(
    jobs: Sequence[SlurmJob],
    *,
    jobs_dir: str | os.PathLike[str] = DEFAULT_JOBS_DIR,
    workdir: str | os.PathLike[str] | None = None,
    sbatch: str = "sbatch",
    dry_run: bool = False,
) -> list[JobSubmission]:
    """Render, write and submit jobs, each after the jobs it names in ``after``.

    Jobs are submitted parents first; scripts go to ``jobs_dir`` (relative to ``workdir``, default the current
    directory) as ``<name>-<job id>.sbatch``. ``dry_run`` renders only: nothing is written or submitted.

    Raises:
        ValueError: Names repeat, ``after`` names an unknown job, or the dependencies form a cycle.
        SbatchNotFoundError: sbatch is missing (checked before anything is written).
        SbatchError: sbatch refused a job; the message lists the jobs already submitted.
    """
    base = Path(os.path.abspath(workdir if workdir is not None else os.getcwd()))
    ordered = dependency_order(jobs)
    scripts_dir = base / jobs_dir
    if not dry_run:
        find_sbatch(sbatch)
    pending = f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"  # renamed to the job id once submitted
    done: dict[str, JobSubmission] = {}
    for job in ordered:
        resources = job.resources
        script = render_sbatch_script(job.command, resources, workdir=base)
        args = _dependency_args(job, done)
        job_id = None
        path = scripts_dir / f"{job.name}-<job id>.sbatch"
        if not dry_run:
            path = scripts_dir / f"{job.name}-{pending}.sbatch"
            make_log_dirs(resources, workdir=base)
            write_script(script, path)
            try:
                job_id = sbatch_submit(path, extra_args=args, sbatch=sbatch)
            except SbatchError as err:
                path.unlink(missing_ok=True)
                raise SbatchError(f"{err}{_already_submitted(done)}") from err
            path = path.rename(path.with_name(f"{job.name}-{job_id}.sbatch"))
        done[job.name] = JobSubmission(job.name, script, path, args, job_id, resources)
    return list(done.values())


def submit_chain(
    parallel: Sequence[SlurmJob],
    then: SlurmJob | Sequence[SlurmJob],
    *,
    jobs_dir: str | os.PathLike[str] = DEFAULT_JOBS_DIR,
    workdir: str | os.PathLike[str] | None = None,
    sbatch: str = "sbatch",
    dry_run: bool = False,
) -> list[JobSubmission]:
    """Submit ``parallel`` jobs, then ``then`` job(s) that start only after all of them succeeded.

    A failed parent cancels its dependants. Other arguments, returns and errors as :func:`submit_jobs`.

    Args:
        parallel: Jobs with no dependency on each other.
        then: The job or jobs that run after all of ``parallel`` (each keeps its own ``after`` too).

    Raises:
        ValueError: ``parallel`` is empty.
    """
    if not parallel:
        raise ValueError("submit_chain needs at least one job in parallel=[...] to wait for")
    names = [job.name for job in parallel]
    followers = [then] if isinstance(then, SlurmJob) else list(then)
    chained = [
        replace(job, after=[*job.after, *(n for n in names if n not in job.after)]) for job in followers
    ]
    return submit_jobs(
        [*parallel, *chained], jobs_dir=jobs_dir, workdir=workdir, sbatch=sbatch, dry_run=dry_run
    )


def dependency_order(jobs: Sequence[SlurmJob]) -> list[SlurmJob]:
    """``jobs`` with every job after the jobs it names in ``after`` (otherwise in the given order).

    Raises:
        ValueError: a name repeats, ``after`` names an unknown job, or the dependencies form a cycle.
    """
    by_name: dict[str, SlurmJob] = {}
    for job in jobs:
        if job.name in by_name:
            raise ValueError(f"job name {job.name!r} is used twice; give each job its own job_name")
        by_name[job.name] = job
    for job in jobs:
        unknown = [n for n in job.after if n not in by_name]
        if unknown:
            raise ValueError(
                f"job {job.name!r} runs after {', '.join(map(repr, unknown))}, which is not a job of this "
                f"submission; expected one of {', '.join(map(repr, by_name))}"
            )
    ordered: list[SlurmJob] = []
    placed: set[str] = set()
    while len(ordered) < len(jobs):
        ready = [j for j in jobs if j.name not in placed and all(n in placed for n in j.after)]
        if not ready:
            stuck = sorted(set(by_name) - placed)
            raise ValueError(
                f"the jobs {', '.join(map(repr, stuck))} wait for each other in a cycle; remove one"
            )
        ordered += ready
        placed.update(j.name for j in ready)
    return ordered


def expand_job_patterns(text: str, job_id: str | None, job_name: str) -> str:
    """``text`` with sbatch's ``%j``, ``%x`` and ``%%`` filled in (``%j`` stays when ``job_id`` is None).

    Example:
        >>> expand_job_patterns("logs/%x-%j.out", "12", "fit")
        'logs/fit-12.out'
    """
    table = {"%x": job_name, "%%": "%"}
    if job_id is not None:
        table["%j"] = job_id
    out, i = [], 0
    while i < len(text):
        pair = text[i : i + 2]
        if pair in table:
            out.append(table[pair])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _dependency_args(job: SlurmJob, done: dict[str, JobSubmission]) -> list[str]:
    """sbatch options for ``job``'s dependencies on jobs of this submission (placeholders in a dry run)."""
    if not job.after:
        return []
    ids = [done[name].job_id or f"<id of {name}>" for name in job.after]
    dependency = "afterok:" + ":".join(ids)
    own = job.resources.dependency
    if own is not None:
        if "?" in own:
            raise ValueError(
                f"job {job.name!r} has dependency={own!r} (any of, '?') and runs after {job.after}; SLURM "
                "cannot "
                "combine '?' with the 'all of' dependency on this submission's jobs; use ',' in dependency"
            )
        dependency = f"{own},{dependency}"
    args = [f"--dependency={dependency}"]
    if job.resources.kill_on_invalid_dep:
        args.append("--kill-on-invalid-dep=yes")
    return args


def _already_submitted(done: dict[str, JobSubmission]) -> str:
    if not done:
        return ""
    listed = ", ".join(f"{name}={sub.job_id}" for name, sub in done.items())
    ids = " ".join(str(sub.job_id) for sub in done.values())
    return f"; already submitted: {listed} (cancel them with `scancel {ids}` if they are no use alone)"
