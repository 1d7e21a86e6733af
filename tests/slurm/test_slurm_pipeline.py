"""``adamergex pipeline --submit`` on the local SLURM cluster: the fits run as parallel jobs, and the dependent
evaluation job starts only after all of them succeeded, then writes the report; ``--status`` reads the jobs
from SLURM (queued, running, failed with their error and log) and the run directory."""

from __future__ import annotations

import datetime
import re
import subprocess

import pytest
from conftest import ADAMERGEX_BIN, REPO_ROOT
from local_slurm import cancel, job_info, wait_for_job

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def _time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


PIPELINE = [str(ADAMERGEX_BIN), "pipeline", "--config", str(REPO_ROOT / "configs/pipeline/tiny.yaml")]
STAGES = ["reference_en", "reference_es", "task_add_en", "evaluate_add"]


def _run(tmp_path, *args: str) -> str:
    return subprocess.run(
        [*PIPELINE, "--trainer.enable_progress_bar", "false", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip


def _submit(tmp_path, *args: str) -> dict[str, str]:
    out = _run(tmp_path, *args, "--submit", "--slurm.time", "00:10:00")
    jobs = dict(line.split("\t") for line in out.strip().splitlines())
    assert list(jobs) == [*STAGES, "report"]
    return jobs


def test_pipeline_submission_evaluates_only_after_every_fit_succeeded(tmp_path, tiny_llama_path):
    jobs = _submit(tmp_path)
    try:
        status = _run(tmp_path, "--status").splitlines()  # each stage queued, running or already done
        for name, line in zip(STAGES, status[1:5], strict=True):
            assert re.match(rf"{name} +(waiting .*SLURM job {jobs[name]} PENDING|running +SLURM job "
                            rf"{jobs[name]} \w+; log |done +finished )", line), status  # fmt: skip
        pending = job_info(jobs["evaluate_add"])
        assert "afterok" in pending.get("Dependency", "") or pending["JobState"] in (
            "PENDING",
            "RUNNING",
            "COMPLETED",
        )
        fits = {
            name: wait_for_job(job_id, timeout=400)
            for name, job_id in jobs.items()
            if name not in ("evaluate_add", "report")
        }
        assert {info["JobState"] for info in fits.values()} == {"COMPLETED"}, fits
        evaluate = wait_for_job(jobs["evaluate_add"], timeout=400)
        assert evaluate["JobState"] == "COMPLETED", evaluate
        assert _time(evaluate["StartTime"]) >= max(_time(info["EndTime"]) for info in fits.values())
        report = wait_for_job(jobs["report"], timeout=200)
        assert report["JobState"] == "COMPLETED", report
    finally:
        cancel(list(jobs.values()))
    table = (tmp_path / "runs/tiny/pipeline/results.md").read_text()
    assert re.search(r"\| adamergex \| [\w ]*\| 0\.5 \|", table) and "| zero_shot |" in table, table
    status = _run(tmp_path, "--status").splitlines()
    assert status[0].endswith(": 4 stages: 4 done") and status[-1].startswith("Every stage is done"), status


def test_status_of_a_submitted_run_whose_fits_failed(tmp_path, tiny_llama_path):
    jobs = _submit(tmp_path, "--model.lora_r", "0")  # every fit job fails as it builds its model
    try:
        ended = {name: wait_for_job(job_id, timeout=200)["JobState"] for name, job_id in jobs.items()}
    finally:
        cancel(list(jobs.values()))
    assert ended == {
        **dict.fromkeys(STAGES[:3], "FAILED"),
        "evaluate_add": "CANCELLED",
        "report": "CANCELLED",
    }
    status = _run(tmp_path, "--model.lora_r", "0", "--status").splitlines()
    assert status[0].endswith(": 4 stages: 3 failed, 1 to run"), status
    for name, line in zip(STAGES[:3], status[1:4], strict=True):
        log = tmp_path / f"runs/slurm/logs/{name}-{jobs[name]}.out"
        assert re.fullmatch(rf"{name} +failed +adamergex: error: lora_r=0 must be a positive integer, e\.g\. 8 "
                            rf"\(exit code 2, .+\); log {log}", line), line  # fmt: skip
        assert log.is_file()
    assert f"SLURM job {jobs['evaluate_add']} CANCELLED" in status[4]
    resubmit = [
        *PIPELINE[1:],
        "--trainer.enable_progress_bar",
        "false",
        "--model.lora_r",
        "0",
        "--slurm.time",
    ]
    assert status[-1] == f"Continue with: adamergex {' '.join(resubmit)} 00:10:00 --submit", status[-1]
