"""JobResources and SLURM time limits: what is accepted, and what each refusal says."""

from __future__ import annotations

import dataclasses

import pytest

from adamergex_pl.slurm.pinning import RUN_DIR_ENV, pinned_run_dir, restart_count
from adamergex_pl.slurm.resources import JobResources, parse_time_limit
from adamergex_pl.slurm.sbatch import render_sbatch_script
from callbacks.slurm_requeue import hpc_checkpoint


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 5400),
        ("5:30", 330),
        ("02:00:00", 7200),
        ("1-0", 86400),
        ("1-12", 129600),
        ("2-03:04", 2 * 86400 + 3 * 3600 + 4 * 60),
        ("0-00:00:30", 30),
        ("1-00:00:01", 86401),
        ("UNLIMITED", None),
        ("infinite", None),
    ],
)
def test_time_limit_formats(text, seconds):
    assert parse_time_limit(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1h", "not a SLURM time limit"),
        ("", "not a SLURM time limit"),
        ("1:2:3:4", "not a SLURM time limit"),
        ("01:75:00", "75 minutes"),
        ("10:60", "60 seconds"),
        ("1-25", "25 hours"),
        ("0", "is zero"),
    ],
)
def test_time_limit_refusals(text, message):
    with pytest.raises(ValueError, match=message) as err:
        parse_time_limit(text)
    assert repr(text) in str(err.value)


def test_defaults_are_requeue_ready():
    r = JobResources()
    assert (r.nodes, r.tasks_per_node, r.cpus_per_task, r.gpus_per_node) == (1, 1, 1, 0)
    assert (r.signal, r.signal_name, r.requeue) == (120, "SIGUSR1", True)
    assert r.time_seconds == 3600
    assert "%j" in r.run_dir


def test_tasks_follow_gpus():
    assert JobResources(gpus_per_node=4).tasks_per_node == 4
    assert JobResources(tasks_per_node=2).tasks_per_node == 2  # CPU DDP: one process per task
    assert JobResources(gpus_per_node=2, tasks_per_node=2).tasks_per_node == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"gpus_per_node": 2, "tasks_per_node": 1},
            r"one task per GPU; leave tasks_per_node unset or set it to 2",
        ),
        ({"nodes": 0}, r"nodes=0 is out of range; expected >= 1"),
        ({"gpus_per_node": -1}, r"gpus_per_node=-1 is out of range"),
        ({"cpus_per_task": 1.5}, r"cpus_per_task=1.5 is not a whole number"),
        ({"nodes": True}, r"nodes=True is not a whole number"),
        ({"time": "2h"}, r"time='2h' is not a SLURM time limit; expected minutes, M:S, H:M:S"),
        ({"time": "00:02:00"}, r"signal=120 seconds is not shorter than time='00:02:00' \(120 s\)"),
        ({"time": "10", "signal": 900}, r"use a signal time below 600"),
        ({"signal": 0}, r"signal=0 is out of range; expected >= 1 and <= 65535"),
        ({"signal": 70000, "time": None}, r"signal=70000 is out of range"),
        ({"signal_name": "USR1"}, r"signal_name='USR1' is not a signal name; expected e.g. 'SIGUSR1'"),
        ({"signal_name": "SIGFOO"}, r"signal_name='SIGFOO'"),
        (
            {"mem": "64GB"},
            r"mem='64GB' is not a SLURM memory size; expected a whole number with an optional unit",
        ),
        ({"mem": "1.5G"}, r"mem='1.5G'"),
        ({"job_name": "my job"}, r"job_name='my job' is not a usable job name"),
        (
            {"job_name": "interactive"},
            r"job_name='interactive' makes Lightning treat the job as an interactive",
        ),
        ({"partition": "gpu a100"}, r"partition='gpu a100' is not a SLURM name"),
        ({"output": "logs/%j/out.txt"}, r"output='logs/%j/out.txt' has a pattern in its directory"),
        ({"error": "%x/err"}, r"error='%x/err' has a pattern in its directory"),
        ({"run_dir": "runs/%u-%j"}, r"run_dir='runs/%u-%j' uses %u; expected only %j, %x, %A, %a"),
        ({"run_dir": ""}, r"run_dir='' is not a path"),
        (
            {"setup": "source .venv/bin/activate"},
            r"setup='source .venv/bin/activate' must be a list of strings",
        ),
        ({"extra_sbatch": ["mail-type=END"]}, r"extra_sbatch line 'mail-type=END' is not an sbatch option"),
        (
            {"dependency": "after_ok:12"},
            r"dependency='after_ok:12' is not a SLURM dependency; expected type:jobid",
        ),
        ({"dependency": "afterok:abc"}, r"dependency='afterok:abc'"),
        ({"array": "0-2%"}, r"array='0-2%' is not a SLURM job array"),
    ],
)
def test_refusals_name_value_and_fix(fields, message):
    with pytest.raises(ValueError, match=message):
        JobResources(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"time": None, "signal": 5000},
        {"time": "UNLIMITED"},
        {"signal": None, "time": "1"},
        {"mem": "0"},
        {"mem": "500m"},
        {"partition": "gpu,gpu-long"},
        {"dependency": "afterok:12:13_4,afterany:7"},
        {"dependency": "afterok:1?afternotok:2"},
        {"dependency": "singleton"},
        {"array": "0-10:2,15%3"},
        {"extra_sbatch": ["#SBATCH --constraint=a100", "--exclusive"]},
        {"run_dir": "/scratch/%x/%A_%a-100%%"},
        {"output": "/abs/logs/%x-%j.out", "error": "logs/%x-%j.err"},
        {"requeue": False, "signal": None},
    ],
)
def test_accepted(fields):
    resources = JobResources(**fields)
    assert {key: getattr(resources, key) for key in fields} == fields  # kept as given, not normalised away
    script = render_sbatch_script(["adamergex", "fit"], resources).lower()  # sbatch reads 500m as 500M
    for key in set(fields) & {"time", "mem", "partition", "dependency", "array", "output", "error"}:
        if fields[key] is not None:
            assert f"#sbatch --{key}={fields[key]}".lower() in script, key


def test_replace_revalidates():
    r = JobResources(time="04:00:00", signal=600)
    with pytest.raises(ValueError, match="signal=600 seconds is not shorter"):
        dataclasses.replace(r, time="00:05:00")


def test_lists_are_copied():
    setup = ["module load cuda"]
    r = JobResources(setup=setup)
    setup.append("echo changed")
    assert r.setup == ["module load cuda"]


def test_run_env(monkeypatch, tmp_path):
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    assert pinned_run_dir() is None
    assert restart_count() == 0
    monkeypatch.setenv(RUN_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert pinned_run_dir() == tmp_path
    assert restart_count() == 2
    monkeypatch.setenv("SLURM_RESTART_COUNT", "x")
    with pytest.raises(ValueError, match="SLURM_RESTART_COUNT='x' is not a whole number"):
        restart_count()


def test_hpc_checkpoint_is_the_newest(tmp_path):
    assert hpc_checkpoint(tmp_path / "missing") is None
    assert hpc_checkpoint(tmp_path) is None
    for name in ("hpc_ckpt_2.ckpt", "hpc_ckpt_10.ckpt", "hpc_ckpt_x.ckpt", "last.ckpt"):
        (tmp_path / name).write_text("")
    assert hpc_checkpoint(tmp_path) == tmp_path / "hpc_ckpt_10.ckpt"
