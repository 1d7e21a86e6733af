"""Watching ``adamergex pipeline``: numbered stage headers with elapsed times and no third-party noise (the
quiet filters; ``--verbose`` brings it back), ``--status`` of a local run, TensorBoard logs of every fit and
``plots/training.png``."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from conftest import ADAMERGEX_BIN, REPO_ROOT

from adamergex_pl import quiet
from adamergex_pl.cli import main
from adamergex_pl.pipeline import stages as st
from adamergex_pl.pipeline.command import parse

TINY = str(REPO_ROOT / "configs/pipeline/tiny.yaml")
RUN = "runs/tiny/pipeline"
FITS = ["reference_en", "reference_es", "task_add_en"]
NOISE = {  # the filter of adamergex_pl/quiet.py that removes each, and how it appears on the console
    "GPU line": "GPU available: ",
    "TPU line": "TPU available: ",
    "transformers' weights bar": "Loading weights",
    "stepping-batches note": "to estimate number of stepping batches",
    "short-epoch warning": "is smaller than the logging interval",
}
HEADER = re.compile(r"^\[pipeline (\d)/4\] (\w+): adamergex (fit|validate) --config \S+$")
ELAPSED = re.compile(r"^\[pipeline (\d)/4\] (\w+): done in \d+\.\d s$")


def _adamergex(cwd, *args: str) -> str:
    """The real console script, as a user's terminal runs it: progress bars and warnings not switched off."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key
        not in ("PYTHONWARNINGS", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY", quiet.VERBOSE_ENV)
    }
    result = subprocess.run(  # stdout and stderr interleaved, as on a terminal
        [str(ADAMERGEX_BIN), *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:]
    return result.stdout


@pytest.mark.slow
def test_a_tiny_pipeline_prints_numbered_stages_with_times_and_no_noise(tmp_path):
    out = _adamergex(tmp_path, "pipeline", "--config", TINY)
    lines = out.splitlines()
    assert {name for name, line in NOISE.items() if line in out} == set(), out[-3000:]
    headers = [m.groups() for m in map(HEADER.match, lines) if m]
    assert [(k, name) for k, name, _ in headers] == [
        ("1", FITS[0]),
        ("2", FITS[1]),
        ("3", FITS[2]),
        ("4", "evaluate_add"),
    ]
    ends = [m.groups() for m in map(ELAPSED.match, lines) if m]
    assert ends == [(k, name) for k, name, _ in headers]
    for _, name, _ in headers:  # a stage's output lies between its header and its time
        first = next(i for i, line in enumerate(lines) if HEADER.match(line) and f"] {name}:" in line)
        last = next(i for i, line in enumerate(lines) if ELAPSED.match(line) and f"] {name}:" in line)
        assert first < last and not any(HEADER.match(line) for line in lines[first + 1 : last]), (name, out)

    run = tmp_path / RUN
    for fit in FITS:  # TensorBoard beside the CSV logs, every fit under one folder
        assert list((run / "tensorboard" / fit / "version_0").glob("events.out.tfevents.*")), fit
        assert (run / fit / "logs/version_0/metrics.csv").is_file(), fit
    assert (run / "plots/training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    status = _adamergex(tmp_path, "pipeline", "--config", TINY, "--status")
    assert status.splitlines()[0] == f"AdaMergeX pipeline in {RUN}: 4 stages: 4 done", status
    assert f"Every stage is done; the report: {RUN}/results.md" in status


@pytest.mark.slow
def test_verbose_brings_back_what_the_quiet_stage_output_leaves_out(tmp_path):
    one = ["pipeline", "--config", TINY, "--stage", "[reference_en]", "--trainer.log_every_n_steps", "50"]
    quiet_out = _adamergex(tmp_path, *one, "--run_dir", "quiet")
    assert {name for name, line in NOISE.items() if line in quiet_out} == set(), quiet_out[-3000:]
    verbose_out = _adamergex(tmp_path, "--verbose", *one, "--run_dir", "verbose")
    assert {name for name, line in NOISE.items() if line in verbose_out} == set(NOISE), verbose_out[-3000:]


def _status(capsys, *extra: str) -> list[str]:
    assert main(["pipeline", "--config", TINY, *extra, "--status"]) == 0
    return capsys.readouterr().out.splitlines()


def test_status_of_a_failed_stage_names_its_error_and_how_to_continue(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _status(capsys)[1:] == [
        "reference_en  to run",
        "reference_es  to run",
        "task_add_en   to run",
        "evaluate_add  to run   after task_add_en, reference_en, reference_es",
        f"Continue with: adamergex pipeline --config {TINY}",
    ]
    bad = ("--model.lora_r", "0")
    assert main(["pipeline", "--config", TINY, *bad]) == 2
    capsys.readouterr()
    lines = _status(capsys, *bad)
    assert lines[0] == f"AdaMergeX pipeline in {RUN}: 4 stages: 1 failed, 3 to run"
    assert re.fullmatch(
        r"reference_en  failed   adamergex: error: .*lora_r=0 must be a positive integer, e\.g\. 8 "
        r"\(exit code 2, \S+ \S+\)",
        lines[1],
    ), lines[1]
    assert lines[-1] == f"Continue with: adamergex pipeline --config {TINY} --model.lora_r 0"


def test_status_while_a_pipeline_runs_here_shows_its_stage_running_and_the_others_waiting(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    spec, _, _ = parse(["--config", TINY])
    plan = st.plan(spec)
    st.mark(spec, plan[1], st.ATTEMPT_RECORD, st.fingerprints(plan)[plan[1].name])  # this process runs it
    lines = _status(capsys)
    assert lines[1:4] == [
        f"reference_en  waiting  its turn in the pipeline run by process {os.getpid()}",
        lines[2],
        "task_add_en   waiting  its turn in the pipeline run by process " + str(os.getpid()),
    ]
    assert re.fullmatch(
        rf"reference_es  running  process {os.getpid()} on this machine since \S+ \S+", lines[2]
    )
    assert lines[4] == "evaluate_add  waiting  on task_add_en, reference_en, reference_es"
    assert lines[-1] == f"In progress; see again with: adamergex pipeline --config {TINY} --status"
