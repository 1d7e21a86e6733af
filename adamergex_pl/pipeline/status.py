"""``adamergex pipeline --status``: where a run stands, stage by stage, and the one command that continues it.

Each stage is

* ``done``: it finished, and its record still matches its config and the outputs on disk (when it finished);
* ``running``: a job of the last ``--submit`` runs it (its SLURM id and state), or a process on this machine;
* ``waiting``: its job is queued, or a pipeline running here will get to it (on which stages);
* ``failed``: its last attempt failed (its one-line error and, for a job, the log's path);
* ``to run``: none of these (never started, interrupted, cancelled, or its settings or inputs changed).

A local run is read from the run directory alone; a submitted one also from ``<run_dir>/slurm/jobs.json`` and
``squeue``. A local process is seen as running only on the machine that started it.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from adamergex_pl.pipeline import stage_records as records
from adamergex_pl.pipeline import stages as st
from adamergex_pl.pipeline.spec import PipelineSpec

SUBMISSION_RECORD = "slurm/jobs.json"
_RUNNING = {"RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING", "SIGNALING"}
_FAILED = {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
STATES = ("done", "running", "waiting", "failed", "to run")


def elapsed(seconds: float) -> str:
    """``8.2 s``, ``3 min 05 s``, ``2 h 03 min``.

    Example:
        >>> elapsed(8.24), elapsed(185), elapsed(7380)
        ('8.2 s', '3 min 05 s', '2 h 03 min')
    """
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    return f"{minutes // 60} h {minutes % 60:02d} min"


@dataclass(frozen=True)
class StageStatus:
    """One stage's state (one of :data:`STATES`) and what it is about (a job, an error, a log)."""

    name: str
    state: str
    detail: str


def stage_statuses(spec: PipelineSpec, plan: list[st.Stage], prints: dict[str, str]) -> list[StageStatus]:
    """The state of every stage of ``plan``, in its order (see the module docstring)."""
    jobs = (_read_json(Path(spec.run_dir) / SUBMISSION_RECORD) or {}).get("jobs") or {}
    queue, problem = _squeue([str(job["id"]) for job in jobs.values()]) if jobs else ({}, None)
    done = {s.name for s in plan if st.is_done(spec, s, prints[s.name])}
    attempts = {s.name: records.read_record(st.stage_dir(spec, s.name), st.ATTEMPT_RECORD) for s in plan}
    local = next((a["pid"] for a in attempts.values() if _running_here(a)), None)
    found = []
    for stage in plan:
        job, attempt = jobs.get(stage.name), attempts[stage.name] or {}
        state, reason = queue.get(str(job["id"]), (None, None)) if job else (None, None)
        after = [d for d in stage.depends if d not in done]
        log = f"; log {job['log']}" if job else ""
        if stage.name in done:
            when = _modified(st.stage_dir(spec, stage.name) / records.STAGE_RECORD)
            found.append(StageStatus(stage.name, "done", f"finished {when}; outputs as recorded"))
        elif state == "PENDING":
            why = "" if reason in ("Dependency", "None") else f": {reason}"
            on = f"on {', '.join(after)}; " if after else ""
            found.append(StageStatus(stage.name, "waiting", f"{on}SLURM job {job['id']} PENDING{why}"))
        elif state in _RUNNING:
            found.append(StageStatus(stage.name, "running", f"SLURM job {job['id']} {state}{log}"))
        elif _running_here(attempt):
            since = str(attempt.get("started")).replace("T", " ")
            found.append(
                StageStatus(stage.name, "running", f"process {attempt['pid']} on this machine since {since}")
            )
        elif attempt.get("failed"):
            failed, same_job = attempt["failed"], job and str(job["id"]) == str(attempt.get("slurm_job"))
            at = str(failed.get("at")).replace("T", " ")
            text = f"{failed.get('error') or 'no error line'} (exit code {failed.get('exit_code')}, {at})"
            found.append(StageStatus(stage.name, "failed", text + (log if same_job else "")))
        elif state in _FAILED or (
            job and not state and not problem and str(attempt.get("slurm_job")) == str(job["id"])
        ):
            ended = state or "ended without finishing it"  # a job SLURM has forgotten, that left no record
            text = f"{_last_error(Path(job['log']))}; SLURM job {job['id']} {ended}{log}"
            found.append(StageStatus(stage.name, "failed", text))
        elif local is not None:
            on = f"on {', '.join(after)}" if after else f"its turn in the pipeline run by process {local}"
            found.append(StageStatus(stage.name, "waiting", on))
        else:
            why = st.not_done_reason(spec, stage, prints[stage.name])
            notes = [f"after {', '.join(after)}" if after else "", "" if why == "never finished" else why]
            if st.resume_checkpoint(spec, stage, prints[stage.name]) is not None:
                notes.append("resumes from its checkpoint")
            if state == "CANCELLED":
                notes.append(f"SLURM job {job['id']} CANCELLED" + (f": {reason}" if reason != "None" else ""))
            notes.append(problem if job and problem else "")
            found.append(StageStatus(stage.name, "to run", "; ".join(n for n in notes if n)))
    return found


def status_report(spec: PipelineSpec, plan: list[st.Stage], prints: dict[str, str], command: str) -> str:
    """The table of :func:`stage_statuses` and the command that continues the run.

    Args:
        spec: the pipeline.
        plan: its stages.
        prints: their fingerprints.
        command: the ``adamergex pipeline`` command of this run (without ``--status``).
    """
    found = stage_statuses(spec, plan, prints)
    counts = {state: sum(s.state == state for s in found) for state in STATES}
    width = max(len(s.name) for s in found)
    lines = [
        f"AdaMergeX pipeline in {spec.run_dir}: {len(found)} stages: "
        + ", ".join(f"{n} {state}" for state, n in counts.items() if n),
        *(f"{s.name:<{width}}  {s.state:<7}  {s.detail}".rstrip() for s in found),
    ]
    submission = _read_json(Path(spec.run_dir) / SUBMISSION_RECORD) or {}
    again = submission.get("command") or command
    active = counts["running"] + counts["waiting"]
    if counts["done"] == len(found):
        results = Path(spec.run_dir) / "results.md"
        lines.append(
            f"Every stage is done; the report: {results}"
            if results.is_file()
            else f"Every stage is done; write the report with: {command}"
        )
    elif active and not counts["failed"]:
        lines.append(f"In progress; see again with: {command} --status")
    elif active:
        lines.append(f"Continue, once the {active} running or waiting stages have ended, with: {again}")
    else:
        lines.append(f"Continue with: {again}")
    return "\n".join(lines)


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _modified(path: Path) -> str:
    stamp = datetime.datetime.fromtimestamp(path.stat().st_mtime).astimezone()
    return stamp.isoformat(sep=" ", timespec="seconds")


def _running_here(attempt: dict | None) -> bool:
    """Whether the process of an attempt that has not failed is alive on this machine."""
    if not attempt or attempt.get("failed") or attempt.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(attempt["pid"]), 0)
    except PermissionError:
        return True
    except (KeyError, TypeError, ValueError, OSError):
        return False
    return True


def _squeue(ids: list[str]) -> tuple[dict[str, tuple[str, str]], str | None]:
    """``{job id: (state, reason)}`` of the jobs SLURM still knows, and why SLURM could not be read (or None)."""
    command = ["squeue", "-h", "-t", "all", "-j", ",".join(ids), "-o", "%i|%T|%r"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return {}, f"SLURM not readable here ({type(err).__name__}: {err})"
    if result.returncode != 0:
        return {}, f"SLURM not readable here (squeue: {result.stderr.strip() or result.returncode})"
    jobs = {}
    for line in result.stdout.splitlines():
        job_id, state, reason = [*line.strip().split("|"), "", ""][:3]
        jobs[job_id] = (state, reason)
    return jobs, None


def _last_error(log: Path) -> str:
    """The last ``adamergex: ...`` line of a job's log, else its last line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("adamergex: ")]
    return (errors or lines or ["empty log"])[-1]
