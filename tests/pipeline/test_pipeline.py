"""``adamergex pipeline``: stage planning, idempotent resumable runs, and the embedded default end to end."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import yaml
from conftest import REPO_ROOT, run_adamergex

from adamergex_pl.pipeline import stages as st
from adamergex_pl.pipeline.command import DEFAULT_CONFIG
from adamergex_pl.pipeline.spec import EvaluationSpec, FitSpec, PipelineSpec

TINY = REPO_ROOT / "configs/pipeline/tiny.yaml"


def _spec(**overrides) -> PipelineSpec:
    raw = yaml.safe_load(TINY.read_text())
    raw.update(overrides)
    raw["task"], raw["reference"] = FitSpec(**raw["task"]), FitSpec(**raw["reference"])
    raw["evaluation"] = EvaluationSpec(**raw["evaluation"])
    return PipelineSpec(**raw)


def test_spec_refuses_inconsistent_recipes():
    with pytest.raises(
        ValueError, match=r"validates on languages \['en', 'es'\], but the task's languages are"
    ):
        _spec(tgt_langs=["es", "de"])
    with pytest.raises(ValueError, match=r"methods \['magic'\] are not known"):
        _spec(methods=["magic"])
    with pytest.raises(ValueError, match=r"src_lang='en' is also in tgt_langs=\['en', 'es'\]"):
        _spec(tgt_langs=["en", "es"])
    with pytest.raises(ValueError, match=r"oracle_langs \['de'\] are not in tgt_langs=\['es'\]"):
        _spec(oracle_langs=["de"])
    with pytest.raises(ValueError, match="methods include 'oracle' but oracle_langs is empty"):
        _spec(methods=["oracle"])
    with pytest.raises(ValueError, match=r"model\.base_model is missing"):
        _spec(model={"adapter_type": "lora"})


def test_lang_placeholders_are_filled_and_other_braces_kept():
    tree = {
        "train": {"path": "data/{lang}.jsonl"},
        "prompt_template": "{prompt} ({lang})",
        "n": [1, "{lang}"],
    }
    assert st.substitute(tree, "es") == {
        "train": {"path": "data/es.jsonl"},
        "prompt_template": "{prompt} (es)",
        "n": [1, "es"],
    }


def test_plan_wires_every_adapter_into_the_evaluation():
    raw = yaml.safe_load(TINY.read_text())["evaluation"]
    raw["data"]["init_args"]["val"] = {"path": "builtin:tiny/add_{lang}.jsonl", "language": "{lang}"}
    spec = _spec(
        tgt_langs=["es", "de"],
        oracle_langs=["de"],
        methods=["zero_shot", "adamergex", "oracle"],
        evaluation=raw,
    )
    plan = st.plan(spec)
    assert [s.name for s in plan] == [
        "reference_en",
        "reference_es",
        "reference_de",
        "task_add_en",
        "task_add_de",
        "evaluate_add",
    ]
    fit = plan[1].config
    assert fit["data"]["init_args"]["train"]["path"] == "builtin:tiny/wiki_es.jsonl"
    assert fit["model"]["init_args"]["language"] == "es" and fit["model"]["init_args"]["task"] == "wiki_lm"
    merge = plan[-1].config["model"]["init_args"]
    assert merge["task_src"] == "runs/tiny/pipeline/task_add_en/snapshots"
    assert set(merge["reference_adapters"]) == {"en", "es", "de"}
    assert merge["oracle_adapters"] == {"de": "runs/tiny/pipeline/task_add_de/snapshots"}
    assert plan[-1].depends == ("task_add_en", "task_add_de", "reference_en", "reference_es", "reference_de")
    val = plan[-1].config["data"]["init_args"]["val"]  # the {lang} template, one source per language
    assert [v["path"] for v in val] == [f"builtin:tiny/add_{lang}.jsonl" for lang in ("en", "es", "de")]


def test_changing_a_setting_reruns_exactly_the_stages_it_affects():
    spec = _spec()
    before = st.fingerprints(st.plan(spec))
    changed = copy.deepcopy(spec)
    changed.reference.data["init_args"]["window_tokens"] = 64
    after = st.fingerprints(st.plan(changed))
    assert [name for name in before if before[name] != after[name]] == [
        "reference_en",
        "reference_es",
        "evaluate_add",
    ]


def test_a_stage_whose_inputs_are_not_done_is_refused(tmp_path, monkeypatch, capsys):
    from adamergex_pl.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["pipeline", "--config", str(TINY), "--stage", "[evaluate_add]"]) == 2
    assert (
        "stage evaluate_add needs ['task_add_en', 'reference_en', 'reference_es'] first"
        in capsys.readouterr().err
    )
    assert main(["pipeline", "--config", str(TINY), "--stage", "[nope]"]) == 2
    assert "--stage ['nope'] are not stages of this pipeline" in capsys.readouterr().err


@pytest.mark.slow
def test_the_embedded_default_runs_end_to_end_and_a_second_run_skips_everything(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    first = run_adamergex("pipeline", cwd=tmp_path, timeout=900)
    run_dir = tmp_path / "runs/demo"
    spec = yaml.safe_load(DEFAULT_CONFIG.read_text())
    methods, languages = spec["methods"], [spec["src_lang"], *spec["tgt_langs"]]
    table = (run_dir / "results.md").read_text()
    assert table in first.stdout
    assert first.stdout.count("| method | t |") == 1 and "| method | t |" not in first.stderr  # ONE table
    document = yaml.safe_load((run_dir / "results.json").read_text())
    rows = document["rows"]
    accuracy = [r for r in rows if r["metric"] == "count/accuracy" and r["language"]]
    for method in methods:
        covered = {r["language"] for r in accuracy if r["method"] == method}
        assert covered == ({"es"} if method == "oracle" else set(languages)), method
    assert all(math.isfinite(r["value"]) and 0 <= r["value"] <= 1 for r in accuracy)
    assert len(accuracy) == len(rows)  # no summary over languages among the rows
    for row in accuracy:  # 59 items per language, a 95% interval around every value, a paired test
        assert row["n"] == 59 and row["ci_low"] <= row["value"] <= row["ci_high"], row
        assert (row["p_value"] is None) == (row["method"] == "zero_shot"), row
    assert "chosen on these same items" in table  # the demo has no selection split, and says so
    best = document["best"]["es"]
    assert (run_dir / best["adapter_dir"] / "adapter_config.json").is_file()  # relative to results.json
    for plot in ("by_method.png", "scale_sweep.png"):
        assert (run_dir / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    base = AutoModelForCausalLM.from_pretrained(str(REPO_ROOT / "adamergex_pl/assets/demo-bilingual"))
    merged = PeftModel.from_pretrained(base, str(run_dir / "evaluate_count/merge_results/best/es")).eval()
    with torch.no_grad():
        assert torch.isfinite(merged(input_ids=torch.tensor([[1, 5, 6, 7]])).logits).all()

    second = run_adamergex("pipeline", cwd=tmp_path, timeout=300)
    assert (
        second.stdout.count("done, skipped") == len(st.plan(_default_spec()))
        and "fit --config" not in second.stdout
    )


def _default_spec() -> PipelineSpec:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["task"], raw["reference"] = FitSpec(**raw["task"]), FitSpec(**raw["reference"])
    raw["evaluation"] = EvaluationSpec(**raw["evaluation"])
    return PipelineSpec(**raw)
