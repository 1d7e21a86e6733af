"""With a selection split, MergeModule evaluates every ``t`` on the selection items and only the chosen ``t`` on
the test items: its results equal those of evaluating every ``t`` on every item, for less work."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch
from lightning.pytorch import Trainer
from merge_factories import make_lora

from adamergex_pl import MergeModule
from adamergex_pl.merging.methods import merge_method_names
from adamergex_pl.results.selection import reported
from data_modules import DataSource, InstructionDataModule

SCALES = [0.25, 1.0, 2.0]


def _data():
    return InstructionDataModule(
        val=[DataSource(f"builtin:tiny/add_{lang}.jsonl", language=lang) for lang in ("en", "es")],
        tokenizer="builtin:tiny-llama", max_val_samples=12, batch_size=4, max_length=48,
    )  # fmt: skip


def _validate(
    adapters, out, monkeypatch, evaluate_everything: bool, verbose: bool = False, **trainer_options
):
    """Validate once; returns the results folder and the items each variant was run on, per language."""
    task, ref_en, ref_es = adapters
    module = MergeModule(
        "builtin:tiny-llama", str(task), {"en": str(ref_en), "es": str(ref_es)},
        methods=["zero_shot", "arimerge", "adamergex"], scales=SCALES, selection_fraction=0.5,
        selection_metric="loss", results_dir=str(out), bootstrap_resamples=200,
    )  # fmt: skip
    seen: Counter = Counter()
    run = MergeModule._run_variant

    def counting(self, variant, batch, language):
        seen[(variant.label, language)] += len(batch["index"])
        run(self, variant, batch, language)

    with monkeypatch.context() as patch:
        patch.setattr(MergeModule, "_run_variant", counting)
        if evaluate_everything:  # the reference: no selection items first, every t on every item
            patch.setattr(MergeModule, "_hold_out_selection", lambda self, datamodule, stage: None)
        trainer = Trainer(
            accelerator="cpu",
            logger=False,
            enable_progress_bar=False,
            default_root_dir=out,
            **trainer_options,
        )
        trainer.validate(module, datamodule=_data(), verbose=verbose)
    return out, seen


def test_only_the_chosen_t_runs_on_test_items_and_the_results_are_those_of_evaluating_every_t(
    tiny_llama_path, tmp_path, monkeypatch
):
    adapters = [make_lora(tiny_llama_path, seed=s, r=4, lora_alpha=8, std=0.4) for s in (11, 12, 13)]
    pruned, pruned_seen = _validate(adapters, tmp_path / "pruned", monkeypatch, evaluate_everything=False)
    full, full_seen = _validate(adapters, tmp_path / "full", monkeypatch, evaluate_everything=True)

    assert (pruned / "results.md").read_text() == (full / "results.md").read_text()
    pruned_doc, full_doc = (json.loads((d / "results.json").read_text()) for d in (pruned, full))
    assert pruned_doc["rows"] == full_doc["rows"]
    assert (pruned / "results.csv").read_text() == (full / "results.csv").read_text()

    # the reference evaluated all 3 values of t on all 12 items per language; the pruned run every t on the 6
    # selection items and one t per method on the 6 test items
    assert set(full_seen.values()) == {12}
    for method in ("arimerge", "adamergex"):
        for language in ("en", "es"):
            counts = sorted(pruned_seen[(f"{method}/{t:g}", language)] for t in SCALES)
            assert counts == [6, 6, 12], (method, language, counts)
    assert pruned_seen[("zero_shot/none", "es")] == 12
    assert sum(pruned_seen.values()) == sum(full_seen.values()) - 2 * 2 * 2 * 6  # 2 methods, 2 languages, 2 t

    # with limit_val_batches (a rehearsal) the split is of the items evaluated: everything runs on them
    _, limited_seen = _validate(adapters, tmp_path / "limited", monkeypatch, False, limit_val_batches=2)
    assert set(limited_seen.values()) == {8}

    # what is reported on test items is each method's t chosen on the selection items, for every metric
    rows = pruned_doc["rows"]
    for method in ("arimerge", "adamergex"):
        for language in ("en", "es"):
            selection = {r["scale"]: r["value"] for r in rows if (r["method"], r["language"], r["split"],
                         r["metric"]) == (method, language, "selection", "loss")}  # fmt: skip
            tested = {(r["scale"], r["metric"]) for r in rows
                      if (r["method"], r["language"], r["split"]) == (method, language, "test")}  # fmt: skip
            chosen = min(selection, key=selection.get)
            assert len(selection) == 3 and tested == {(chosen, "loss"), (chosen, "perplexity")}


def test_reported_keeps_every_test_row_of_a_method_without_a_finite_selection_value():
    def row(scale, split, value, method="adamergex"):
        return {
            "method": method,
            "scale": scale,
            "language": "es",
            "metric": "acc",
            "split": split,
            "value": value,
        }

    nan = float("nan")
    rows = [
        row(0.5, "selection", nan),
        row(1.0, "selection", nan),
        row(0.5, "test", 0.4),
        row(1.0, "test", 0.6),
    ]
    rows += [row(None, "selection", 0.3, "zero_shot"), row(None, "test", 0.2, "zero_shot")]
    assert reported(rows, "acc", merge_method_names()) == rows
    rows[1]["value"] = 0.9
    assert [
        (r["method"], r["scale"]) for r in reported(rows, "acc", merge_method_names()) if r["split"] == "test"
    ] == [("adamergex", 1.0), ("zero_shot", None)]
    without_split = [dict(r, split="all") for r in rows]
    assert reported(without_split, "acc", merge_method_names()) == without_split


@pytest.mark.parametrize("fraction", [0.01])
def test_a_selection_split_that_leaves_a_part_empty_is_refused_before_the_base_loads(
    tiny_llama_path, tmp_path, fraction
):
    task, ref = (make_lora(tiny_llama_path, seed=s, r=4, lora_alpha=8) for s in (1, 2))
    module = MergeModule(
        "builtin:tiny-llama", str(task), {"en": str(ref), "es": str(ref)}, scales=[0.5, 1.0],
        selection_fraction=fraction, results_dir=str(tmp_path / "r"),
    )  # fmt: skip
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    with pytest.raises(ValueError, match=r"selection_fraction, language 'en': fraction=0.01 of n_items=12"):
        trainer.validate(module, datamodule=_data(), verbose=False)
    assert module.model is None


class _NaNLogits(torch.nn.Module):
    """The model with every logit NaN (a diverged merge)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, **inputs):
        output = self.model(**inputs)
        output.logits = torch.full_like(output.logits, float("nan"))
        return output


def test_a_nan_evaluation_is_shown_as_nan_said_once_and_never_chosen(
    tiny_llama_path, tmp_path, monkeypatch, capsys
):
    adapters = [make_lora(tiny_llama_path, seed=s, r=4, lora_alpha=8, std=0.4) for s in (11, 12, 13)]
    run = MergeModule._run_variant

    def diverged_at_2(self, variant, batch, language):
        if variant.label == "adamergex/2":
            self.model.set_adapter(variant.key)
            self.evaluators[variant.key].update(_NaNLogits(self.model), batch, language)
            return
        run(self, variant, batch, language)

    monkeypatch.setattr(MergeModule, "_run_variant", diverged_at_2)
    out, _ = _validate(adapters, tmp_path / "r", monkeypatch, evaluate_everything=True, verbose=True)
    rows = json.loads((out / "results.json").read_text())["rows"]
    broken = [r for r in rows if (r["method"], r["scale"]) == ("adamergex", 2.0)]
    assert broken and all(math.isnan(r["value"]) for r in broken)  # never a number made of NaN
    assert all(math.isfinite(r["value"]) for r in rows if r not in broken)
    assert (
        "Not finite (NaN or infinite model outputs; never chosen as best): adamergex/2 en, adamergex/2 es"
        in (capsys.readouterr().out)
    )
