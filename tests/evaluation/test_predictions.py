"""``predictions.jsonl``: every evaluated item's prediction, consistent with the scores and the result rows."""

from __future__ import annotations

import json

import pytest
from lightning.pytorch import Trainer
from merge_factories import make_lora

from adamergex_pl import AdapterModule, MergeModule
from data_modules import DataSource, TaskDataModule

FIELDS = {"id", "language", "prompt_id", "output", "parsed", "gold", "correct", "scores"}


def _task_data(task: str, languages, **kwargs) -> TaskDataModule:
    sources = [DataSource(f"builtin:tasks/{task}/{lang}.jsonl", language=lang) for lang in languages]
    return TaskDataModule(
        task, val=sources, tokenizer="builtin:tiny-llama", eval_samples="all", eval_batch_size=4,
        write_predictions=True, **kwargs,
    )  # fmt: skip


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_merge_predictions_agree_with_the_rows_and_their_paired_differences(tiny_llama_path, tmp_path):
    task, ref_en, ref_de = (make_lora(tiny_llama_path, seed=s, r=4, lora_alpha=8) for s in (11, 12, 13))
    module = MergeModule(
        "builtin:tiny-llama", str(task), {"en": str(ref_en), "de": str(ref_de)},
        methods=["zero_shot", "base", "adamergex"], scales=[1.0], results_dir=str(tmp_path / "results"),
    )  # fmt: skip
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.validate(module, datamodule=_task_data("xnli", ["en", "de"]), verbose=False)

    records = _read(tmp_path / "results/predictions.jsonl")
    assert {key for record in records for key in record} == FIELDS | {"method", "scale"}
    assert len(records) == 3 * 2 * 6  # methods x languages x items
    assert {r["prompt_id"] for r in records} == {"instruction"}
    assert all(r["correct"] == (r["parsed"] == r["gold"]) and isinstance(r["output"], str) for r in records)
    rows = json.loads((tmp_path / "results/results.json").read_text())["rows"]
    accuracy = {(r["method"], r["language"]): r for r in rows if r["metric"] == "xnli/accuracy"}

    def mean_correct(method, language):
        picked = [r["correct"] for r in records if (r["method"], r["language"]) == (method, language)]
        return sum(picked) / len(picked)

    for (method, language), row in accuracy.items():
        assert row["n"] == 6 and row["value"] == pytest.approx(mean_correct(method, language), abs=1e-6)
        if method != "zero_shot":  # the paired difference is on the very items the records list
            expected = mean_correct(method, language) - mean_correct("zero_shot", language)
            assert row["diff_vs_zero_shot"] == pytest.approx(expected, abs=1e-9)


def test_validate_writes_generation_predictions_with_the_parsed_number(tmp_path):
    data = _task_data("mgsm", ["de", "zh"], max_new_tokens=6)
    module = AdapterModule("builtin:tiny-llama", lora_r=4, lora_alpha=8, task="mgsm")
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    logged = {
        k: v
        for per_loader in trainer.validate(module, datamodule=data, verbose=False)
        for k, v in per_loader.items()
    }

    records = _read(tmp_path / "predictions.jsonl")
    assert {key for record in records for key in record} == FIELDS
    for language in ("de", "zh"):
        mine = [r for r in records if r["language"] == language]
        assert [r["id"] for r in mine] == sorted(r["id"] for r in mine) and len(mine) == len(
            set(r["id"] for r in mine)
        )
        share = sum(r["correct"] for r in mine) / len(mine)
        assert share == pytest.approx(logged[f"val/mgsm/{language}/accuracy"], abs=1e-6)
        assert sum(r["parsed"] is None for r in mine) / len(mine) == pytest.approx(
            logged[f"val/mgsm/{language}/no_number_rate"], abs=1e-6
        )
    assert all(isinstance(r["gold"], list) and r["prompt_id"] == "instruction" for r in records)
