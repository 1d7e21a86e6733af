"""A YAML list of jobs for ``adamergex submit --jobs FILE``: several adamergex commands and their order.

The file::

    defaults:                       # JobResources fields for every job (optional)
      time: "04:00:00"
      gpus_per_node: 1
      setup: ["source .venv/bin/activate"]
    jobs:
      fit_task:                     # the key is the job name
        command: fit --config configs/adamergex/fit_task.yaml       # a string (split like a shell) or a list
      fit_ref_src:
        command: [fit, --config, configs/adamergex/fit_ref_en.yaml]
      fit_ref_tgt:
        command: [fit, --config, configs/adamergex/fit_ref_es.yaml]
      merge:
        command: merge --config configs/adamergex/merge.yaml
        after: [fit_task, fit_ref_src, fit_ref_tgt]                  # afterok on these jobs
        resources: {gpus_per_node: 0, time: "00:30:00"}             # this job's own fields
        program: adamergex          # optional: the program, default the adamergex of this environment

Precedence, lowest first: ``JobResources`` defaults, the file's ``defaults``, options given on the command
line, a job's own ``resources``. The command line adapts a shared file to a cluster (partition, account),
while a job's ``resources`` say what that job needs.

Example:
    >>> jobs = load_job_file("pipeline.yaml")  # doctest: +SKIP
    >>> [job.name for job in jobs]  # doctest: +SKIP
    ['fit_task', 'fit_ref_src', 'fit_ref_tgt', 'merge']
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from adamergex_pl.slurm.jobs import SlurmJob, adamergex_command
from adamergex_pl.slurm.resources import JobResources

_TOP_KEYS = {"defaults", "jobs"}
_JOB_KEYS = {"command", "after", "resources", "program"}


def load_job_file(
    path: str | os.PathLike[str], *, overrides: Mapping[str, Any] | None = None, program: str | None = None
) -> list[SlurmJob]:
    """Read a job file into :class:`SlurmJob` objects (in file order).

    Args:
        path: the YAML file.
        overrides: ``JobResources`` fields from the command line; they win over the file's ``defaults`` and
            lose to a job's own ``resources``.
        program: the program for jobs that name none; defaults to the adamergex of this environment.

    Returns:
        The jobs.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not of the form above (unknown keys, a job without a command, resources that
            ``JobResources`` refuses); the message names the job and the key.
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
        fields = {**defaults, **(overrides or {}), **own, "job_name": str(name)}
        try:
            resources = JobResources(**fields)
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
