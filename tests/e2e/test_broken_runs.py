"""A broken run is never reported as a good one: a diverged fit stops with one line and writes nothing of the
diverged adapter, an evaluation that saw NaN says so instead of printing loss 0 / perplexity 1, and two
evaluations never share one results folder."""

from __future__ import annotations

import json
import re

import pytest
import torch
from conftest import REPO_ROOT
from lightning.pytorch import Callback, Trainer
from merge_factories import make_lora
from torch import nn

from adamergex_pl import AdapterModule
from adamergex_pl.cli import main
from adamergex_pl.evaluation.language_modeling import LanguageModelingEvaluator
from adamergex_pl.metrics.languages import normalize_language
from adamergex_pl.results.tables import format_value
from callbacks import AdapterSnapshot, RunCheckpoint
from data_modules import (
    CrossInDataModule,
    CrossXDataModule,
    DataSource,
    InstructionDataModule,
    ReferenceLMDataModule,
)

CONFIG = str(REPO_ROOT / "configs/tiny/task_lora.yaml")


def test_a_diverged_fit_stops_at_once_with_one_line_and_writes_no_snapshot(tmp_path, capfd):
    root = tmp_path / "run"
    args = ["fit", "--config", CONFIG, "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar",
            "false", "--data.init_args.max_val_samples", "4", "--model.init_args.learning_rate", "1e30"]  # fmt: skip
    assert main(args) == 2
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("adamergex: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(r"the fit diverged at training step \d+: train/loss is nan; no snapshot", lines[0]), (
        lines
    )
    assert "learning_rate=1e+30 is too high; lower it (e.g. 0.0002" in lines[0]
    assert not list(root.glob("snapshots/epoch=*")) and not (root / "checkpoints/last.ckpt").exists()
    # it trained: its logs stay, the curves that show the divergence (a refusal before any step removes them)
    assert list(root.glob("tensorboard/version_0/events.out.tfevents.*")) and list(
        root.glob("*/version_0/metrics.csv")
    )


class PoisonAdapter(Callback):
    """Sets one adapter entry to NaN after optimizer step ``step`` (``on_train_batch_end``, before the run's
    checkpoint of that step) or at the end of epoch 0 (before its snapshot) with ``step=None``."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def poison(self, module) -> None:
        with torch.no_grad():
            next(p for p in module.parameters() if p.requires_grad).view(-1)[0] = float("nan")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self.poison(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.step is None:
            self.poison(pl_module)


@pytest.mark.parametrize("step", [3, None], ids=["checkpoint", "snapshot"])
def test_a_non_finite_adapter_is_never_written(step, tmp_path):
    module = AdapterModule("builtin:tiny-llama", lora_r=4, lora_dropout=0.0)
    data = InstructionDataModule(
        train=DataSource("builtin:tiny/add_en.jsonl"),
        tokenizer="builtin:tiny-llama",
        max_length=48,
        batch_size=16,
    )
    snapshot = AdapterSnapshot(dirpath=str(tmp_path / "snapshots"))
    checkpoint = RunCheckpoint(dirpath=str(tmp_path / "checkpoints"), every_n_train_steps=3)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[PoisonAdapter(step), snapshot, checkpoint],
    )
    with pytest.raises(
        ValueError, match=r"the fit diverged at training step \d+: 1 of \d+ entries of the adapter"
    ):
        trainer.fit(module, datamodule=data)
    assert not list(tmp_path.glob("snapshots/epoch=*"))
    if step is not None:  # the poisoned step's checkpoint is refused: no checkpoint at all before it
        assert not (tmp_path / "checkpoints/last.ckpt").exists()


class NaNModel(nn.Module):
    """A causal LM whose logits are NaN (a diverged adapter's)."""

    def forward(self, input_ids, use_cache=False, **kwargs):
        return type("Output", (), {"logits": torch.full((*input_ids.shape, 8), float("nan"))})


def test_an_evaluation_that_saw_nan_reports_nan_not_a_perfect_loss():
    evaluator = LanguageModelingEvaluator(["en"])
    batch = {
        "input_ids": torch.tensor([[1, 2, 3, 4]]),
        "attention_mask": torch.ones(1, 4, dtype=torch.long),
        "labels": torch.tensor([[-100, 2, 3, 4]]),
        "index": torch.tensor([0]),
    }
    evaluator.update(NaNModel(), batch, "en")
    results = evaluator.compute()
    assert [format_value(float(results[key])) for key in ("en/loss", "en/perplexity", "loss")] == ["nan"] * 3


def test_a_second_evaluation_into_a_results_folder_is_refused_unless_it_overwrites(
    tiny_llama_path, tmp_path, capfd
):
    task, ref_en, ref_es = (make_lora(tiny_llama_path, seed=s, r=4, lora_alpha=8) for s in (4, 5, 6))

    def validate(scale: str, *extra: str) -> int:
        return main([
            "validate", "--config", str(REPO_ROOT / "configs/merge/tiny_lora.yaml"), "--trainer.default_root_dir",
            str(tmp_path), "--model.init_args.task_src", str(task), "--model.init_args.reference_adapters",
            json.dumps({"en": str(ref_en), "es": str(ref_es)}), "--model.init_args.methods", "[zero_shot, adamergex]",
            "--model.init_args.scales", f"[{scale}]", "--data.init_args.max_val_samples", "4", *extra,
        ])  # fmt: skip

    results = tmp_path / "merge_results"
    assert validate("0.5") == 0
    first = (results / "results.json").read_text()
    first_config = (tmp_path / "config.yaml").read_text()  # --trainer.logger false: the run's config is here
    capfd.readouterr()
    assert validate("1.0") == 2
    assert (
        tmp_path / "config.yaml"
    ).read_text() == first_config  # the refused run's config is not left over it
    err = capfd.readouterr().err
    assert err.count("adamergex: error:") == 1 and "Traceback" not in err, err
    assert f"adamergex: error: {results} already holds the results of an evaluation run (results.csv, " in err
    assert "set overwrite: true on the MergeModule to replace them" in err
    assert (results / "results.json").read_text() == first  # untouched
    assert validate("1.0", "--model.init_args.overwrite", "true") == 0
    assert {row["scale"] for row in json.loads((results / "results.json").read_text())["rows"]} <= {None, 1.0}


def test_resuming_with_max_epochs_below_the_checkpoints_epoch_is_one_line(tmp_path, capfd):
    args = ["fit", "--config", CONFIG, "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar",
            "false", "--data.init_args.max_val_samples", "4", "--trainer.limit_train_batches", "2"]  # fmt: skip
    assert main([*args, "--trainer.max_epochs", "3"]) == 0
    capfd.readouterr()
    for max_epochs in ("1", "2"):  # 1: Lightning's traceback; 2: it would stop at once and exit 0
        assert main([*args, "--trainer.max_epochs", max_epochs, "--ckpt_path", "last"]) == 2
        err = capfd.readouterr().err
        assert err.count("adamergex: error:") == 1 and "Traceback" not in err, err
        assert (
            f"adamergex: error: --trainer.max_epochs {max_epochs} is below the 3 epochs checkpoint "
            f"{tmp_path}/checkpoints/last.ckpt has trained, where this fit would resume; give a "
            "--trainer.max_epochs above 3 to train it further" in err
        ), err
    assert [p.name for p in (tmp_path / "lightning_logs").iterdir()] == ["version_0"]  # no leftover version_1


def test_a_mid_epoch_checkpoint_without_the_datamodules_state_is_refused(tmp_path, capfd):
    args = ["fit", "--config", CONFIG, "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar",
            "false", "--data.init_args.max_val_samples", "4"]  # fmt: skip
    assert main([*args, "--trainer.max_steps", "4"]) == 0  # last.ckpt at step 4 of epoch 0's 9
    last = tmp_path / "checkpoints/last.ckpt"
    checkpoint = torch.load(last, weights_only=False)
    del checkpoint["InstructionDataModule"]  # as a DataModule without state (or another one) leaves it
    torch.save(checkpoint, last)
    capfd.readouterr()
    assert main([*args, "--ckpt_path", "last"]) == 2
    err = capfd.readouterr().err
    assert err.count("adamergex: error:") == 1 and "Traceback" not in err, err
    assert (
        f"adamergex: error: checkpoint {last} was saved in the middle of epoch 0 (after 4 batches) but holds no "
        "state of InstructionDataModule, so the fit cannot go on with the batches it had not trained on"
        in err
    ), err


@pytest.mark.parametrize("module", [InstructionDataModule, ReferenceLMDataModule])
def test_every_datamodule_refuses_a_language_the_task_suite_does_not_know(module):
    with pytest.raises(
        ValueError, match=rf"^{module.__name__} val source x.jsonl: language='xx' is not a known"
    ):
        module(train=DataSource("x.jsonl"), val=[DataSource("x.jsonl", language="xx")], tokenizer="t")
    with pytest.raises(ValueError, match=rf"^{module.__name__} language: language='English!' is not a known"):
        module(train=DataSource("x.jsonl"), language="English!", tokenizer="t")


@pytest.mark.parametrize(
    ("module", "kwargs", "where"),
    [
        (CrossXDataModule, {"languages": ["en", "xx"]}, "languages"),
        (CrossInDataModule, {"variant": "x2x", "languages": ["zh", "xx"]}, "languages"),
        (
            CrossInDataModule,
            {
                "variant": "x2x",
                "parallel": [DataSource("en.jsonl", language="en"), DataSource("x.jsonl", language="xx")],
            },
            "parallel source x.jsonl",
        ),
    ],
)
def test_crossin_and_crossx_refuse_a_language_the_others_do_not_know(module, kwargs, where):
    kwargs.setdefault(
        "parallel", [DataSource("en.jsonl", language="en"), DataSource("zh.jsonl", language="zh")]
    )
    if module is CrossXDataModule:
        del kwargs["parallel"]
    with pytest.raises(ValueError) as unknown:
        normalize_language("xx")
    with pytest.raises(ValueError) as refused:
        module(tokenizer="t", **kwargs)
    # the form every DataModule gives (data_modules/base.py: check_languages), e.g. InstructionDataModule's
    assert str(refused.value) == f"{module.__name__} {where}: {unknown.value}"
    with pytest.raises(ValueError) as instruction:
        InstructionDataModule(train=DataSource("x.jsonl"), language="xx", tokenizer="t")
    assert str(instruction.value) == f"InstructionDataModule language: {unknown.value}"


def test_an_unknown_val_language_is_one_line_through_the_cli(tmp_path, capfd):
    val = '[{path: "builtin:tiny/add_es.jsonl", language: xx}]'
    args = [
        "fit",
        "--config",
        CONFIG,
        "--trainer.default_root_dir",
        str(tmp_path),
        "--data.init_args.val",
        val,
    ]
    assert main(args) == 2
    err = capfd.readouterr().err
    assert err.count("adamergex: error:") == 1 and "Traceback" not in err, err
    assert (
        "adamergex: error: InstructionDataModule val source builtin:tiny/add_es.jsonl: language='xx' is not"
        in err
    )


@pytest.mark.parametrize("command", ["fit", "validate"])
def test_a_read_only_default_root_dir_without_a_logger_is_one_line(command, read_only_dir, tiny_llama_path):
    """``read_only_dir`` (conftest): ``chmod 555``, or for root a read-only tmpfs."""
    from conftest import run_adamergex

    if command == "fit":
        args = ["fit", "--config", CONFIG, "--data.init_args.max_val_samples", "4"]
    else:
        task, ref_en, ref_es = (make_lora(tiny_llama_path, seed=s, r=4, lora_alpha=8) for s in (4, 5, 6))
        args = [
            "validate", "--config", str(REPO_ROOT / "configs/merge/tiny_lora.yaml"), "--model.init_args.task_src",
            str(task), "--model.init_args.reference_adapters", json.dumps({"en": str(ref_en), "es": str(ref_es)}),
        ]  # fmt: skip
    args += ["--trainer.default_root_dir", str(read_only_dir), "--trainer.logger", "false"]
    done = run_adamergex(*args, cwd=read_only_dir.parent, check=False)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert errors == [
        f"adamergex: error: cannot write config.yaml in {str(read_only_dir)!r}: the folder is not writable; choose "
        "a writable --trainer.default_root_dir (or fix the folder's permissions)"
    ], done.stderr
    assert "Traceback" not in done.stderr and list(read_only_dir.iterdir()) == []


def test_a_validate_refused_after_start_up_leaves_no_log_folder(tiny_llama_path, tmp_path, capfd):
    """The refusal (partial target modules) comes when the first language's merges are built, after the logger
    made its folders and wrote its event file: they go, and so does the default_root_dir the run created."""
    task, ref_en = (make_lora(tiny_llama_path, seed=s, r=4, lora_alpha=8) for s in (4, 5))
    ref_es = make_lora(tiny_llama_path, seed=6, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    root = tmp_path / "runs/merge"
    args = [
        "validate", "--config", str(REPO_ROOT / "configs/merge/tiny_lora.yaml"),
        "--trainer.default_root_dir", str(root),
        "--trainer.logger", "true", "--model.init_args.task_src", str(task), "--model.init_args.reference_adapters",
        json.dumps({"en": str(ref_en), "es": str(ref_es)}), "--data.init_args.max_val_samples", "4",
    ]  # fmt: skip
    assert main(args) == 2
    err = capfd.readouterr().err
    assert err.count("adamergex: error:") == 1 and "adamergex: error: allow_partial_modules=false" in err, err
    assert list(tmp_path.iterdir()) == []
