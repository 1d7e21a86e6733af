"""Fault injection: ``kill -9`` at seeded random events of ``fit`` (a step, a validation batch, a checkpoint or
snapshot write, start-up, the end) and random moments of ``merge`` and ``pipeline``, kills in the
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
import signal
import stat
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from fault_injection import (
    KILLED,
    KillAt,
    assert_same_weights,
    check_snapshot_root,
    kill_self,
    leftovers,
    read_counts,
    run_forked,
    small_pipeline,
    snapshot_weights,
    with_events,
)
from merge_factories import load_base, make_lora

from adamergex_pl.cli import main
from callbacks.run_checkpoint import checkpoint_problem

SEED = 17
MERGE_TRIALS, PIPELINE_PHASES = 4, ("step", "snapshot write")
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


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted fit: its snapshots and how many events of each phase it has (``KillAt``)."""
    root = tmp_path_factory.mktemp("straight") / "run"
    events = root.with_name("events.json")
    assert run_forked(with_events(lambda: main(fit_args(root)), KillAt(), events)) == 0
    return snapshot_weights(root / "snapshots"), read_counts(events)


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


def test_a_fit_killed_at_random_events_resumes_exactly(straight, base, tmp_path):
    weights, counts = straight
    assert set(KillAt.FIT_PHASES) <= set(counts), counts  # every phase happens in a fit: each trial kills
    rng = random.Random(SEED)
    for trial, phase in enumerate(KillAt.FIT_PHASES):  # one trial per phase, at a seeded random event of it
        root, kill = tmp_path / f"trial{trial}", KillAt.chosen(rng, counts, phase)
        assert run_forked(with_events(lambda root=root: main(fit_args(root)), kill)) == KILLED, str(kill)
        print(
            f"fit trial {trial}: killed {kill} of {counts[phase]}, last.ckpt at step {checkpoint_step(root)}"
        )
        _after_kill(root, base, weights, f"trial {trial}: killed {kill}")


@pytest.mark.parametrize(
    ("signum", "sent_after", "stopped_at"),
    [(signal.SIGTERM, 6, 7), (signal.SIGINT, 8, 9)],  # step 9 ends epoch 0: the stop follows the epoch end
    ids=["SIGTERM", "SIGINT"],
)
def test_a_signalled_fit_checkpoints_exits_non_zero_and_resumes_exactly(
    signum, sent_after, stopped_at, straight, base, tmp_path, capfd
):
    root = tmp_path / "run"

    def fit_signalled() -> int:
        from adamergex_pl import AdapterModule

        def on_train_batch_end(module, *args) -> None:  # after the callbacks' hooks of the same step
            if module.trainer.global_step == sent_after:
                os.kill(os.getpid(), signum)

        AdapterModule.on_train_batch_end = on_train_batch_end
        # as in a terminal: a suite started as a background job inherits SIGINT ignored (and a fit rightly
        # leaves an ignored signal alone)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        return main(fit_args(root))

    assert run_forked(fit_signalled) == 128 + signum
    err = capfd.readouterr().err
    assert f"adamergex: fit stopped by {signum.name} at step {stopped_at} (epoch 0); {root}/checkpoints/last.ckpt " \
        "holds it: resume with --ckpt_path last" in err, err  # fmt: skip
    assert "Traceback" not in err and checkpoint_step(root) == stopped_at
    _after_kill(root, base, straight[0], f"stopped by {signum.name}")


def test_a_validate_stopped_by_sigterm_exits_143_not_0(tmp_path, capfd):
    def validate_signalled() -> int:
        from adamergex_pl import AdapterModule

        real = AdapterModule.validation_step

        def validation_step(module, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning stops after this batch (of 2 per language)
            return real(module, *args, **kwargs)

        AdapterModule.validation_step = validation_step
        return main(["validate", "--config", CONFIG, "--trainer.default_root_dir", str(tmp_path)])

    assert run_forked(validate_signalled) == 143
    err = capfd.readouterr().err
    assert "adamergex: stopped by SIGTERM before the run ended" in err and "Traceback" not in err, err


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
    assert [Path(p).name.startswith(".tmp-last.ckpt.") for p in leftovers(root)] == [True]
    _after_kill(root, base, straight[0], "killed mid checkpoint write")


def test_a_kill_in_the_middle_of_a_snapshot_write_leaves_only_complete_snapshots(straight, base, tmp_path):
    root = tmp_path / "run"

    def fit_dying_before_its_first_snapshot_is_renamed() -> int:
        import callbacks.adapter_snapshot as module

        module.publish_dir = lambda staging, target: kill_self()
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
    reference, events = tmp_path / "reference", tmp_path / "events.json"
    assert run_forked(lambda: merge(adapters, reference)) == 0
    assert (
        run_forked(with_events(lambda: merge(adapters, reference, "--overwrite", "true"), KillAt(), events))
        == 0
    )
    counts, expected = read_counts(events), snapshot_weights_of(reference)
    shutil.rmtree(reference)
    events.unlink()
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
    assert set(KillAt.MERGE_PHASES) <= set(counts), counts
    rng = random.Random(SEED)
    for trial in range(MERGE_TRIALS):  # seeded random events of a whole `adamergex merge --overwrite`
        kill = KillAt.chosen(rng, counts, KillAt.MERGE_PHASES[trial % len(KillAt.MERGE_PHASES)])
        assert run_forked(with_events(lambda: merge(adapters, out, "--overwrite", "true"), kill)) == KILLED, (
            str(kill)
        )
        print(f"merge trial {trial}: killed {kill} of {counts[kill.target[0]]}")
        assert out.is_dir() or not out.exists()
        assert (
            run_forked(lambda: merge(adapters, out, "--overwrite", "true")) == 0 and leftovers(tmp_path) == []
        ), kill
        assert_same_weights({"out": snapshot_weights_of(out)}, {"out": expected}, f"merge killed {kill}")


def snapshot_weights_of(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(directory / "adapter_model.safetensors")


# ------------------------------------------------------------------------------------------------- pipeline
@pytest.fixture(scope="module")
def pipeline_config(tmp_path_factory) -> Path:
    return small_pipeline(tmp_path_factory.mktemp("pipeline") / "pipeline.yaml")


def run_pipeline(config: Path, cwd: Path, kill: KillAt | None = None, counts: Path | None = None) -> int:
    def child() -> int:
        os.chdir(cwd)
        return main(["pipeline", "--config", str(config)])

    cwd.mkdir(parents=True, exist_ok=True)
    return run_forked(child if kill is None else with_events(child, kill, counts))


@pytest.fixture(scope="module")
def pipeline_straight(pipeline_config, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("pipeline-straight")
    assert run_pipeline(pipeline_config, cwd, KillAt(), cwd / "events.json") == 0
    return (cwd / "runs/tiny/pipeline/results.md").read_text(), read_counts(cwd / "events.json")


def test_a_pipeline_killed_at_random_moments_reruns_to_the_same_table(
    pipeline_config, pipeline_straight, tmp_path
):
    table, counts = pipeline_straight
    rng = random.Random(SEED)
    for trial, phase in enumerate(PIPELINE_PHASES):  # a seeded random event among all the pipeline's fits
        cwd, kill = tmp_path / f"trial{trial}", KillAt.chosen(rng, counts, phase)
        assert run_pipeline(pipeline_config, cwd, kill) == KILLED, str(kill)
        print(f"pipeline trial {trial}: killed {kill} of {counts[phase]}")
        for snapshots in (cwd / "runs/tiny/pipeline").glob("*/snapshots"):
            assert all((p / "adapter_model.safetensors").is_file() for p in snapshots.glob("epoch=*"))
        assert run_pipeline(pipeline_config, cwd) == 0
        assert (cwd / "runs/tiny/pipeline/results.md").read_text() == table, f"trial {trial}"
        assert leftovers(cwd / "runs") == []


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
