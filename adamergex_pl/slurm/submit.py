"""``adamergex submit``: run any adamergex command as a SLURM batch job (or a DAG of them from a YAML file)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from adamergex_pl.slurm.jobs import DEFAULT_JOBS_DIR, JobSubmission, SlurmJob, adamergex_command, submit_jobs
from adamergex_pl.slurm.pinning import RUN_DIR_ENV
from adamergex_pl.slurm.resources import JobResources
from adamergex_pl.slurm.sbatch import SbatchError, SbatchNotFoundError

_TOP_KEYS = {"defaults", "jobs"}
_JOB_KEYS = {"command", "after", "resources", "program"}


def load_job_file(
    path: str | os.PathLike[str], *, overrides: Mapping[str, Any] | None = None, program: str | None = None
) -> list[SlurmJob]:
    """Read a YAML job file (``defaults:`` and ``jobs:`` of name -> command, after, resources, program).

    Args:
        overrides: ``JobResources`` fields that win over the file's ``defaults``, not a job's ``resources``.
        program: the program for jobs that name none; defaults to the adamergex of this environment.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unknown keys, a job without a command, or resources that ``JobResources`` refuses.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"job file {os.fspath(path)!r} does not exist")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"job file {file} is not valid YAML: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict) or not data["jobs"]:
        raise ValueError(f"job file {file} must be a mapping with a non-empty 'jobs:' mapping of name -> job")
    _no_unknown_keys(data, _TOP_KEYS, f"job file {file}")
    defaults = _resource_fields(data.get("defaults") or {}, f"{file}: defaults")
    jobs = []
    for name, spec in data["jobs"].items():
        where = f"{file}: job {name!r}"
        if not isinstance(spec, dict):
            raise ValueError(
                f"{where} must be a mapping with 'command' (and optionally after, resources, program)"
            )
        _no_unknown_keys(spec, _JOB_KEYS, where)
        own = _resource_fields(spec.get("resources") or {}, f"{where}: resources")
        try:
            resources = JobResources(**{**defaults, **(overrides or {}), **own, "job_name": str(name)})
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
        command = spec.get("command")
        if isinstance(command, str):
            command = shlex.split(command)
        if not isinstance(command, list) or not command:
            raise ValueError(f"{where} has no command; expected e.g. 'command: fit --config fit.yaml'")
        after = spec.get("after") or []
        after = [after] if isinstance(after, str) else after
        job_program = spec.get("program") or program
        try:
            jobs.append(SlurmJob(adamergex_command([str(a) for a in command], job_program), resources, after))
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
    return jobs


def _resource_fields(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping of JobResources fields, e.g. {{time: '01:00:00'}}")
    _no_unknown_keys(value, set(JobResources.field_names()) - {"job_name"}, where)
    return dict(value)


def _no_unknown_keys(mapping: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(map(str, mapping)) - allowed)
    if unknown:
        raise ValueError(
            f"{where} has unknown key(s) {', '.join(unknown)}; expected {', '.join(sorted(allowed))}"
        )


_EPILOG = f"""\
examples:
  adamergex submit --time 04:00:00 --gpus-per-node 1 --setup 'source .venv/bin/activate' -- \\
      fit --config configs/tiny/task_lora.yaml
  adamergex submit --dependency afterok:1234 -- validate --config v.yaml
  adamergex submit --jobs pipeline.yaml --partition gpu --account proj
  adamergex submit --program .venv/bin/python -- -c 'print("hello")'    # any program, not only adamergex

The job exports {RUN_DIR_ENV}, a directory pinned to the job id (--run-dir), so a requeued job
writes its checkpoints and logs where its first run did. With --signal S (default 120) SLURM sends SIGUSR1
S seconds before the time limit; `adamergex fit` then saves an HPC checkpoint there at the next optimizer
step, requeues the job, and resumes from it on the next run (docs/cluster.md).
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``adamergex submit`` (resource options default to ``None``: not given)."""
    p = argparse.ArgumentParser(
        prog="adamergex submit",
        description="Render an sbatch script for an adamergex command and submit it (or print it).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s [options] -- <adamergex command ...>\n       %(prog)s [options] --jobs FILE",
    )
    p.add_argument("--dry-run", action="store_true", help="print the script(s) and submit nothing")
    p.add_argument(
        "--jobs",
        metavar="FILE",
        help="YAML list of jobs and their dependencies (adamergex_pl/slurm/submit.py)",
    )
    p.add_argument("--jobs-dir", default=DEFAULT_JOBS_DIR, help="where scripts are written (%(default)s)")
    p.add_argument("--workdir", help="the jobs' working directory (default: the current directory)")
    p.add_argument("--program", help="program to run (default: the adamergex of this environment)")
    p.add_argument("--sbatch", default="sbatch", help="the sbatch command or path (%(default)s)")
    r = p.add_argument_group("job options (JobResources fields; unset ones keep their defaults)")
    r.add_argument("-J", "--job-name", help="job name, also in file names (default adamergex)")
    r.add_argument("-N", "--nodes", type=int, help="nodes (default 1)")
    r.add_argument("--gpus-per-node", type=int, help="GPUs per node; one task per GPU")
    r.add_argument("--tasks-per-node", type=int, help="tasks per node (default: GPUs per node, or 1)")
    r.add_argument("-c", "--cpus-per-task", type=int, help="CPUs per task (default 1)")
    r.add_argument("--mem", help="memory per node, e.g. 64G")
    r.add_argument("-t", "--time", help="time limit, e.g. 04:00:00 or 1-00:00:00 (default 01:00:00)")
    r.add_argument("-p", "--partition", help="partition (default: the cluster's)")
    r.add_argument("-A", "--account", help="account to charge")
    r.add_argument("-q", "--qos", help="quality of service")
    r.add_argument(
        "--signal", type=int, metavar="SECONDS", help="requeue signal this long before the limit; 0: none"
    )
    r.add_argument("--signal-name", help="the requeue signal (default SIGUSR1, Lightning's)")
    r.add_argument(
        "--requeue", action=argparse.BooleanOptionalAction, default=None, help="requeuable (default)"
    )
    r.add_argument(
        "-o", "--output", help="stdout log, may use %%j and %%x (default runs/slurm/logs/%%x-%%j.out)"
    )
    r.add_argument("-e", "--error", help="stderr log (default: into --output)")
    r.add_argument(
        "--run-dir", help=f"exported as {RUN_DIR_ENV}; may use %%j %%x %%A %%a (runs/slurm/%%x-%%j)"
    )
    r.add_argument(
        "--setup", action="append", metavar="LINE", help="shell line before the command (repeatable)"
    )
    r.add_argument(
        "--extra-sbatch",
        action="append",
        metavar="OPTION",
        help="another #SBATCH option, written --extra-sbatch=--mail-type=END (repeatable)",
    )
    r.add_argument("-d", "--dependency", help="e.g. afterok:1234:1235")
    r.add_argument(
        "--kill-on-invalid-dep",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cancel the job when a job it depends on fails (default) instead of leaving it pending",
    )
    r.add_argument("-a", "--array", help="job array indices, e.g. 0-2")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``adamergex submit`` on ``argv`` (default ``sys.argv[1:]``); exit code 1: sbatch failed, 2: bad options."""
    args = list(sys.argv[1:] if argv is None else argv)
    cut = args.index("--") if "--" in args else len(args)
    options, command = args[:cut], args[cut + 1 :]
    ns = build_parser().parse_args(options)
    try:
        jobs = _jobs_from_args(ns, command)
        submissions = submit_jobs(
            jobs, jobs_dir=ns.jobs_dir, workdir=ns.workdir, sbatch=ns.sbatch, dry_run=ns.dry_run
        )
    except (SbatchNotFoundError, SbatchError) as err:
        print(f"adamergex submit: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as err:
        print(f"adamergex submit: error: {err}", file=sys.stderr)
        return 2
    (_print_dry_run if ns.dry_run else _print_submitted)(submissions)
    return 0


def resource_overrides(ns: argparse.Namespace) -> dict[str, Any]:
    """The ``JobResources`` fields given on the command line (``--signal 0`` means no signal)."""
    names = set(JobResources.field_names())
    given = {key: value for key, value in vars(ns).items() if key in names and value is not None}
    given = {k: list(v) if k in ("extra_sbatch", "setup") else v for k, v in given.items()}
    if given.get("signal") == 0:
        given["signal"] = None
    return given


def _jobs_from_args(ns: argparse.Namespace, command: list[str]) -> list[SlurmJob]:
    overrides = resource_overrides(ns)
    if ns.jobs is not None:
        if command:
            raise ValueError(
                f"--jobs {ns.jobs} takes its commands from the file; drop `-- {shlex.join(command)}`"
            )
        return load_job_file(ns.jobs, overrides=overrides, program=ns.program)
    if not command:
        raise ValueError(
            "nothing to run: put the adamergex command after `--`, e.g. "
            "adamergex submit --time 01:00:00 -- fit --config fit.yaml (or give --jobs FILE)"
        )
    program_command = [ns.program, *command] if ns.program else adamergex_command(command)
    return [SlurmJob(program_command, JobResources(**overrides))]


def _print_dry_run(submissions: list[JobSubmission]) -> None:
    for i, sub in enumerate(submissions):
        if len(submissions) > 1:
            print(("\n" if i else "") + f"# ===== job {sub.name}: {_sbatch_line(sub)} =====")
        print(sub.script, end="")


def _print_submitted(submissions: list[JobSubmission]) -> None:
    for sub in submissions:
        print(sub.job_id if len(submissions) == 1 else f"{sub.name} {sub.job_id}")
        print(
            f"adamergex submit: job {sub.job_id} ({sub.name}) submitted: script {sub.script_path}, "
            f"log {sub.log_path}" + (f", {' '.join(sub.sbatch_args)}" if sub.sbatch_args else ""),
            file=sys.stderr,
        )


def _sbatch_line(sub: JobSubmission) -> str:
    return shlex.join(["sbatch", "--parsable", *sub.sbatch_args, str(sub.script_path)])


if __name__ == "__main__":
    sys.exit(main())
