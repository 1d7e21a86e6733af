"""Real jobs on the local SLURM cluster: a job runs, tasks get their ranks, a chain waits for its parents (and
is cancelled when one fails, and waits through a parent's requeue), and a signalled job requeues itself and
finishes on its second run.

The cluster comes from the ``slurm_cluster`` fixture (``tests/local_slurm.py``); these tests skip with its
reason where it cannot run (not root and no cluster). Jobs run the test's own Python, so they see this
environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from local_slurm import cancel, wait_for_file, wait_for_job

from adamergex_pl.slurm.jobs import SlurmJob, submit_chain, submit_jobs
from adamergex_pl.slurm.resources import JobResources

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
PYTHON = sys.executable


@pytest.fixture
def job_ids():
    """Ids of the test's jobs; any still queued or running at the end are cancelled."""
    ids: list[str] = []
    yield ids
    cancel(ids)


def python_job(name: str, code: str, *after: str, **fields) -> SlurmJob:
    """A job that runs ``python -c code`` with the test's interpreter."""
    fields.setdefault("time", "00:05:00")
    return SlurmJob([PYTHON, "-c", textwrap.dedent(code)], JobResources(job_name=name, **fields), list(after))


def run_dir(workdir: Path, name: str, job_id: str) -> Path:
    return workdir / "runs" / "slurm" / f"{name}-{job_id}"


def log_of(workdir: Path, name: str, job_id: str) -> str:
    path = workdir / "runs" / "slurm" / "logs" / f"{name}-{job_id}.out"
    return path.read_text() if path.exists() else "(no log)"


HELLO = """\
import os, pathlib, sys
d = pathlib.Path(os.environ["ADAMERGEX_RUN_DIR"])
env = os.environ
fields = [env["SLURM_JOB_ID"], env["SLURM_PROCID"], env["SLURM_NTASKS"], sys.executable, str(d)]
(d / "hello.txt").write_text("|".join(fields))
print("hello from", os.environ["SLURM_JOB_ID"])
"""


def test_submit_cli_runs_a_python_one_liner(tmp_path, job_ids):
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "adamergex_pl.slurm.submit",
            "--program",
            PYTHON,
            "--workdir",
            str(tmp_path),
            "-J",
            "hello",
            "-t",
            "00:05:00",
            "--",
            "-c",
            HELLO,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    job_ids.append(job_id)
    assert job_id.isdigit(), result.stdout
    info = wait_for_job(job_id)
    log = log_of(tmp_path, "hello", job_id)
    assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), log
    # the #SBATCH header took effect (sbatch silently ignores it after the first command line)
    assert (info["JobName"], info["TimeLimit"], info["WorkDir"]) == ("hello", "00:05:00", str(tmp_path))
    folder = run_dir(tmp_path, "hello", job_id)
    assert (folder / "hello.txt").read_text() == f"{job_id}|0|1|{PYTHON}|{folder}"
    assert f"[adamergex-slurm] job {job_id} restart 0 on " in log
    assert f"hello from {job_id}" in log
    assert (tmp_path / "runs" / "slurm" / "jobs" / f"hello-{job_id}.sbatch").is_file()


def test_one_task_per_process_with_ranks(tmp_path, job_ids):
    code = """\
    import os, pathlib
    d = pathlib.Path(os.environ["ADAMERGEX_RUN_DIR"])
    keys = ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE")
    (d / ("rank" + os.environ["SLURM_PROCID"])).write_text(" ".join(os.environ[k] for k in keys))
    """
    (sub,) = submit_jobs([python_job("ranks", code, tasks_per_node=2)], workdir=tmp_path)
    job_ids.append(sub.job_id)
    info = wait_for_job(sub.job_id)
    assert info["JobState"] == "COMPLETED", log_of(tmp_path, "ranks", sub.job_id)
    folder = run_dir(tmp_path, "ranks", sub.job_id)
    # what Lightning's SLURMEnvironment reads: global rank, local rank, node rank, world size, tasks per node
    assert (folder / "rank0").read_text() == "0 0 0 2 2"
    assert (folder / "rank1").read_text() == "1 1 0 2 2"


PARENT = """\
import os, pathlib, sys, time
time.sleep(1)
root = pathlib.Path(os.environ["ADAMERGEX_RUN_DIR"]).parent
root.joinpath("done-" + os.environ["SLURM_JOB_NAME"]).write_text("1")
sys.exit(int(os.environ.get("PARENT_EXIT", "0")))
"""
CHILD = """\
import os, pathlib
root = pathlib.Path(os.environ["ADAMERGEX_RUN_DIR"]).parent
seen = sorted(p.name for p in root.glob("done-*"))
root.joinpath("child.txt").write_text(" ".join(seen))
"""


def test_chain_runs_the_dependent_job_after_its_parents(tmp_path, job_ids):
    parents = [python_job("fit_a", PARENT), python_job("fit_b", PARENT)]
    subs = submit_chain(parents, python_job("merge", CHILD), workdir=tmp_path)
    job_ids.extend(s.job_id for s in subs)
    merge = wait_for_job(subs[2].job_id)
    assert merge["JobState"] == "COMPLETED", log_of(tmp_path, "merge", subs[2].job_id)
    for sub in subs[:2]:
        assert wait_for_job(sub.job_id)["JobState"] == "COMPLETED"
    # when the dependent job started, both parents had finished their work
    assert (tmp_path / "runs" / "slurm" / "child.txt").read_text() == "done-fit_a done-fit_b"


def test_chain_cancels_the_dependent_job_when_a_parent_fails(tmp_path, job_ids, monkeypatch):
    monkeypatch.setenv("PARENT_EXIT", "3")  # sbatch passes the environment on: both parents fail
    subs = submit_chain(
        [python_job("fit_a", PARENT), python_job("fit_b", PARENT)],
        python_job("merge", CHILD),
        workdir=tmp_path,
    )
    job_ids.extend(s.job_id for s in subs)
    merge = wait_for_job(subs[2].job_id, states={"CANCELLED", "COMPLETED", "FAILED"})
    parent = wait_for_job(subs[0].job_id)
    assert (parent["JobState"], parent["ExitCode"]) == ("FAILED", "3:0")
    assert merge["JobState"] == "CANCELLED", merge
    assert merge["Reason"] == "DependencyNeverSatisfied", merge
    assert not (tmp_path / "runs" / "slurm" / "child.txt").exists()


REQUEUE = """\
import os, pathlib, signal, subprocess, time
d = pathlib.Path(os.environ["ADAMERGEX_RUN_DIR"])
restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
(d / f"run{restart}.txt").write_text(str(d))
if restart == 0:
    # what Lightning's SLURM handler does on SIGUSR1 (after saving its HPC checkpoint)
    def requeue(signum, frame):
        (d / "signalled.txt").write_text(str(signum))
        subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=True)
    signal.signal(signal.SIGUSR1, requeue)
    (d / "started").write_text("1")
    while True:  # SLURM ends this run once the job is requeued
        time.sleep(0.1)
(d / "done.txt").write_text(str(restart))
"""


def test_signalled_job_requeues_itself_and_finishes(tmp_path, job_ids):
    (sub,) = submit_jobs([python_job("requeue", REQUEUE)], workdir=tmp_path)
    job_ids.append(sub.job_id)
    folder = run_dir(tmp_path, "requeue", sub.job_id)
    wait_for_file(folder / "started", timeout=30, job_id=sub.job_id)  # the handler is in place
    subprocess.run(["scancel", "--signal=USR1", sub.job_id], check=True, timeout=30)
    info = wait_for_job(sub.job_id, timeout=55)
    log = log_of(tmp_path, "requeue", sub.job_id)
    assert (info["JobState"], info["Restarts"], info["ExitCode"]) == ("COMPLETED", "1", "0:0"), log
    assert (folder / "signalled.txt").read_text() == str(int(__import__("signal").SIGUSR1))
    assert (folder / "done.txt").read_text() == "1"  # the second run saw SLURM_RESTART_COUNT=1
    # both runs used the same pinned run directory, and the log kept both (--open-mode=append)
    assert (folder / "run0.txt").read_text() == (folder / "run1.txt").read_text() == str(folder)
    assert f"job {sub.job_id} restart 0 on " in log and f"job {sub.job_id} restart 1 on " in log, log
    assert os.listdir(folder.parent).count(folder.name) == 1


REQUEUED_PARENT = """\
import os, pathlib, subprocess, time
root = pathlib.Path(os.environ["ADAMERGEX_RUN_DIR"]).parent
restart = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
if restart == 0:  # a fit that checkpoints and requeues itself, as SlurmRequeue does
    subprocess.run(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], check=True)
    time.sleep(60)  # SLURM ends this run
root.joinpath("done-" + os.environ["SLURM_JOB_NAME"]).write_text(str(restart))
"""
CHILD_OF_REQUEUED = """\
import os, pathlib
root = pathlib.Path(os.environ["ADAMERGEX_RUN_DIR"]).parent
done = root / "done-fit_a"
root.joinpath("child.txt").write_text(done.read_text() if done.exists() else "parent not done")
"""


def test_chain_waits_for_a_requeued_parent_to_finish(tmp_path, job_ids):
    # the pipeline's merge job must not start (nor be cancelled) when a fit it waits for is requeued
    subs = submit_chain(
        [python_job("fit_a", REQUEUED_PARENT)], python_job("merge", CHILD_OF_REQUEUED), workdir=tmp_path
    )
    job_ids.extend(s.job_id for s in subs)
    merge = wait_for_job(subs[1].job_id, timeout=80)
    parent = wait_for_job(subs[0].job_id)
    assert (parent["JobState"], parent["Restarts"]) == ("COMPLETED", "1"), log_of(
        tmp_path, "fit_a", subs[0].job_id
    )
    assert merge["JobState"] == "COMPLETED", log_of(tmp_path, "merge", subs[1].job_id)
    assert (tmp_path / "runs" / "slurm" / "child.txt").read_text() == "1"  # after the parent's second run
