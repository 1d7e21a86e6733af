"""What a SLURM job asks for and how it is set up: the ``#SBATCH`` options and the lines before the command.

Fields are checked on creation (also by ``dataclasses.replace``), so a rendered script is one sbatch accepts
and Lightning can run.
"""

from __future__ import annotations

import re
import signal as signal_module
from dataclasses import dataclass, field, fields
from pathlib import PurePath

TIME_FORMS = "minutes, M:S, H:M:S, D-H, D-H:M or D-H:M:S (e.g. '90', '02:00:00', '1-12:00:00'), or UNLIMITED"
_NO_LIMIT = {"INFINITE", "UNLIMITED"}
_DAYS_FORM = re.compile(r"^(\d+)-(\d+)(?::(\d+))?(?::(\d+))?$")
_CLOCK_FORM = re.compile(r"^(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_time_limit(value: str) -> int | None:
    """The number of seconds in a SLURM time limit, or ``None`` for no limit.

    Raises:
        ValueError: ``value`` is not in sbatch's formats, has minutes or seconds of 60 or more, or is zero.

    Example:
        >>> parse_time_limit("30:00")
        1800
    """
    text = value.strip() if isinstance(value, str) else value
    if not isinstance(text, str) or not text:
        raise ValueError(f"time={value!r} is not a SLURM time limit; expected {TIME_FORMS}")
    if text.upper() in _NO_LIMIT:
        return None
    days_match = _DAYS_FORM.match(text)
    clock_match = _CLOCK_FORM.match(text)
    if days_match:
        days, hours, minutes, seconds = (int(g) if g else 0 for g in days_match.groups())
        bounded = {"hours": (hours, 24), "minutes": (minutes, 60), "seconds": (seconds, 60)}
        total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    elif clock_match:
        fields = [int(g) for g in clock_match.groups() if g is not None]
        if len(fields) == 1:  # minutes
            bounded, total = {}, fields[0] * 60
        elif len(fields) == 2:  # minutes:seconds
            bounded, total = {"seconds": (fields[1], 60)}, fields[0] * 60 + fields[1]
        else:  # hours:minutes:seconds
            hours, minutes, seconds = fields
            bounded = {"minutes": (minutes, 60), "seconds": (seconds, 60)}
            total = (hours * 60 + minutes) * 60 + seconds
    else:
        raise ValueError(f"time={value!r} is not a SLURM time limit; expected {TIME_FORMS}")
    for name, (amount, limit) in bounded.items():
        if amount >= limit:
            raise ValueError(f"time={value!r} has {amount} {name}; expected fewer than {limit} in that field")
    if total == 0:
        raise ValueError(f"time={value!r} is zero; give a positive limit, or UNLIMITED (or no time) for none")
    return total


MAX_SIGNAL_SECONDS = 65535  # SLURM's largest --signal time (the field is 16 bits).
_JOB_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")
_NAME_LIST = re.compile(r"^[A-Za-z0-9_.+-]+(,[A-Za-z0-9_.+-]+)*$")
_MEMORY = re.compile(r"^(0|[1-9][0-9]*[KMGT]?)$", re.IGNORECASE)
_JOB_ID = r"[0-9]+(?:_[0-9]+)?(?:\+[0-9]+)?"
_DEPENDENCY_ITEM = (
    rf"(?:singleton|(?:after|afterany|afterburstbuffer|aftercorr|afternotok|afterok)(?::{_JOB_ID})+)"
)
_DEPENDENCY = re.compile(rf"^{_DEPENDENCY_ITEM}(?:[,?]{_DEPENDENCY_ITEM})*$")
_ARRAY_RANGE = r"[0-9]+(?:-[0-9]+(?::[0-9]+)?)?"
_ARRAY = re.compile(rf"^{_ARRAY_RANGE}(?:,{_ARRAY_RANGE})*(?:%[0-9]+)?$")
# filename patterns that sbatch expands in --output/--error and that the run dir understands too
RUN_DIR_PATTERNS = {
    "%j": "SLURM_JOB_ID",
    "%x": "SLURM_JOB_NAME",
    "%A": "SLURM_ARRAY_JOB_ID",
    "%a": "SLURM_ARRAY_TASK_ID",
}


@dataclass(frozen=True)
class JobResources:
    """The options of one sbatch job: resources, scheduling, requeue, logs, set-up lines.

    Args:
        job_name: ``--job-name``; letters, digits and ``_.+-``; not ``bash`` or ``interactive``.
        nodes: ``--nodes``.
        gpus_per_node: ``--gpus-per-node``; 0 requests none.
        tasks_per_node: ``--ntasks-per-node``; default ``gpus_per_node`` (Lightning's SLURM DDP) or 1.
        cpus_per_task: ``--cpus-per-task``.
        mem: ``--mem`` per node, e.g. ``"64G"``; ``"0"`` asks for all of it; ``None``: the partition's default.
        time: ``--time``, e.g. ``"02:00:00"`` or ``"1-00:00:00"``; ``None``: the partition's default.
        partition: ``--partition`` (a comma-separated list is allowed).
        account: ``--account``.
        qos: ``--qos``.
        signal: Seconds before the time limit to send ``signal_name``; more than one optimizer step takes.
        signal_name: The signal (exported as ``ADAMERGEX_REQUEUE_SIGNAL``); default ``SIGUSR1``.
        requeue: ``--requeue`` (appending to the log) or ``--no-requeue``.
        output: ``--output`` (paths are relative to ``--chdir``); the file name may use ``%j``, ``%x``, ...
        error: ``--error``; ``None`` writes stderr into ``output``.
        run_dir: Exported as ``ADAMERGEX_RUN_DIR`` (sbatch's ``%j``, ``%x``, ``%A``, ``%a``); default pinned to ``%j``.
        setup: Shell lines run before the command, e.g. ``"source .venv/bin/activate"``.
        extra_sbatch: Further ``#SBATCH`` options, e.g. ``"--mail-type=END"``.
        dependency: ``--dependency``, e.g. ``"afterok:123:124"``.
        kill_on_invalid_dep: With a dependency, cancel the job when it can never be met (a parent failed).
        array: ``--array``, e.g. ``"0-2"`` or ``"1,3,5%2"``.

    Raises:
        ValueError: A field is out of range, not in SLURM's format, or inconsistent with another field.

    Example:
        >>> JobResources(job_name="fit", gpus_per_node=4, time="04:00:00", signal=300).tasks_per_node
        4
    """

    job_name: str = "adamergex"
    nodes: int = 1
    gpus_per_node: int = 0
    tasks_per_node: int | None = None
    cpus_per_task: int = 1
    mem: str | None = None
    time: str | None = "01:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    signal: int | None = 120
    signal_name: str = "SIGUSR1"
    requeue: bool = True
    output: str = "runs/slurm/logs/%x-%j.out"
    error: str | None = None
    run_dir: str = "runs/slurm/%x-%j"
    setup: list[str] = field(default_factory=list)
    extra_sbatch: list[str] = field(default_factory=list)
    dependency: str | None = None
    kill_on_invalid_dep: bool = True
    array: str | None = None

    def __post_init__(self) -> None:
        for name in ("nodes", "gpus_per_node", "cpus_per_task"):
            _check_int(name, getattr(self, name), minimum=0 if name == "gpus_per_node" else 1)
        if self.tasks_per_node is None:
            object.__setattr__(self, "tasks_per_node", max(self.gpus_per_node, 1))
        else:
            _check_int("tasks_per_node", self.tasks_per_node, minimum=1)
            if self.gpus_per_node and self.tasks_per_node != self.gpus_per_node:
                raise ValueError(
                    f"tasks_per_node={self.tasks_per_node} with gpus_per_node={self.gpus_per_node}: "
                    "Lightning's SLURM DDP runs one task per GPU; leave tasks_per_node unset or set it to "
                    f"{self.gpus_per_node}"
                )
        if not isinstance(self.job_name, str) or not _JOB_NAME.match(self.job_name):
            raise ValueError(
                f"job_name={self.job_name!r} is not a usable job name; expected letters, digits and _.+- "
                "(it becomes part of file names), e.g. 'fit_task'"
            )
        if self.job_name in ("bash", "interactive"):
            raise ValueError(
                f"job_name={self.job_name!r} makes Lightning treat the job as an interactive session (no "
                "SLURMEnvironment, no auto-requeue); choose another name, e.g. 'fit'"
            )
        for name in ("partition", "account", "qos"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not _NAME_LIST.match(value)):
                raise ValueError(f"{name}={value!r} is not a SLURM name; expected letters, digits and _.+-")
        if self.mem is not None and (not isinstance(self.mem, str) or not _MEMORY.match(self.mem)):
            raise ValueError(
                f"mem={self.mem!r} is not a SLURM memory size; expected a whole number with an optional unit "
                "K, M, G or T, e.g. '64G' or '500M' ('0' asks for all of a node's memory)"
            )
        self._check_time_and_signal()
        self._check_paths()
        self._check_lines()
        if self.dependency is not None and (
            not isinstance(self.dependency, str) or not _DEPENDENCY.match(self.dependency)
        ):
            raise ValueError(
                f"dependency={self.dependency!r} is not a SLURM dependency; expected type:jobid[:jobid...] "
                "items joined by ',' (all) or '?' (any), types after, afterany, afterok, afternotok, "
                "aftercorr, or 'singleton', e.g. 'afterok:123:124'"
            )
        if self.array is not None and (not isinstance(self.array, str) or not _ARRAY.match(self.array)):
            raise ValueError(
                f"array={self.array!r} is not a SLURM job array; expected indices and ranges such as '0-2', "
                "'1,3,5', '0-10:2' with an optional '%<max running>', e.g. '0-2%2'"
            )

    @property
    def time_seconds(self) -> int | None:
        """The time limit in seconds (``None``: no limit or the partition's default)."""
        return None if self.time is None else parse_time_limit(self.time)

    @classmethod
    def field_names(cls) -> list[str]:
        """The names of the fields, in order (the keys a job file's ``resources`` may use)."""
        return [f.name for f in fields(cls)]

    def _check_time_and_signal(self) -> None:
        if self.time is not None and not isinstance(self.time, str):
            raise ValueError(f"time={self.time!r} is not a SLURM time limit; expected a string: {TIME_FORMS}")
        limit = self.time_seconds
        name = self.signal_name
        if (
            not isinstance(name, str)
            or not name.upper().startswith("SIG")
            or name.upper() not in _signal_names()
        ):
            raise ValueError(
                f"signal_name={name!r} is not a signal name; expected e.g. 'SIGUSR1' (Lightning's "
                "requeue signal)"
            )
        if self.signal is None:
            return
        _check_int("signal", self.signal, minimum=1, maximum=MAX_SIGNAL_SECONDS)
        if limit is not None and self.signal >= limit:
            raise ValueError(
                f"signal={self.signal} seconds is not shorter than time={self.time!r} ({limit} s), so the "
                f"job would be signalled as soon as it starts; use a signal time below {limit} (e.g. "
                f"{max(1, min(120, limit // 10))}) or a longer time"
            )

    def _check_paths(self) -> None:
        for name in ("output", "error", "run_dir"):
            value = getattr(self, name)
            if value is None and name == "error":
                continue
            if not isinstance(value, str) or not value.strip() or "\n" in value:
                raise ValueError(
                    f"{name}={value!r} is not a path; expected one line, e.g. 'runs/slurm/%x-%j'"
                )
        for name in ("output", "error"):
            value = getattr(self, name)
            if value is not None and "%" in str(PurePath(value).parent):
                raise ValueError(
                    f"{name}={value!r} has a pattern in its directory; sbatch does not create directories, "
                    "so only the file name may use %j, %x etc., e.g. 'runs/slurm/logs/%x-%j.out'"
                )
        unknown = sorted(set(re.findall(r"%.", self.run_dir.replace("%%", ""))) - set(RUN_DIR_PATTERNS))
        if unknown:
            raise ValueError(
                f"run_dir={self.run_dir!r} uses {', '.join(unknown)}; expected only "
                f"{', '.join(RUN_DIR_PATTERNS)} (job id, job name, array job id, array task id) or %%"
            )

    def _check_lines(self) -> None:
        for name in ("setup", "extra_sbatch"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(line, str) for line in value):
                raise ValueError(f"{name}={value!r} must be a list of strings, one line each")
            object.__setattr__(self, name, list(value))
        for line in self.extra_sbatch:
            option = sbatch_option(line)
            if "\n" in line or not option.startswith("-"):
                raise ValueError(
                    f"extra_sbatch line {line!r} is not an sbatch option; expected one line such as "
                    "'--mail-type=END' or '#SBATCH --constraint=a100'"
                )


def sbatch_option(line: str) -> str:
    """The option in an ``extra_sbatch`` line, without a leading ``#SBATCH``.

    Example:
        >>> sbatch_option("#SBATCH --mail-type=END")
        '--mail-type=END'
    """
    text = line.strip()
    if text.startswith("#SBATCH"):
        text = text[len("#SBATCH") :].strip()
    return text


def _check_int(name: str, value: object, *, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}={value!r} is not a whole number; expected an int >= {minimum}")
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and <= {maximum}" if maximum is not None else ""
        raise ValueError(f"{name}={value} is out of range; expected >= {minimum}{upper}")


def _signal_names() -> set[str]:
    return {s.name for s in signal_module.Signals}
