"""``adamergex submit`` without a cluster: dry runs, job files, DAG order, submitting via a fake sbatch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from adamergex_pl.slurm.jobs import SlurmJob, adamergex_command, dependency_order, submit_chain, submit_jobs
from adamergex_pl.slurm.resources import JobResources
from adamergex_pl.slurm.sbatch import SbatchError, SbatchNotFoundError, find_sbatch
from adamergex_pl.slurm.submit import load_job_file, main

FAKE_SBATCH = """\
#!/bin/bash
# stand-in for sbatch --parsable: logs its arguments, prints the next job id (or fails on request)
set -euo pipefail
here=$(dirname "$0")
echo "$*" >>"$here/calls"
[ -z "${FAKE_SBATCH_FAIL_AT:-}" ] || [ "$(wc -l <"$here/calls")" -lt "$FAKE_SBATCH_FAIL_AT" ] || {
  echo "sbatch: error: Batch job submission failed: Invalid account" >&2; exit 1; }
echo $(( 100 + $(wc -l <"$here/calls") ))
"""


@pytest.fixture
def fake_sbatch(tmp_path) -> Path:
    path = tmp_path / "bin" / "sbatch"
    path.parent.mkdir()
    path.write_text(FAKE_SBATCH)
    path.chmod(0o755)
    return path


def calls(fake_sbatch: Path) -> list[str]:
    return (fake_sbatch.parent / "calls").read_text().splitlines()


def job(name: str, *after: str, **fields) -> SlurmJob:
    return SlurmJob(["adamergex", name], JobResources(job_name=name, **fields), list(after))


def test_dry_run_prints_the_script(capsys, tmp_path):
    rc = main(
        [
            "--dry-run",
            "-J",
            "fit_task",
            "-t",
            "02:00:00",
            "--gpus-per-node",
            "2",
            "--signal",
            "300",
            "--workdir",
            str(tmp_path),
            "--",
            "fit",
            "--config",
            "fit.yaml",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith("#!/bin/bash\n")
    assert "#SBATCH --job-name=fit_task\n" in out
    assert "#SBATCH --ntasks-per-node=2\n#SBATCH --cpus-per-task=1\n#SBATCH --gpus-per-node=2\n" in out
    assert "#SBATCH --signal=SIGUSR1@300\n" in out
    assert out.rstrip().endswith(f"{Path(sys.executable).with_name('adamergex')} fit --config fit.yaml")
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing


def test_dry_run_with_program_and_no_signal(capsys):
    rc = main(["--dry-run", "--program", "python3", "--signal", "0", "--no-requeue", "--", "-c", "print(1)"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "--signal" not in out
    assert "#SBATCH --no-requeue" in out
    assert out.rstrip().endswith("python3 -c 'print(1)'")


def test_leading_adamergex_word_is_dropped():
    assert adamergex_command(["adamergex", "fit"], program="/x/adamergex") == ["/x/adamergex", "fit"]
    assert adamergex_command(["/usr/bin/adamergex", "merge"], program="a") == ["a", "merge"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dry-run"], "nothing to run: put the adamergex command after `--`"),
        (["--dry-run", "--", "adamergex"], "no adamergex command given"),
        (["--dry-run", "-t", "1:00", "--", "fit"], "signal=120 seconds is not shorter than time='1:00'"),
        (["--dry-run", "--mem", "lots", "--", "fit"], "mem='lots' is not a SLURM memory size"),
        (["--dry-run", "--jobs", "missing.yaml"], "job file 'missing.yaml' does not exist"),
    ],
)
def test_bad_options_exit_2_with_message(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("adamergex submit: error: ")
    assert message in err


def test_missing_sbatch_says_what_and_how(capsys, tmp_path):
    rc = main(["--sbatch", "no-such-sbatch", "--workdir", str(tmp_path), "--", "fit"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "sbatch='no-such-sbatch' was not found on PATH" in err
    assert "apt-get install slurm-client" in err
    assert "--dry-run" in err
    assert not (tmp_path / "runs").exists()  # checked before anything is written
    with pytest.raises(SbatchNotFoundError):
        find_sbatch("no-such-sbatch")


def test_submit_writes_script_and_prints_job_id(capsys, tmp_path, fake_sbatch):
    rc = main(
        [
            "--sbatch",
            str(fake_sbatch),
            "--workdir",
            str(tmp_path),
            "-J",
            "fit",
            "-d",
            "afterok:7",
            "--",
            "fit",
            "--config",
            "a b.yaml",
        ]
    )
    captured = capsys.readouterr()
    assert rc == 0
    assert captured.out == "101\n"  # only the id on stdout, for scripts
    script = tmp_path / "runs" / "slurm" / "jobs" / "fit-101.sbatch"
    assert "job 101 (fit) submitted" in captured.err
    assert str(script) in captured.err
    assert "runs/slurm/logs/fit-101.out" in captured.err
    assert "#SBATCH --dependency=afterok:7" in script.read_text()
    assert "fit --config 'a b.yaml'" in script.read_text()
    assert (tmp_path / "runs" / "slurm" / "logs").is_dir()  # sbatch would not create it
    # submitted under a temporary name, renamed to the job id afterwards
    (call,) = calls(fake_sbatch)
    assert re.fullmatch(rf"--parsable {tmp_path}/runs/slurm/jobs/fit-\d{{8}}-\d{{6}}-\d+\.sbatch", call), call


def test_chain_passes_afterok_ids_to_the_dependent_job(tmp_path, fake_sbatch):
    fits = [job(n) for n in ("fit_task", "fit_ref_src", "fit_ref_tgt")]
    done = submit_chain(fits, job("merge"), workdir=tmp_path, sbatch=str(fake_sbatch))
    assert [(s.name, s.job_id) for s in done] == [
        ("fit_task", "101"),
        ("fit_ref_src", "102"),
        ("fit_ref_tgt", "103"),
        ("merge", "104"),
    ]
    merge_call = calls(fake_sbatch)[3]
    assert merge_call.startswith("--parsable --dependency=afterok:101:102:103 --kill-on-invalid-dep=yes ")
    assert done[3].script_path == tmp_path / "runs" / "slurm" / "jobs" / "merge-104.sbatch"
    assert all(s.script_path.is_file() for s in done)
    assert not any(p.name.startswith(".") for p in done[0].script_path.parent.iterdir())  # no temporary files


def test_chain_dry_run_uses_placeholders(tmp_path):
    done = submit_chain(
        [job("a"), job("b")], [job("c", kill_on_invalid_dep=False)], workdir=tmp_path, dry_run=True
    )
    assert [s.job_id for s in done] == [None, None, None]
    assert done[2].sbatch_args == ["--dependency=afterok:<id of a>:<id of b>"]
    assert not (tmp_path / "runs").exists()


def test_own_dependency_is_combined(tmp_path, fake_sbatch):
    jobs = [job("a"), job("b", "a", dependency="afterany:55")]
    submit_jobs(jobs, workdir=tmp_path, sbatch=str(fake_sbatch))
    assert calls(fake_sbatch)[1].startswith("--parsable --dependency=afterany:55,afterok:101 ")
    with pytest.raises(ValueError, match="cannot combine '\\?'"):
        submit_jobs(
            [job("a"), job("b", "a", dependency="afterok:1?afterok:2")], workdir=tmp_path, dry_run=True
        )


def test_refused_job_lists_what_was_already_submitted(tmp_path, fake_sbatch, monkeypatch):
    monkeypatch.setenv("FAKE_SBATCH_FAIL_AT", "3")
    with pytest.raises(SbatchError) as err:
        submit_chain([job("a"), job("b")], job("c"), workdir=tmp_path, sbatch=str(fake_sbatch))
    message = str(err.value)
    assert "Invalid account" in message
    assert "already submitted: a=101, b=102 (cancel them with `scancel 101 102`" in message
    assert sorted(p.name for p in (tmp_path / "runs/slurm/jobs").iterdir()) == [
        "a-101.sbatch",
        "b-102.sbatch",
    ]


def test_dependency_order_and_errors():
    ordered = dependency_order([job("merge", "a", "b"), job("a"), job("b", "a")])
    assert [j.name for j in ordered] == ["a", "b", "merge"]
    with pytest.raises(ValueError, match="job name 'a' is used twice"):
        dependency_order([job("a"), job("a")])
    with pytest.raises(ValueError, match="job 'b' runs after 'x', which is not a job of this submission"):
        dependency_order([job("a"), job("b", "x")])
    with pytest.raises(ValueError, match="'a', 'b' wait for each other in a cycle"):
        dependency_order([job("a", "b"), job("b", "a"), job("c")])
    with pytest.raises(ValueError, match="at least one job"):
        submit_chain([], job("c"), dry_run=True)


PIPELINE = """\
defaults:
  time: "04:00:00"
  gpus_per_node: 1
  setup: ["source .venv/bin/activate"]
jobs:
  fit_task:
    command: fit --config configs/fit_task.yaml
  fit_ref_src:
    command: [fit, --config, configs/fit_ref_en.yaml]
  fit_ref_tgt:
    command: [fit, --config, configs/fit_ref_es.yaml]
    resources: {partition: long}
  merge:
    command: merge --config configs/merge.yaml
    after: [fit_task, fit_ref_src, fit_ref_tgt]
    resources: {gpus_per_node: 0, time: "00:30:00"}
    program: /opt/adamergex
"""


def test_job_file(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    jobs = load_job_file(path, overrides={"partition": "gpu", "time": "08:00:00"}, program="adamergex")
    assert [j.name for j in jobs] == ["fit_task", "fit_ref_src", "fit_ref_tgt", "merge"]
    fit, _, ref_tgt, merge = jobs
    assert fit.command == ["adamergex", "fit", "--config", "configs/fit_task.yaml"]
    assert (fit.resources.gpus_per_node, fit.resources.time, fit.resources.partition) == (
        1,
        "08:00:00",
        "gpu",
    )
    assert fit.resources.setup == ["source .venv/bin/activate"]
    assert ref_tgt.resources.partition == "long"  # the job's own resources win over the command line
    assert merge.command[0] == "/opt/adamergex"
    assert merge.after == ["fit_task", "fit_ref_src", "fit_ref_tgt"]
    assert (merge.resources.gpus_per_node, merge.resources.time) == (0, "00:30:00")


def test_job_file_through_the_cli(tmp_path, capsys, fake_sbatch):
    path = tmp_path / "pipeline.yaml"
    path.write_text(PIPELINE)
    assert main(["--dry-run", "--jobs", str(path), "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("#!/bin/bash") == 4
    assert "# ===== job merge: sbatch --parsable " in out
    assert "'--dependency=afterok:<id of fit_task>:<id of fit_ref_src>:<id of fit_ref_tgt>'" in out
    assert main(["--jobs", str(path), "--workdir", str(tmp_path), "--sbatch", str(fake_sbatch)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "fit_task 101",
        "fit_ref_src 102",
        "fit_ref_tgt 103",
        "merge 104",
    ]
    assert main(["--jobs", str(path), "--dry-run", "--", "fit"]) == 2
    assert "takes its commands from the file" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("jobs: []", "non-empty 'jobs:' mapping"),
        ("jobs: {a: {command: fit}}\nextra: 1", "unknown key(s) extra"),
        ("jobs: {a: {command: fit, gpus: 1}}", "job 'a' has unknown key(s) gpus"),
        ("jobs: {a: {command: fit, resources: {gpu: 1}}}", "job 'a': resources has unknown key(s) gpu"),
        ("jobs: {a: {after: [b]}}", "job 'a' has no command"),
        ("jobs: {a: {command: fit, resources: {time: 2h}}}", "job 'a': time='2h' is not a SLURM time limit"),
        (
            "jobs: {a: {command: fit, after: b}}",
            None,
        ),  # a single name is fine here; the DAG check comes later
        ("jobs: {a: [fit]}", "job 'a' must be a mapping"),
        ("jobs: {a: {command: fit}}\ndefaults: {job_name: x}", "defaults has unknown key(s) job_name"),
        ("jobs: {a: {command: 'fit'}", "is not valid YAML"),
    ],
)
def test_job_file_errors(tmp_path, text, message):
    path = tmp_path / "jobs.yaml"
    path.write_text(text)
    if message is None:
        assert load_job_file(path)[0].after == ["b"]
        return
    with pytest.raises(ValueError) as err:
        load_job_file(path)
    assert message in str(err.value)


def test_module_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "adamergex_pl.slurm.submit", "--dry-run", "--", "validate"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#!/bin/bash\n")
    help_text = subprocess.run(
        [sys.executable, "-m", "adamergex_pl.slurm.submit", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ADAMERGEX_RUN_DIR" in help_text
    assert "--gpus-per-node" in help_text
