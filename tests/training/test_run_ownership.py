"""A run's outputs belong to that run: resuming another run's checkpoint never touches that run, a checkpoint
of another adapter is refused naming both, a fresh fit never mixes with an earlier run, checkpoints come at a
step interval and every epoch end, and bad checkpoint paths or output folders are one line, exit code 2."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from lightning.pytorch import Callback, Trainer

from adamergex_pl import AdapterModule
from adamergex_pl.cli import main
from callbacks import AdapterSnapshot, RunCheckpoint
from data_modules import DataSource, InstructionDataModule

CONFIG = str(REPO_ROOT / "configs/tiny/task_lora.yaml")
QUIET = ("--trainer.enable_progress_bar", "false", "--data.init_args.max_val_samples", "4")


def fit(root: Path, *extra: str) -> int:
    return main(["fit", "--config", CONFIG, "--trainer.default_root_dir", str(root), *QUIET, *extra])


def tree(root: Path) -> dict[str, str]:
    """Every file and link under ``root`` with its content hash (or link target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(root))] = f"-> {os.readlink(path)}"
        elif path.is_file():
            found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("adamergex: error:") == 1 and "Traceback" not in err, err
    return err[err.index("adamergex: error:") :].strip()


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """Run A: two epochs, snapshots pruned to the newest one (keep_last: 1)."""
    root = tmp_path_factory.mktemp("run_a")
    callbacks = root.with_name(root.name + "-callbacks.yaml")
    callbacks.write_text(
        "trainer:\n  callbacks:\n    - {class_path: callbacks.AdapterSnapshot, init_args: {keep_last: 1}}\n"
        "    - {class_path: callbacks.RunCheckpoint, init_args: {every_n_train_steps: 4}}\n"
    )
    assert fit(root, "--config", str(callbacks)) == 0
    assert sorted(p.name for p in (root / "snapshots").iterdir()) == ["epoch=1", "last"]
    return root, callbacks


def test_resuming_another_runs_checkpoint_writes_and_prunes_only_the_current_run(run_a, tmp_path):
    a, callbacks = run_a
    before = tree(a)
    b = tmp_path / "run_b"
    ckpt = str(a / "checkpoints/last.ckpt")
    assert fit(b, "--config", str(callbacks), "--ckpt_path", ckpt, "--trainer.max_epochs", "4") == 0
    assert tree(a) == before, "run A was written to, or pruned"
    assert sorted(p.name for p in (b / "snapshots").iterdir()) == ["epoch=3", "last"]
    assert torch.load(b / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 36


@pytest.mark.parametrize(
    ("override", "ours"),
    [
        (("--model.init_args.adapter_type", "ia3"), "an ia3 adapter on down_proj, k_proj, v_proj"),
        (
            ("--model.init_args.lora_r", "2"),
            "a lora adapter of rank 2 on down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj",
        ),
        (
            ("--model.init_args.target_modules", "[q_proj, v_proj]"),
            "a lora adapter of rank 4 on q_proj, v_proj",
        ),
    ],
)
def test_a_checkpoint_of_another_adapter_is_refused_naming_both(run_a, tmp_path, capsys, override, ours):
    a, _ = run_a
    root = tmp_path / "other"
    assert fit(root, "--ckpt_path", str(a / "checkpoints/last.ckpt"), *override) == 2
    err = one_error(capsys)
    theirs = "a lora adapter of rank 4 on down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj"
    assert f"holds {theirs}, but this config trains {ours};" in err, err
    assert not (root / "snapshots").exists() and not (root / "checkpoints").exists()


def test_a_fresh_fit_over_an_earlier_run_is_refused_unless_overwrite(run_a, tmp_path, capsys):
    a, _ = run_a
    root = tmp_path / "run"
    for name in ("snapshots", "checkpoints"):  # a copy of run A (symlinks kept)
        shutil.copytree(a / name, root / name, symlinks=True)
    before = tree(root)
    assert fit(root) == 2
    assert (
        f"{root}/snapshots already holds the snapshots of a run (epoch=1); resume it with --ckpt_path last"
        in (one_error(capsys))
    )
    assert tree(root) == before, "a refused fit wrote something (logs included)"
    shutil.rmtree(root / "snapshots")
    assert fit(root) == 2  # the checkpoints alone are a run too
    assert f"{root}/checkpoints already holds the checkpoints of a run (last.ckpt)" in one_error(capsys)
    overwrite = tmp_path / "overwrite.yaml"
    overwrite.write_text(
        "trainer:\n  callbacks:\n    - {class_path: callbacks.AdapterSnapshot, init_args: {overwrite: true}}\n"
        "    - {class_path: callbacks.RunCheckpoint, init_args: {every_n_train_steps: 4, overwrite: true}}\n"
    )
    shutil.copytree(a / "snapshots", root / "snapshots", symlinks=True)
    assert fit(root, "--config", str(overwrite), "--trainer.max_epochs", "1") == 0
    assert sorted(p.name for p in (root / "snapshots").iterdir()) == ["epoch=0", "last"]  # nothing of run A
    assert torch.load(root / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 9


def test_checkpoints_come_at_the_step_interval_and_at_every_epoch_end(tmp_path):
    class Probe(Callback):
        """The global step of last.ckpt before every batch."""

        def __init__(self):
            self.seen = []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            last = tmp_path / "checkpoints/last.ckpt"
            self.seen.append(torch.load(last, weights_only=False)["global_step"] if last.exists() else None)

    probe = Probe()
    data = InstructionDataModule(
        train=DataSource("builtin:tiny/add_en.jsonl"),
        tokenizer="builtin:tiny-llama",
        batch_size=8,
        max_length=48,
    )
    trainer = Trainer(
        accelerator="cpu", max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=[AdapterSnapshot(), RunCheckpoint(every_n_train_steps=4), probe],
    )  # fmt: skip
    trainer.fit(AdapterModule("builtin:tiny-llama", lora_r=2), datamodule=data)
    # steps 1-4 see none, then 4 (interval), 8, 9 (the end of epoch 0), 12, 16; the end of fit writes 18
    assert probe.seen == [None] * 4 + [4] * 4 + [8] + [9] * 3 + [12] * 4 + [16] * 2
    assert torch.load(tmp_path / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 18
    with pytest.raises(ValueError, match=r"every_n_train_steps=0\) must be a positive integer"):
        RunCheckpoint(every_n_train_steps=0)


def test_bad_checkpoint_paths_are_one_line(run_a, tmp_path, capsys):
    a, _ = run_a
    truncated, empty = tmp_path / "truncated.ckpt", tmp_path / "empty.ckpt"
    truncated.write_bytes((a / "checkpoints/last.ckpt").read_bytes()[:5000])
    empty.write_bytes(b"")
    root = tmp_path / "fresh"
    assert fit(root, "--ckpt_path", "last") == 2
    assert f"--ckpt_path last: there is no {root}/checkpoints/last.ckpt, so this run has no checkpoint" in (
        one_error(capsys)
    )
    cases = {
        str(tmp_path / "missing.ckpt"): "does not exist; give an existing checkpoint, 'last'",
        str(truncated): "cannot be loaded: it is truncated or not a checkpoint",
        str(empty): "cannot be loaded: it is empty (0 bytes)",
        str(tmp_path): "cannot be loaded: it is a directory, not a checkpoint file",
    }
    for path, expected in cases.items():
        assert fit(root, "--ckpt_path", path) == 2
        assert f"--ckpt_path {path!r} {expected}" in one_error(capsys)
    assert not root.exists()


def test_a_read_only_or_file_default_root_dir_is_one_line(read_only_dir, tmp_path, capsys):
    assert fit(read_only_dir / "run") == 2
    err = one_error(capsys)
    assert f"'{read_only_dir}/run" in err and ("read-only" in err or "permission denied" in err), err
    (tmp_path / "a_file").write_text("x")
    assert fit(tmp_path / "a_file") == 2
    err = one_error(capsys)
    assert f"'{tmp_path}/a_file" in err and "is a file" in err, err
