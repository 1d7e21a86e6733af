"""Fault injection: ``kill -9`` at seeded random moments of ``fit``, ``merge`` and ``pipeline``, kills in the
middle of a checkpoint, snapshot or merge write, and a full disk (a small tmpfs, root only).

After every kill: each snapshot loads with peft, ``last`` points at a complete one, a ``last.ckpt`` is whole;
then the rerun (``--ckpt_path last``, the same merge, the same pipeline) cleans what the kill left and ends
exactly where an uninterrupted run ends (adapters equal to 1e-6, the same results table). The runs are forked
children of this process (``tests/fault_injection.py``), so the module takes seconds, not minutes.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from fault_injection import (
    KILLED,
    assert_same_weights,
    check_snapshot_root,
    kill_self,
    leftovers,
    run_forked,
    seconds,
    small_pipeline,
    snapshot_weights,
    timed,
)
from merge_factories import load_base, make_lora

from adamergex_pl.cli import main
from callbacks.run_checkpoint import checkpoint_problem

SEED = 17
FIT_TRIALS, MERGE_TRIALS, PIPELINE_TRIALS = 6, 4, 2
CONFIG = str(REPO_ROOT / "configs/tiny/task_lora.yaml")


def fit_args(root: Path, *extra: str) -> list[str]:
    """The tiny LoRA fit (2 epochs of 9 steps, last.ckpt every 4 steps and at each epoch end) into ``root``."""
    return ["fit", "--config", CONFIG, "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar",
            "false", "--data.init_args.max_val_samples", "4", *extra]  # fmt: skip


def resume(root: Path) -> int:
    """Rerun the fit after a kill: from ``last.ckpt`` when there is one, else from scratch."""
    extra = ["--ckpt_path", "last"] if (root / "checkpoints/last.ckpt").is_file() else []
    return run_forked(lambda: main(fit_args(root, *extra)))


def checkpoint_step(root: Path) -> int | None:
    """The global step of ``last.ckpt`` (checked whole first), ``None`` without one."""
    last = root / "checkpoints/last.ckpt"
    if not last.exists():
        return None
    assert checkpoint_problem(last, thorough=True) is None, last
    return int(torch.load(last, weights_only=False)["global_step"])


def timed_fit(root: Path, kill_in_training: float | None = None):
    """A child that runs the fit and records when training starts and ends (``<root>.times``); with
    ``kill_in_training`` it kills itself that many seconds after training started."""

    def child() -> int:
        from adamergex_pl.training.adapter_module import AdapterModule

        times = root.with_name(root.name + ".times")
        start, end = AdapterModule.on_train_start, AdapterModule.on_train_end

        def on_train_start(module) -> None:
            start(module)
            times.write_text(f"{time.monotonic()}\n")
            if kill_in_training is not None:
                threading.Timer(kill_in_training, kill_self).start()

        def on_train_end(module) -> None:
            end(module)
            with times.open("a") as handle:
                handle.write(f"{time.monotonic()}\n")

        AdapterModule.on_train_start, AdapterModule.on_train_end = on_train_start, on_train_end
        return main(fit_args(root))

    return child


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted fit: its snapshots, and how long a warm one takes from start to end and from the
    start of training to its end (the first one builds caches)."""
    for name in ("straight", "warm"):
        root = tmp_path_factory.mktemp(name) / "run"
        assert run_forked(timed(timed_fit(root), root.with_name("total"))) == 0
    began, ended = map(float, root.with_name("run.times").read_text().split())
    return snapshot_weights(root / "snapshots"), seconds(root.with_name("total")), ended - began


@pytest.fixture(scope="module")
def base(tiny_llama_path):
    return lambda: load_base(tiny_llama_path)


def _after_kill(root: Path, base, straight_weights, what: str) -> None:
    """The invariants of a killed fit, then the rerun that must end exactly as the uninterrupted fit."""
    check_snapshot_root(root / "snapshots", base)
    step = checkpoint_step(root)
    if step is None and (root / "checkpoints").exists():  # nothing to resume: one clear refusal
        assert run_forked(lambda: main(fit_args(root, "--ckpt_path", "last"))) == 2
    assert resume(root) == 0, what
    assert leftovers(root) == [], what
    assert check_snapshot_root(root / "snapshots", base) == ["epoch=0", "epoch=1"], what
    assert (root / "snapshots/last").resolve().name == "epoch=1"
    assert_same_weights(snapshot_weights(root / "snapshots"), straight_weights, what)


def test_a_fit_killed_at_random_moments_resumes_exactly(straight, base, tmp_path):
    weights, total, training = straight
    rng, outcomes = random.Random(SEED), Counter()
    for trial in range(FIT_TRIALS):
        root = tmp_path / f"trial{trial}"
        if trial < 2:  # a moment of the whole run: start-up (parsing, loading the base), training or the end
            moment = f"{rng.uniform(0.0, 1.0) * total:.2f} s after the start"
            code = run_forked(timed_fit(root), kill_after=float(moment.split()[0]))
        else:  # a moment of training: steps, validation, checkpoint and snapshot writes
            moment = f"{rng.uniform(0.0, 1.0) * training:.2f} s into training"
            code = run_forked(timed_fit(root, kill_in_training=float(moment.split()[0])))
        assert code in (0, KILLED)
        step = checkpoint_step(root)
        outcomes["finished" if code == 0 else f"killed, last.ckpt at step {step}"] += 1
        print(
            f"fit trial {trial}: kill {moment}: {'finished first' if code == 0 else f'killed at step {step}'}"
        )
        _after_kill(root, base, weights, f"trial {trial}")
    print(f"fit trials ({total:.1f} s each, {training:.1f} s of training): {dict(sorted(outcomes.items()))}")
    assert sum(n for outcome, n in outcomes.items() if outcome.startswith("killed")) >= FIT_TRIALS - 2, (
        outcomes
    )


def test_a_kill_in_the_middle_of_a_checkpoint_write_keeps_the_previous_checkpoint(straight, base, tmp_path):
    root = tmp_path / "run"

    def fit_dying_in_its_second_checkpoint_write() -> int:
        real, files = os.fsync, []

        def fsync(fd: int) -> None:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                files.append(fd)
                if len(files) == 2:  # the step-8 checkpoint: half of it is on disk
                    os.ftruncate(fd, os.fstat(fd).st_size // 2)
                    kill_self()
            real(fd)

        os.fsync = fsync
        return main(fit_args(root))

    assert run_forked(fit_dying_in_its_second_checkpoint_write) == KILLED
    assert checkpoint_step(root) == 4  # the whole step-4 checkpoint, not half of the step-8 one
    assert [Path(p).name.startswith(".last.ckpt.tmp-") for p in leftovers(root)] == [True]
    _after_kill(root, base, straight[0], "killed mid checkpoint write")


def test_a_kill_in_the_middle_of_a_snapshot_write_leaves_only_complete_snapshots(straight, base, tmp_path):
    root = tmp_path / "run"

    def fit_dying_before_its_first_snapshot_is_renamed() -> int:
        import callbacks.adapter_snapshot as module

        module.replace_dir = lambda new, target: kill_self()
        return main(fit_args(root))

    assert run_forked(fit_dying_before_its_first_snapshot_is_renamed) == KILLED
    assert check_snapshot_root(root / "snapshots", base) == [] and not (root / "snapshots/last").exists()
    assert [p.split("/")[-1][: len(".tmp-epoch=0")] for p in leftovers(root)] == [".tmp-epoch=0"]
    _after_kill(root, base, straight[0], "killed mid snapshot write")


# ---------------------------------------------------------------------------------------------------- merge
@pytest.fixture(scope="module")
def adapters(tiny_llama_path):
    return [make_lora(tiny_llama_path, seed=seed, r=4, lora_alpha=8) for seed in (81, 82, 83)]


def merge(adapters, out: Path, *extra: str) -> int:
    task, src, tgt = adapters
    args = [
        "merge",
        "--task_src",
        str(task),
        "--ref_src",
        str(src),
        "--ref_tgt",
        str(tgt),
        "--out_dir",
        str(out),
    ]
    return main([*args, "--scale", "0.5", *extra])


def test_a_merge_killed_at_any_moment_leaves_the_old_output_or_none_and_the_rerun_cleans_up(
    adapters, tmp_path
):
    reference = tmp_path / "reference"
    for _ in range(2):  # the second one is warm
        shutil.rmtree(reference, ignore_errors=True)
        assert run_forked(timed(lambda: merge(adapters, reference), tmp_path / "took")) == 0
    duration, expected = seconds(tmp_path / "took"), snapshot_weights_of(reference)
    shutil.rmtree(reference)
    (tmp_path / "took").unlink()
    out = tmp_path / "merged"

    def dying_in(patch) -> int:
        patch()
        return merge(adapters, out, "--overwrite", "true")

    def in_the_weights_write():
        from adamergex_pl.merging.adapters import AdapterWeights

        real = AdapterWeights.save
        AdapterWeights.save = lambda self, directory: (real(self, directory), kill_self())

    def between_the_two_renames():  # the old output is moved aside, the new one not yet in place
        real = Path.rename
        Path.rename = lambda self, target: (real(self, target), kill_self() if self == out else None)[0]

    assert run_forked(lambda: dying_in(in_the_weights_write)) == KILLED
    assert not out.exists() and len(leftovers(tmp_path)) == 1  # the staging folder, nothing else
    assert run_forked(lambda: merge(adapters, out)) == 0 and leftovers(tmp_path) == []
    assert run_forked(lambda: dying_in(between_the_two_renames)) == KILLED
    assert not out.exists() and len(leftovers(tmp_path)) == 2  # the staging folder and the old output
    assert run_forked(lambda: merge(adapters, out)) == 2  # the old output is put back, and not overwritten
    assert leftovers(tmp_path) == []
    assert_same_weights({"out": snapshot_weights_of(out)}, {"out": expected}, "the restored output")
    rng, outcomes = random.Random(SEED), Counter()
    for _ in range(MERGE_TRIALS):  # random moments of a whole `adamergex merge --overwrite`
        code = run_forked(
            lambda: merge(adapters, out, "--overwrite", "true"), kill_after=rng.uniform(0.1, 1.0) * duration
        )
        outcomes["finished" if code == 0 else "killed"] += 1
        assert out.is_dir() or not out.exists()
        assert (
            run_forked(lambda: merge(adapters, out, "--overwrite", "true")) == 0 and leftovers(tmp_path) == []
        )
        assert_same_weights({"out": snapshot_weights_of(out)}, {"out": expected}, "merge")
    print(f"merge trials ({duration:.3f} s each): {dict(outcomes)}")
    assert outcomes["killed"] >= 1, outcomes


def snapshot_weights_of(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(directory / "adapter_model.safetensors")


# ------------------------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def pipeline_config(tmp_path_factory) -> Path:
    return small_pipeline(tmp_path_factory.mktemp("pipeline") / "pipeline.yaml")


def run_pipeline(config: Path, cwd: Path, kill_after: float | None = None) -> int:
    def child() -> int:
        os.chdir(cwd)
        return main(["pipeline", "--config", str(config)])

    cwd.mkdir(parents=True, exist_ok=True)
    return run_forked(child, kill_after=kill_after)


@pytest.fixture(scope="module")
def pipeline_straight(pipeline_config, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("pipeline-straight")
    start = time.monotonic()
    assert run_pipeline(pipeline_config, cwd) == 0
    return (
        cwd / "runs/tiny/pipeline/results.md"
    ).read_text(), time.monotonic() - start  # timed with the fork


def test_a_pipeline_killed_at_random_moments_reruns_to_the_same_table(
    pipeline_config, pipeline_straight, tmp_path
):
    table, duration = pipeline_straight
    rng, outcomes = random.Random(SEED), Counter()
    for trial in range(PIPELINE_TRIALS):
        cwd = tmp_path / f"trial{trial}"
        code = run_pipeline(pipeline_config, cwd, kill_after=rng.uniform(0.2, 0.9) * duration)
        outcomes["finished" if code == 0 else "killed"] += 1
        for snapshots in (cwd / "runs/tiny/pipeline").glob("*/snapshots"):
            assert all((p / "adapter_model.safetensors").is_file() for p in snapshots.glob("epoch=*"))
        assert run_pipeline(pipeline_config, cwd) == 0
        assert (cwd / "runs/tiny/pipeline/results.md").read_text() == table, f"trial {trial}"
        assert leftovers(cwd / "runs") == []
    print(f"pipeline trials ({duration:.1f} s each): {dict(outcomes)}")
    assert outcomes["killed"] >= 1


# ----------------------------------------------------------------------------------------------- full disk
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs; ``fill(leave)`` leaves only ``leave`` bytes free. Needs root (the CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a small tmpfs, which only root can mount")
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("mounting a tmpfs failed (no CAP_SYS_ADMIN in this container)")

    def fill(leave: int) -> Path:
        info = os.statvfs(mount)
        filler = mount / "filler"
        filler.write_bytes(b"\0" * max(0, info.f_bavail * info.f_frsize - leave))
        return filler

    yield mount, fill
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_line_leaves_no_truncated_checkpoint_and_the_rerun_works(
    small_disk, straight, base, adapters, capfd
):
    mount, fill = small_disk
    filler, root = fill(60_000), mount / "run"  # room for the logs, not for the first checkpoint
    assert run_forked(lambda: main(fit_args(root))) == 2
    err = capfd.readouterr().err
    assert err.count("adamergex: error:") == 1 and "Traceback" not in err, err
    assert f"cannot write checkpoint '{root}/checkpoints/last.ckpt': no space left on the device" in err
    assert not (root / "checkpoints/last.ckpt").exists() and leftovers(mount) == []
    assert run_forked(lambda: merge(adapters, mount / "merged")) == 2
    assert "cannot write merged adapter" in capfd.readouterr().err and leftovers(mount) == []
    assert not (mount / "merged").exists()
    filler.unlink()  # space again: the rerun starts cleanly (nothing was half-written)
    assert resume(root) == 0
    assert_same_weights(snapshot_weights(root / "snapshots"), straight[0], "after a full disk")


def test_a_pipeline_on_a_full_disk_stops_with_one_line_and_its_rerun_gives_the_table(
    small_disk, pipeline_config, pipeline_straight, capfd
):
    mount, fill = small_disk
    filler = fill(150_000)
    assert run_pipeline(pipeline_config, mount) == 2
    err = capfd.readouterr().err
    assert err.count("adamergex: error:") == 1 and "no space left on the device" in err, err
    for checkpoint in mount.rglob("*.ckpt"):
        assert checkpoint_problem(checkpoint, thorough=True) is None, checkpoint
    filler.unlink()
    assert run_pipeline(pipeline_config, mount) == 0
    assert (mount / "runs/tiny/pipeline/results.md").read_text() == pipeline_straight[0]
    shutil.rmtree(mount / "runs")
