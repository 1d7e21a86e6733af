"""``adamergex pipeline``: stage planning, idempotent resumable runs, and the embedded default end to end."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import yaml
from conftest import REPO_ROOT, run_adamergex

from adamergex_pl.pipeline import stages as st
from adamergex_pl.pipeline.command import DEFAULT_CONFIG
from adamergex_pl.pipeline.spec import EvaluationSpec, FitSpec, PipelineSpec, PipelineTask

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

    from adamergex_pl.merging.methods import reference_method_names

    first = run_adamergex("pipeline", cwd=tmp_path, timeout=900)
    run_dir = tmp_path / "runs/demo"
    spec = yaml.safe_load(DEFAULT_CONFIG.read_text())
    methods, languages, references = (
        spec["methods"],
        [spec["src_lang"], *spec["tgt_langs"]],
        spec["references"],
    )
    assert len(references) >= 2
    table = (run_dir / "results.md").read_text()
    assert table in first.stdout
    assert (
        first.stdout.count("| method | reference | t |") == 1 and "| method |" not in first.stderr
    )  # ONE table
    document = json.loads((run_dir / "results.json").read_text())
    rows = document["rows"]
    accuracy = [r for r in rows if r["metric"] == "count/accuracy" and r["language"]]
    assert len(accuracy) == len(rows)  # no summary over languages among the rows
    for method in methods:
        found = {(r["reference"], r["language"]) for r in accuracy if r["method"] == method}
        langs = {"es"} if method == "oracle" else set(languages)
        refs = set(references) if method in reference_method_names() else {None}
        assert found == {(ref, lang) for ref in refs for lang in langs}, method
    assert all(math.isfinite(r["value"]) and 0 <= r["value"] <= 1 for r in accuracy)
    n = {split: {r["n"] for r in accuracy if r["split"] == split} for split in ("selection", "test")}
    assert len(n["selection"]) == len(n["test"]) == 1 and n["selection"].pop() + n["test"].pop() == 19
    for row in accuracy:  # a 95% interval around every value, a paired test
        assert row["ci_low"] <= row["value"] <= row["ci_high"], row
        assert (row["p_value"] is None) == (row["method"] == "zero_shot"), row
    assert "held-out selection items per language" in table  # t is not chosen on the reported items
    # the diagnostic beside every gain: each reference task's cosine, measured (a finite number in [-1, 1])
    gains = document["gain_vs_gap_cosine"]
    cosines = {g["reference"]: g["gap_cosine"] for g in gains}
    assert set(cosines) == set(references) and all(-1 <= c <= 1 for c in cosines.values())
    assert {g["method"] for g in gains} == set(methods) & set(reference_method_names())
    best = document["best"]["es"]
    assert (run_dir / best["adapter_dir"] / "adapter_config.json").is_file()  # relative to results.json
    plots = ["gain_vs_cosine.png", "diagnosis.png", *(f"by_method_{ref}.png" for ref in references)]
    for plot in plots:
        assert (run_dir / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    base = AutoModelForCausalLM.from_pretrained(str(REPO_ROOT / "adamergex_pl/assets/demo-bilingual"))
    merged = PeftModel.from_pretrained(base, str(run_dir / best["adapter_dir"])).eval()
    with torch.no_grad():
        assert torch.isfinite(merged(input_ids=torch.tensor([[1, 5, 6, 7]])).logits).all()

    second = run_adamergex("pipeline", cwd=tmp_path, timeout=300)
    assert (
        second.stdout.count("done, skipped") == len(st.plan(_default_spec()))
        and "fit --config" not in second.stdout
    )


def _default_spec() -> PipelineSpec:
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["task"], raw["evaluation"] = FitSpec(**raw["task"]), EvaluationSpec(**raw["evaluation"])
    raw["references"] = {name: FitSpec(**fit) for name, fit in raw["references"].items()}
    return PipelineSpec(**raw)


def _two_references(**overrides) -> PipelineSpec:
    """``tiny.yaml`` with two reference tasks: its Wikipedia LM and the same on shorter windows."""
    raw = yaml.safe_load(TINY.read_text())
    wiki = raw.pop("reference")
    short = copy.deepcopy(wiki)
    short["data"]["init_args"]["window_tokens"] = 64
    raw["task"], raw["evaluation"] = FitSpec(**raw["task"]), EvaluationSpec(**raw["evaluation"])
    raw["references"] = {"wiki_lm": FitSpec(**wiki), "wiki_short": FitSpec(**short)}
    raw.update(overrides)
    return PipelineSpec(**raw)


def test_two_references_train_each_reference_once_per_language_and_evaluate_each():
    spec = _two_references(methods=["base", "zero_shot", "adamergex", "stack", "oracle"], oracle_langs=["es"])
    plan = st.plan(spec)
    names = [s.name for s in plan]
    assert names == [
        "reference_wiki_lm_en",
        "reference_wiki_lm_es",
        "reference_wiki_short_en",
        "reference_wiki_short_es",
        "task_add_en",
        "task_add_en_stacked_wiki_lm",
        "task_add_en_stacked_wiki_short",
        "task_add_es",
        "evaluate_add_wiki_lm",
        "evaluate_add_wiki_short",
    ]
    by_name = {s.name: s for s in plan}
    assert by_name["reference_wiki_short_es"].config["model"]["init_args"]["task"] == "wiki_short"
    assert by_name["task_add_en_stacked_wiki_short"].depends == ("reference_wiki_short_en",)
    first, second = (
        by_name[f"evaluate_add_{r}"].config["model"]["init_args"] for r in ("wiki_lm", "wiki_short")
    )
    assert first["reference_task"] == "wiki_lm" and second["reference_task"] == "wiki_short"
    assert first["reference_adapters"]["es"].endswith("reference_wiki_lm_es/snapshots")
    assert second["reference_adapters"]["es"].endswith("reference_wiki_short_es/snapshots")
    assert second["task_src_stacked"].endswith("task_add_en_stacked_wiki_short/snapshots")
    # the methods that use no reference adapter are evaluated once; zero_shot, every comparison's baseline, twice
    assert first["methods"] == ["base", "zero_shot", "adamergex", "stack", "oracle"]
    assert second["methods"] == ["zero_shot", "adamergex", "stack"] and "oracle_adapters" not in second

    changed = copy.deepcopy(spec)  # a setting of one reference task reruns its stages only
    changed.references["wiki_short"].data["init_args"]["window_tokens"] = 32
    before, after = st.fingerprints(plan), st.fingerprints(st.plan(changed))
    assert [name for name in before if before[name] != after[name]] == [
        "reference_wiki_short_en",
        "reference_wiki_short_es",
        "task_add_en_stacked_wiki_short",
        "evaluate_add_wiki_short",
    ]


def test_two_tasks_share_the_reference_stages():
    raw = yaml.safe_load(TINY.read_text())
    tasks = {
        name: PipelineTask(FitSpec(**copy.deepcopy(raw["task"])), EvaluationSpec(**raw["evaluation"]), ["es"])
        for name in ("add", "again")
    }
    spec = _two_references(task=None, evaluation=None, tgt_langs=[], metric=None, tasks=tasks)
    names = [s.name for s in st.plan(spec)]
    assert [n for n in names if n.startswith("reference_")] == [
        "reference_wiki_lm_en",
        "reference_wiki_lm_es",
        "reference_wiki_short_en",
        "reference_wiki_short_es",
    ]
    assert [n for n in names if n.startswith("evaluate_")] == [
        "evaluate_add_wiki_lm",
        "evaluate_add_wiki_short",
        "evaluate_again_wiki_lm",
        "evaluate_again_wiki_short",
    ]


def test_reference_tasks_are_one_form_or_the_other_and_named_as_words():
    raw = yaml.safe_load(TINY.read_text())
    ref = FitSpec(**raw["reference"])
    with pytest.raises(ValueError, match=r"give either reference: .* or references: .*not both"):
        _spec(references={"other": ref})
    with pytest.raises(ValueError, match=r"references\.'wiki lm'.*letters, digits and underscores"):
        _two_references(references={"wiki lm": ref})
    with pytest.raises(ValueError, match="one of them"):
        _two_references(references={})


def _evaluation(directory, reference: str, scores: dict[tuple[str, float | None], list[float]]):
    """A written ``MergeResults`` of one reference task: ``{(method, t): per-item accuracy in es}`` (en: all
    right)."""
    from adamergex_pl.merging.merge_results import MergeResults
    from adamergex_pl.metrics.item_scores import ItemScores

    results = MergeResults(directory, ["en", "es"], "count", "en", reference_task=reference)
    for (method, scale), values in scores.items():
        for lang, per_item in (("en", [1.0] * len(values)), ("es", values)):
            items = ItemScores(torch.arange(len(per_item)), torch.tensor(per_item, dtype=torch.float64))
            results.add(method, scale, f"{lang}/accuracy", items.value(), items)
    results.write()
    return directory


def test_the_report_of_two_references_carries_the_reference_and_puts_the_cosine_beside_the_gain(tmp_path):
    import csv

    from adamergex_pl.pipeline.report import write_report

    half = [1.0, 0.0] * 10  # zero_shot: 10 of 20
    wiki = _evaluation(
        tmp_path / "wiki",
        "wiki_lm",
        {
            ("zero_shot", None): half,
            ("adamergex", 0.5): half,
            ("adamergex", 1.0): [0.0] * 20,
            ("oracle", None): [1.0] * 20,
        },
    )
    sibling = _evaluation(
        tmp_path / "sibling",
        "count_sibling",
        {("zero_shot", None): half, ("adamergex", 0.5): half, ("adamergex", 1.0): [1.0] * 18 + [0.0] * 2},
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cosines = {("wiki_lm", "es"): -0.01, ("count_sibling", "es"): 0.8}
    table = write_report({"wiki_lm": wiki, "count_sibling": sibling}, run_dir, "accuracy", "en", cosines)

    with open(run_dir / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    keys = [(r["method"], r["reference"], r["scale"], r["language"]) for r in rows]
    assert len(keys) == len(set(keys))  # zero_shot, the same in both evaluations, once
    assert [k for k in keys if k[3] == "es"] == [
        ("zero_shot", "", "", "es"),
        ("adamergex", "wiki_lm", "0.5", "es"),
        ("adamergex", "wiki_lm", "1.0", "es"),
        ("oracle", "", "", "es"),
        ("adamergex", "count_sibling", "0.5", "es"),
        ("adamergex", "count_sibling", "1.0", "es"),
    ]
    assert "| method | reference | t | en (n=20) | es (n=20) | Δ es vs zero_shot |" in table
    assert (
        "| adamergex | wiki_lm | 0.5 | 1.000 [1.000, 1.000] * | 0.500 [" in table
    )  # each reference's best t
    assert (
        "| adamergex | count_sibling | 1 | 1.000 [1.000, 1.000] | 0.900 [0.750, 1.000] * | +0.400 [" in table
    )

    document = json.loads((run_dir / "results.json").read_text())
    gains = {(g["reference"], g["method"]): g for g in document["gain_vs_gap_cosine"]}
    assert set(gains) == {("wiki_lm", "adamergex"), ("count_sibling", "adamergex")}  # oracle, zero_shot: none
    control = gains[("count_sibling", "adamergex")]
    assert (control["gap_cosine"], control["scale"], control["language"]) == (0.8, 1.0, "es")
    assert control["diff_vs_zero_shot"] == pytest.approx(0.4) and control["diff_ci_low"] > 0
    assert gains[("wiki_lm", "adamergex")]["diff_vs_zero_shot"] == pytest.approx(0.0)
    assert "| count_sibling | es | +0.800 | adamergex | 1 | +0.400 [" in table
    for plot in ("gain_vs_cosine.png", "by_method_wiki_lm.png", "scale_sweep_count_sibling.png"):
        assert (run_dir / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_experiment_table_of_two_tasks_and_two_references_names_the_reference(tmp_path):
    import csv

    from adamergex_pl.pipeline.experiment_table import write_experiment_table
    from adamergex_pl.pipeline.report import write_report

    raw = yaml.safe_load(TINY.read_text())
    tasks = {
        name: PipelineTask(FitSpec(**copy.deepcopy(raw["task"])), EvaluationSpec(**raw["evaluation"]), ["es"])
        for name in ("add", "again")
    }
    spec = _two_references(task=None, evaluation=None, tgt_langs=[], metric=None, tasks=tasks)
    half = [1.0, 0.0] * 10
    for name in tasks:
        dirs = {
            ref: _evaluation(
                tmp_path / name / ref,
                ref,
                {
                    ("zero_shot", None): half,
                    ("adamergex", 1.0): [1.0] * 12 + [0.0] * 8
                    if ref == "wiki_lm"
                    else [1.0] * 16 + [0.0] * 4,
                },
            )
            for ref in ("wiki_lm", "wiki_short")
        }
        (tmp_path / "run" / name).mkdir(parents=True)
        write_report(dirs, tmp_path / "run" / name, "accuracy", "en")
    summary = write_experiment_table(spec, tmp_path / "run")
    assert (
        "| adamergex (wiki_lm) | 0.6000 | 0.6000 |" in summary
        and "| adamergex (wiki_short) | 0.8000 | 0.8000 |" in summary
    )
    with open(tmp_path / "run" / "results.csv") as handle:
        rows = [(r["task"], r["reference"], r["method"]) for r in csv.DictReader(handle)]
    assert rows == [
        ("add", "", "zero_shot"),
        ("add", "wiki_lm", "adamergex"),
        ("add", "wiki_short", "adamergex"),
        ("again", "", "zero_shot"),
        ("again", "wiki_lm", "adamergex"),
        ("again", "wiki_short", "adamergex"),
    ]
