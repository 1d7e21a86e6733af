"""MergeModule: every method's numbers equal those of its adapter evaluated on its own; one base model."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO_ROOT, run_adamergex
from lightning.pytorch import Trainer
from merge_factories import load_base, make_ia3, make_lora
from peft import PeftModel

from adamergex_pl import MergeModule
from adamergex_pl.evaluation.language_modeling import LanguageModelingEvaluator
from adamergex_pl.merging.merge import merge_adapters
from adamergex_pl.merging.output import write_merged
from adamergex_pl.training.base_model import QuantizationSpec, load_base_model
from data_modules import DataSource, InstructionDataModule


def _data():
    return InstructionDataModule(
        val=[DataSource(f"builtin:tiny/add_{lang}.jsonl", language=lang) for lang in ("en", "es")],
        tokenizer="builtin:tiny-llama", max_val_samples=12, batch_size=4, max_length=48,
    )  # fmt: skip


def _reference_loss(model, data, language):
    """The loss of ``model`` on one language's validation data, outside any Lightning machinery."""
    evaluator = LanguageModelingEvaluator([language])
    for batch in data.val_dataloader()[data.val_languages.index(language)]:
        evaluator.update(model, batch, language)
    return float(evaluator.compute()[f"{language}/loss"])


@pytest.mark.parametrize(("adapter_type", "quantization"), [("lora", "nf4"), ("ia3", "none")])
def test_each_method_scores_what_its_adapter_scores_alone(
    tiny_llama_path, tmp_path, adapter_type, quantization
):
    make = make_lora if adapter_type == "lora" else make_ia3
    kwargs = {"r": 4, "lora_alpha": 8} if adapter_type == "lora" else {}
    task, ref_en, ref_es = (make(tiny_llama_path, seed=s, **kwargs) for s in (1, 2, 3))
    methods = ["base", "zero_shot", "arimerge", "adamergex"]
    module = MergeModule(
        "builtin:tiny-llama", str(task), {"en": str(ref_en), "es": str(ref_es)}, methods=methods, scales=[0.5],
        quantization=quantization, results_dir=str(tmp_path / "results"), save_best=True, selection_metric="loss",
    )  # fmt: skip
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    logged = {
        k: v
        for per_dataloader in trainer.validate(module, datamodule=_data(), verbose=False)
        for k, v in per_dataloader.items()
    }

    data = _data()
    data.setup("validate")
    spec = QuantizationSpec(quantization)
    base = load_base_model("builtin:tiny-llama", spec, torch.device("cpu")).eval()
    assert logged["val/base/none/es/loss"] == pytest.approx(_reference_loss(base, data, "es"), rel=1e-5)
    expected = {
        "zero_shot/none": task,
        "adamergex/0.5": write_merged(
            merge_adapters(task, ref_en, ref_es, scale=0.5), tmp_path / "adamergex"
        ),
        "arimerge/0.5": write_merged(
            merge_adapters(task, None, ref_es, scale=0.5, method="arimerge"), tmp_path / "ari"
        ),
    }
    for label, adapter_dir in expected.items():
        alone = load_base_model("builtin:tiny-llama", spec, torch.device("cpu"))
        alone = PeftModel.from_pretrained(alone, str(adapter_dir)).eval()
        assert logged[f"val/{label}/es/loss"] == pytest.approx(
            _reference_loss(alone, data, "es"), rel=1e-5
        ), label
    # on the source language AdaMergeX subtracts the reference adapter from itself: the task adapter is left
    assert logged["val/adamergex/0.5/en/loss"] == pytest.approx(
        logged["val/zero_shot/none/en/loss"], rel=1e-6
    )
    assert logged["val/base/none/es/loss"] != pytest.approx(logged["val/adamergex/0.5/es/loss"], rel=1e-3)

    # one base model, never densified: the quantized linears are still 4-bit after every switch
    if quantization == "nf4":
        layer = module.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer
        assert type(layer).__name__ == "Linear4bit"
    rows = json.loads((tmp_path / "results/results.json").read_text())["rows"]
    assert {(r["method"], r["language"]) for r in rows} >= {
        (m, lang) for m in methods for lang in ("en", "es")
    }
    assert all(r["n"] == 12 and r["ci_low"] is None for r in rows if r["metric"] == "loss")  # 12 examples
    best = json.loads((tmp_path / "results/results.json").read_text())["best"]["es"]
    assert best["method"] in ("adamergex", "arimerge") and (tmp_path / "results/best/es/merge.json").is_file()


def test_refusals_name_the_option(tiny_llama_path, tmp_path):
    task, ref_en = make_ia3(tiny_llama_path, seed=1), make_ia3(tiny_llama_path, seed=2)
    with pytest.raises(ValueError, match=r"reference_adapters has no entry for src_lang='en'"):
        MergeModule("builtin:tiny-llama", str(task), {"es": str(ref_en)})
    with pytest.raises(ValueError, match=r"methods include 'oracle' but oracle_adapters is empty"):
        MergeModule("builtin:tiny-llama", str(task), {"en": str(ref_en)}, methods=["oracle"])
    with pytest.raises(ValueError, match=r"^scales=inf must be finite, e.g. 0.5$"):
        MergeModule("builtin:tiny-llama", str(task), {"en": str(ref_en)}, scales=[0.5, float("inf")])
    with pytest.raises(FileNotFoundError, match=r"reference_adapters\.es '.*nowhere' does not exist"):
        MergeModule("builtin:tiny-llama", str(task), {"en": str(ref_en), "es": str(tmp_path / "nowhere")})
    module = MergeModule("builtin:tiny-llama", str(task), {"en": str(ref_en)}, methods=["adamergex_factor"])
    with pytest.raises(
        ValueError, match=r"'adamergex_factor' merges LoRA factors element-wise; these are \(IA\)³"
    ):
        module.configure_model()
    module = MergeModule("builtin:tiny-llama", str(task), {"en": str(ref_en)}, methods=["adamergex"])
    module.configure_model()
    with pytest.raises(ValueError, match=r"no reference adapter for language 'es'"):
        module.merged_adapter(module.variants[0], "es")


def test_partial_modules_are_refused_unless_allowed(tiny_llama_path):
    task, ref_en = (make_lora(tiny_llama_path, seed=s, r=4, lora_alpha=8) for s in (7, 8))
    ref_es = make_lora(tiny_llama_path, seed=9, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
    references = {"en": str(ref_en), "es": str(ref_es)}
    for allow in (False, True):
        module = MergeModule(
            "builtin:tiny-llama", str(task), references, methods=["adamergex"], allow_partial_modules=allow
        )
        module.configure_model()
        if not allow:
            with pytest.raises(
                ValueError, match=rf"^allow_partial_modules=false: .*\(ref_tgt \({ref_es}\) lacks"
            ):
                module.merged_adapter(module.variants[0], "es")
            continue
        record = module.merged_adapter(module.variants[0], "es").record()
        assert record["allow_partial_modules"] is True and len(record["partial_modules"]) == 10


@pytest.mark.slow
def test_merge_validation_through_the_cli_writes_the_per_language_table(tiny_llama_path, tmp_path):
    import csv

    task, ref_en, ref_es = (make_lora(tiny_llama_path, seed=s, r=4, lora_alpha=8) for s in (4, 5, 6))
    result = run_adamergex(
        "validate", "--config", str(REPO_ROOT / "configs/merge/tiny_lora.yaml"),
        "--model.init_args.task_src", str(task),
        "--model.init_args.reference_adapters", json.dumps({"en": str(ref_en), "es": str(ref_es)}),
        cwd=tmp_path,
    )  # fmt: skip
    results = tmp_path / "runs/tiny/merge_lora/merge_results"
    table = (results / "results.md").read_text()
    for label in ("| base |  |", "| zero_shot |  |", "| arimerge | 0.5 |", "| adamergex | 1 |"):
        assert label in table, label
    assert "| adamergex_factor | 0.5 |" in table
    # stdout (what `> out.txt` keeps) ends with ONE table, the main metric's, and the path of the files
    assert result.stdout.count("| method | t |") == 1 and "| method | t |" not in result.stderr
    assert f"Results: {results.relative_to(tmp_path)}/results.{{csv,json,md}}" in result.stdout
    assert "dataloader_idx" not in result.stdout + result.stderr
    with (results / "results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    loss = [r for r in rows if r["metric"] == "loss" and r["language"]]
    assert {(r["method"], r["language"]) for r in loss} == {
        (m, lang)
        for m in ("base", "zero_shot", "arimerge", "adamergex", "adamergex_factor")
        for lang in ("en", "es")
    }
    assert all(torch.isfinite(torch.tensor(float(r["value"]))) for r in rows)
    assert all(r["n"] == "16" and r["ci_low"] == "" for r in loss)  # 16 examples; a token-weighted ratio
    best = PeftModel.from_pretrained(load_base(tiny_llama_path), str(results / "best/es"))
    assert best.peft_config["default"].peft_type.value == "LORA"
    assert json.loads((results / "results.json").read_text())["best"]["es"]["adapter_dir"] == "best/es"
