"""Real ``adamergex fit`` jobs on the local SLURM cluster: a fit writes its snapshots into its pinned run dir; a
fit sent the requeue signal checkpoints, requeues itself, resumes and ends exactly like an uninterrupted one; a
2-process DDP fit with a 4-bit base (gloo on CPU, one rank per ``srun`` task) completes, and does the same
requeue with both ranks agreeing on one checkpoint.

The signal is sent with ``scancel --signal=USR1`` once the job has reached a known step: the test-only
``requeue_pacer.PauseForRequeueSignal`` (imported by the jobs from ``PYTHONPATH=tests``) waits there until the
signal has arrived, so the requeue step does not depend on how fast the machine is. The cluster comes from the
``slurm_cluster`` fixture; these tests skip with its reason where it cannot run.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ADAMERGEX_BIN, REPO_ROOT
from local_slurm import cancel, wait_for_file, wait_for_job
from safetensors.torch import load_file

from adamergex_pl.slurm.jobs import SlurmJob, adamergex_command, submit_jobs
from adamergex_pl.slurm.resources import JobResources

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]
FIT = [
    "fit",
    "--config",
    str(REPO_ROOT / "configs/tiny/task_lora.yaml"),
    "--trainer.enable_progress_bar",
    "false",
]
PACER_PATH = f"export PYTHONPATH={REPO_ROOT / 'tests'}"
JOB_TIMEOUT = 240  # seconds; each job takes well under a minute per run on an idle 2-core machine


def pause_at(step: int) -> list[str]:
    return ["--trainer.callbacks+=requeue_pacer.PauseForRequeueSignal", f"--trainer.callbacks.at_step={step}"]


def submit_fit(workdir: Path, name: str, args: list[str], **resources) -> str:
    resources = {"time": "00:10:00", "setup": [PACER_PATH], **resources}
    job = SlurmJob(adamergex_command(args), JobResources(job_name=name, **resources))
    (submission,) = submit_jobs([job], workdir=workdir)
    return submission.job_id


def signal_when_paused(run_dir: Path, job_id: str, ranks: int = 1) -> None:
    """Wait until every rank waits at the pacer's step, then send the requeue signal to the job's tasks."""
    for rank in range(ranks):
        wait_for_file(run_dir / f"paused-rank{rank}", timeout=JOB_TIMEOUT, job_id=job_id)
    subprocess.run(["scancel", "--signal=USR1", job_id], check=True, timeout=30)


def log_of(workdir: Path, name: str, job_id: str) -> str:
    path = workdir / "runs" / "slurm" / "logs" / f"{name}-{job_id}.out"
    return path.read_text() if path.exists() else "(no log)"


def snapshot_tree(run_dir: Path) -> dict[str, str]:
    root = run_dir / "snapshots"
    return {p.name: (str(p.readlink()) if p.is_symlink() else "dir") for p in sorted(root.iterdir())}


def train_steps(run_dir: Path, job_id: str) -> list[int]:
    with (run_dir / "lightning_logs" / f"job_{job_id}" / "metrics.csv").open() as handle:
        return [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]


def adapter_weights(run_dir: Path, epoch: str) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "snapshots" / epoch / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def fit_jobs(tmp_path_factory, tiny_llama_path):
    """An uninterrupted fit (submitted with the ``adamergex submit`` command) and one signalled at step 12
    (mid-epoch 1, after the epoch-0 snapshot), run side by side; both finished."""
    root = tmp_path_factory.mktemp("slurm-fit")
    straight, requeued = root / "straight", root / "requeued"
    straight.mkdir(), requeued.mkdir()
    submitted = subprocess.run(
        [str(ADAMERGEX_BIN), "submit", "--workdir", str(straight), "-J", "fit", "-t", "00:10:00", "--", *FIT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert submitted.returncode == 0, submitted.stderr
    jobs = {"straight": submitted.stdout.strip()}
    try:
        jobs["requeued"] = submit_fit(requeued, "fit", [*FIT, *pause_at(12)])
        signal_when_paused(requeued / "runs" / "slurm" / f"fit-{jobs['requeued']}", jobs["requeued"])
        infos = {kind: wait_for_job(job_id, timeout=JOB_TIMEOUT) for kind, job_id in jobs.items()}
        yield {
            kind: {
                "id": job_id,
                "info": infos[kind],
                "run_dir": workdir / "runs" / "slurm" / f"fit-{job_id}",
                "workdir": workdir,
                "log": log_of(workdir, "fit", job_id),
            }
            for (kind, job_id), workdir in zip(jobs.items(), (straight, requeued), strict=True)
        }
    finally:
        cancel(list(jobs.values()))


def test_a_fit_job_writes_snapshots_and_logs_into_its_pinned_run_dir(fit_jobs):
    job = fit_jobs["straight"]
    info, run_dir, log = job["info"], job["run_dir"], job["log"]
    assert (info["JobState"], info["Restarts"], info["ExitCode"]) == ("COMPLETED", "0", "0:0"), log
    assert snapshot_tree(run_dir) == {"epoch=0": "dir", "epoch=1": "dir", "last": "epoch=1"}, log
    snapshot = json.loads((run_dir / "snapshots" / "last" / "snapshot.json").read_text())
    assert (snapshot["epoch"], snapshot["global_step"]) == (1, 18)
    logs = run_dir / "lightning_logs"
    assert [p.name for p in logs.iterdir()] == [f"job_{job['id']}"]  # fixed version, not version_0
    config = yaml.safe_load((logs / f"job_{job['id']}" / "config.yaml").read_text())
    assert (config["trainer"]["default_root_dir"], config["ckpt_path"]) == (str(run_dir), None)
    assert train_steps(run_dir, job["id"]) == list(range(18))
    assert not list(run_dir.glob("hpc_ckpt_*"))  # nothing asked for a requeue


def test_a_signalled_fit_requeues_resumes_and_matches_the_uninterrupted_run(fit_jobs):
    job, straight = fit_jobs["requeued"], fit_jobs["straight"]
    info, run_dir, log = job["info"], job["run_dir"], job["log"]
    assert (info["JobState"], info["Restarts"], info["ExitCode"]) == ("COMPLETED", "1", "0:0"), log
    checkpoint = run_dir / "hpc_ckpt_1.ckpt"
    assert sorted(p.name for p in run_dir.glob("hpc_ckpt_*")) == [checkpoint.name]
    assert torch.load(checkpoint, weights_only=False)["global_step"] == 12
    for line in (
        f"SlurmRequeue: SIGUSR1 received; saved {checkpoint} at step 12 (epoch 1)",
        f"SlurmRequeue: requeued SLURM job {job['id']} (saved {checkpoint} at step 12)",
        f"[adamergex-slurm] job {job['id']} restart 1 on ",
        f"adamergex: restart 1 of this job: resuming from {checkpoint}",
        "SlurmRequeue: resumed at step 12 after 1 requeue(s)",
    ):
        assert line in log, log
    # each epoch snapshotted once over both runs (the restart writes epoch 1 only); nothing left half-written
    assert log.count("(epoch=1); last -> epoch=1") == 1 and "epoch=0 … epoch=1" not in log, log
    assert snapshot_tree(run_dir) == {"epoch=0": "dir", "epoch=1": "dir", "last": "epoch=1"}
    assert not list((run_dir / "snapshots").glob(".tmp-*")) and not (run_dir / ".requeue-tmp").exists()

    # the same optimizer steps as the uninterrupted run, and the same adapter
    last = [
        torch.load(j["run_dir"] / "checkpoints/last.ckpt", weights_only=False)  # the pinned run dir's
        for j in (straight, job)
    ]
    assert last[0]["global_step"] == last[1]["global_step"] == 18
    for state_a, state_b in zip(*(c["optimizer_states"][0]["state"].values() for c in last), strict=True):
        assert int(state_a["step"]) == int(state_b["step"]) == 18
    assert last[0]["lr_schedulers"][0]["last_epoch"] == last[1]["lr_schedulers"][0]["last_epoch"] == 18
    for epoch in ("epoch=0", "epoch=1"):
        a, b = adapter_weights(straight["run_dir"], epoch), adapter_weights(run_dir, epoch)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    # one log over both runs, every step once
    assert train_steps(run_dir, job["id"]) == list(range(18))


DDP = [*FIT, "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
DDP += ["--model.init_args.quantization", "nf4"]  # 5 steps per epoch on each of the 2 ranks


@pytest.fixture(scope="module")
def ddp_jobs(tmp_path_factory, tiny_llama_path):
    """Two 2-task DDP fits on an nf4 base: one uninterrupted, one signalled at step 7 (mid-epoch 1). Each takes
    both CPUs of the node, so SLURM runs them one at a time: the signalled one first, and the other while it
    waits to be eligible again after its requeue."""
    root = tmp_path_factory.mktemp("slurm-ddp")
    straight, requeued = root / "straight", root / "requeued"
    jobs: dict[str, str] = {}
    try:
        jobs["requeued"] = submit_fit(requeued, "ddp", [*DDP, *pause_at(7)], tasks_per_node=2)
        jobs["straight"] = submit_fit(straight, "ddp", DDP, tasks_per_node=2)
        run_dir = requeued / "runs" / "slurm" / f"ddp-{jobs['requeued']}"
        signal_when_paused(run_dir, jobs["requeued"], ranks=2)  # both ranks trained to step 7
        infos = {kind: wait_for_job(job_id, timeout=JOB_TIMEOUT) for kind, job_id in jobs.items()}
        yield {
            kind: {
                "id": job_id,
                "info": infos[kind],
                "run_dir": workdir / "runs" / "slurm" / f"ddp-{job_id}",
                "workdir": workdir,
                "log": log_of(workdir, "ddp", job_id),
            }
            for (kind, job_id), workdir in zip(jobs.items(), (requeued, straight), strict=True)
        }
    finally:
        cancel(list(jobs.values()))


def test_a_two_process_ddp_fit_with_a_4bit_base_completes_through_srun(ddp_jobs, tiny_llama_path):
    job = ddp_jobs["straight"]
    info, run_dir, log = job["info"], job["run_dir"], job["log"]
    assert (info["JobState"], info["Restarts"], info["ExitCode"]) == ("COMPLETED", "0", "0:0"), log
    for rank in (0, 1):  # each srun task is one DDP rank
        assert log.count(f"Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2") == 1, log
    assert snapshot_tree(run_dir) == {"epoch=0": "dir", "epoch=1": "dir", "last": "epoch=1"}
    snapshot = json.loads((run_dir / "snapshots" / "last" / "snapshot.json").read_text())
    assert (snapshot["global_step"], snapshot["quantization"]) == (10, "nf4")  # 33 examples per rank, batch 8
    assert train_steps(run_dir, job["id"]) == list(range(10))

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    model = PeftModel.from_pretrained(base, run_dir / "snapshots" / "last")
    trained = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert trained and all(v.abs().sum() > 0 for v in trained.values())  # B starts at zero: it was trained
    assert torch.isfinite(model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


def test_a_signalled_ddp_fit_agrees_on_one_checkpoint_and_matches_the_uninterrupted_run(ddp_jobs):
    job, straight = ddp_jobs["requeued"], ddp_jobs["straight"]
    info, run_dir, log = job["info"], job["run_dir"], job["log"]
    assert (info["JobState"], info["Restarts"], info["ExitCode"]) == ("COMPLETED", "1", "0:0"), log
    for rank in (0, 1):  # both ranks ran on both runs
        assert log.count(f"Initializing distributed: GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2") == 2, log
    assert log.count("SlurmRequeue: SIGUSR1 received; saved") == 1, log
    assert sorted(p.name for p in run_dir.glob("hpc_ckpt_*")) == ["hpc_ckpt_1.ckpt"]
    assert torch.load(run_dir / "hpc_ckpt_1.ckpt", weights_only=False)["global_step"] == 7
    assert snapshot_tree(run_dir) == {"epoch=0": "dir", "epoch=1": "dir", "last": "epoch=1"}
    assert train_steps(run_dir, job["id"]) == list(range(10))
    last = [
        torch.load(j["run_dir"] / "checkpoints/last.ckpt", weights_only=False)  # the pinned run dir's
        for j in (straight, job)
    ]
    for state_a, state_b in zip(*(c["optimizer_states"][0]["state"].values() for c in last), strict=True):
        assert int(state_a["step"]) == int(state_b["step"]) == 10
    for epoch in ("epoch=0", "epoch=1"):
        a, b = adapter_weights(straight["run_dir"], epoch), adapter_weights(run_dir, epoch)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
