"""``adamergex pipeline --submit`` on the local SLURM cluster: the fits run as parallel jobs, and the dependent
evaluation job starts only after all of them succeeded, then writes the report."""

from __future__ import annotations

import datetime
import subprocess

import pytest
from conftest import ADAMERGEX_BIN, REPO_ROOT
from local_slurm import cancel, job_info, wait_for_job

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def _time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


def test_pipeline_submission_evaluates_only_after_every_fit_succeeded(tmp_path, tiny_llama_path):
    command = [
        str(ADAMERGEX_BIN), "pipeline", "--config", str(REPO_ROOT / "configs/pipeline/tiny.yaml"),
        "--trainer.enable_progress_bar", "false", "--submit", "--slurm.time", "00:10:00",
    ]  # fmt: skip
    out = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    jobs = dict(line.split("\t") for line in out.strip().splitlines())
    assert list(jobs) == ["reference_en", "reference_es", "task_add_en", "evaluate_add", "report"]
    try:
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
    assert "| adamergex | 0.5 |" in table and "| zero_shot |" in table
