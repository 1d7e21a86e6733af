"""Rendering sbatch scripts: every JobResources field lands in its line, and the script is valid bash."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from adamergex_pl.slurm.resources import JobResources
from adamergex_pl.slurm.sbatch import render_sbatch_script, run_dir_expression

COMMAND = ["/venv/bin/adamergex", "fit", "--config", "configs/fit.yaml"]


def sbatch_lines(script: str) -> list[str]:
    return [line[len("#SBATCH ") :] for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_every_option_appears():
    r = JobResources(
        job_name="fit_task",
        nodes=2,
        gpus_per_node=4,
        cpus_per_task=8,
        mem="64g",
        time="1-02:00:00",
        partition="gpu",
        account="proj42",
        qos="high",
        signal=300,
        output="logs/%x-%j.out",
        error="logs/%x-%j.err",
        run_dir="/scratch/runs/%x-%j",
        setup=["source .venv/bin/activate", "module load cuda/12.4"],
        extra_sbatch=["--mail-type=END", "#SBATCH --constraint=a100"],
        dependency="afterok:11:12",
        array="0-2%2",
    )
    script = render_sbatch_script(COMMAND, r, workdir="/work/project")
    assert sbatch_lines(script) == [
        "--job-name=fit_task",
        "--chdir=/work/project",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--cpus-per-task=8",
        "--gpus-per-node=4",
        "--mem=64G",
        "--time=1-02:00:00",
        "--partition=gpu",
        "--account=proj42",
        "--qos=high",
        "--signal=SIGUSR1@300",
        "--requeue",
        "--open-mode=append",
        "--output=logs/%x-%j.out",
        "--error=logs/%x-%j.err",
        "--dependency=afterok:11:12",
        "--kill-on-invalid-dep=yes",
        "--array=0-2%2",
        "--mail-type=END",
        "--constraint=a100",
    ]
    assert "\nsource .venv/bin/activate\nmodule load cuda/12.4\n" in script
    assert 'export ADAMERGEX_RUN_DIR="/scratch/runs/${SLURM_JOB_NAME}-${SLURM_JOB_ID}"' in script
    assert "exec srun --ntasks-per-node=4 --cpus-per-task=8 --kill-on-bad-exit=1 \\\n" in script
    assert script.rstrip().endswith(shlex.join(COMMAND))
    assert f"#   {shlex.join(COMMAND)}\n" in script  # the header names the command


def test_minimal_script_leaves_unset_options_out():
    script = render_sbatch_script(
        ["adamergex", "validate"], JobResources(time=None, signal=None), workdir="/w"
    )
    options = sbatch_lines(script)
    for absent in (
        "--gpus-per-node",
        "--mem",
        "--time",
        "--partition",
        "--account",
        "--qos",
        "--signal",
        "--error",
        "--dependency",
        "--kill-on-invalid-dep",
        "--array",
    ):
        assert not any(o.startswith(absent) for o in options), absent
    assert "--ntasks-per-node=1" in options
    assert "# (none)" in script  # no set-up lines


def test_no_requeue():
    options = sbatch_lines(render_sbatch_script(["x"], JobResources(requeue=False), workdir="/w"))
    assert "--no-requeue" in options
    assert "--requeue" not in options
    assert "--open-mode=append" not in options


def test_relative_run_dir_is_made_absolute():
    script = render_sbatch_script(["x"], JobResources(job_name="m"), workdir="/w/proj")
    assert 'ADAMERGEX_RUN_DIR="/w/proj/runs/slurm/${SLURM_JOB_NAME}-${SLURM_JOB_ID}"' in script


def test_run_dir_expression_quotes_and_patterns():
    expr = run_dir_expression('a b/"$x`/%A_%a/100%%/%j', workdir=Path("/w"))
    assert expr == '"/w/a b/\\"\\$x\\`/${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}/100%/${SLURM_JOB_ID}"'
    out = subprocess.run(
        ["bash", "-c", f"SLURM_ARRAY_JOB_ID=7 SLURM_ARRAY_TASK_ID=2 SLURM_JOB_ID=9; printf %s {expr}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == '/w/a b/"$x`/7_2/100%/9'


def test_arguments_are_quoted_not_expanded(tmp_path):
    command = ["printf", "%s|", "it's $HOME", "a;b", "$(touch pwned)"]
    script = render_sbatch_script(command, JobResources(), workdir=tmp_path)
    # run the command part of the script through bash, with srun replaced by a stand-in
    body = script.split("exec srun", 1)[1].split("\\\n", 1)[1]
    out = subprocess.run(
        ["bash", "-c", body], capture_output=True, text=True, cwd=tmp_path, check=True
    ).stdout
    assert out == "it's $HOME|a;b|$(touch pwned)|"
    assert not (tmp_path / "pwned").exists()


def test_long_commands_wrap_one_option_per_line():
    command = ["adamergex", "fit", "--config", "configs/adamergex/a_rather_long_config_name.yaml"]
    command += [
        "--trainer.max_steps",
        "1000",
        "--model.adapter_type",
        "lora",
        "--data.tgt_lang",
        "es",
        "--flag",
    ]
    script = render_sbatch_script(command, JobResources(), workdir="/w")
    tail = script.split("--kill-on-bad-exit=1 \\\n", 1)[1]
    assert tail.splitlines() == [
        "    adamergex fit \\",
        "    --config configs/adamergex/a_rather_long_config_name.yaml \\",
        "    --trainer.max_steps 1000 \\",
        "    --model.adapter_type lora \\",
        "    --data.tgt_lang es \\",
        "    --flag",
    ]


def test_script_is_valid_bash(tmp_path):
    r = JobResources(setup=["export A=1"], extra_sbatch=["--exclusive"], gpus_per_node=2, mem="1G")
    path = tmp_path / "job.sbatch"
    path.write_text(render_sbatch_script(COMMAND, r, workdir=tmp_path))
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.parametrize("command", [[], "adamergex fit", ["fit", 3]])
def test_bad_command(command):
    with pytest.raises(ValueError, match="is not a command; expected a non-empty list of strings"):
        render_sbatch_script(command, JobResources())


def test_sbatch_header_comes_before_any_command():
    command = [
        "python",
        "-c",
        "import os\nprint(os.getcwd())\n",
    ]  # a multi-line argument in the header comment
    script = render_sbatch_script(command, JobResources(setup=["echo hi"]), workdir="/w")
    lines = script.splitlines()
    last_sbatch = max(i for i, line in enumerate(lines) if line.startswith("#SBATCH"))
    first_command = min(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert last_sbatch < first_command  # sbatch stops reading #SBATCH at the first command
    assert re.match(r"#!/bin/bash\n", script)
