"""The paper's experiment as one pipeline (configs/pipeline/paper_llama2_7b.yaml): its plan, its overlays, its
dry run, and a rehearsal of the whole table submitted to the local SLURM cluster on hub-layout fixtures."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import yaml
from conftest import ADAMERGEX_BIN, REPO_ROOT, run_adamergex

from adamergex_pl.pipeline import stages as st
from adamergex_pl.pipeline.command import parse

PAPER = REPO_ROOT / "configs/pipeline/paper_llama2_7b.yaml"
OVERLAYS = {"ia3": REPO_ROOT / "configs/pipeline/paper_llama2_7b_ia3.yaml",
            "qwen": REPO_ROOT / "configs/pipeline/paper_qwen2_5_7b.yaml"}  # fmt: skip
TASKS = ("xnli", "xcopa", "mgsm", "xquad", "xlsum", "pawsx")


def test_the_plan_trains_each_reference_language_once_for_all_six_tasks():
    spec, _, _ = parse(["--config", str(PAPER)])
    names = [stage.name for stage in st.plan(spec)]
    languages = sorted({lang for task in spec.tasks.values() for lang in task.tgt_langs} | {"en"})
    assert {"ja", "ko"} <= set(languages)
    assert sorted(n[len("reference_") :] for n in names if n.startswith("reference_")) == languages
    assert [n for n in names if n.startswith("evaluate_")] == [f"evaluate_{t}" for t in TASKS]
    for task in TASKS:
        assert f"task_{task}_en" in names and f"task_{task}_en_stacked" in names
    evaluate = next(s for s in st.plan(spec) if s.name == "evaluate_xnli")
    assert evaluate.config["data"]["init_args"]["languages"] == ["en", *spec.tasks["xnli"].tgt_langs]
    assert "reference_ja" not in evaluate.depends and "reference_fr" in evaluate.depends


def test_an_overlay_changes_only_the_keys_it_names():
    base, _, _ = parse(["--config", str(PAPER)])
    ia3, _, _ = parse(["--config", str(PAPER), "--config", str(OVERLAYS["ia3"])])
    qwen, _, _ = parse(["--config", str(PAPER), "--config", str(OVERLAYS["qwen"])])
    assert ia3.model["adapter_type"] == "ia3" and ia3.model["quantization"] == base.model["quantization"]
    assert "adamergex_factor" not in ia3.methods and ia3.tasks.keys() == base.tasks.keys()
    assert qwen.model["base_model"] == "Qwen/Qwen2.5-7B"
    assert {k: v for k, v in qwen.model.items() if k != "base_model"} == {
        k: v for k, v in base.model.items() if k != "base_model"
    }


def test_the_dry_run_lists_every_stage_method_and_evaluation_with_its_budget(tmp_path):
    out = run_adamergex(
        "pipeline", "--config", str(PAPER), "--dry-run", "--throughput", "2500", cwd=tmp_path
    ).stdout
    lines = out.splitlines()
    assert sum(line.startswith("reference_") for line in lines) == 15
    methods = (
        next(line for line in lines if line.startswith("methods: ")).removeprefix("methods: ").split(", ")
    )
    assert {"ties", "dare_ties", "ties_core", "dare_ties_core", "layer_swap", "adamergex"} <= set(methods)
    # per language: base, zero_shot, stack; 7 merges of t at 2 scales; layer_swap at 3 K; oracle where trained;
    # on the test items (70%) one value per merge method: 3 + 7 + 1 (+ oracle)
    for task in TASKS:
        line = next(line for line in lines if line.startswith(f"evaluate_{task} "))
        oracle = task in ("xnli", "xlsum", "pawsx")
        items = "items ?" if task == "pawsx" else "items <="  # PAWS-X: every item, unknown until read
        every, chosen = ("20/21", "11/12") if oracle else ("20", "11")
        assert (
            f"[adapters {every} per language on the selection items, {chosen} (the chosen t) on the rest, {items}"
        ) in line, line
    xnli = next(line for line in lines if line.startswith("evaluate_xnli "))
    assert "items <=1,000 per language" in xnli and "generated tokens <=0" in xnli  # the paper's 1000 items
    mgsm = next(line for line in lines if line.startswith("evaluate_mgsm "))
    assert "items <=250 per language" in mgsm and "generated tokens <=0" not in mgsm
    reference = next(line for line in lines if line.startswith("reference_en "))
    assert "tokens <=15,360,000" in reference  # 10,000 windows x 512 tokens x 3 epochs, from the config
    assert any(line.startswith("total: 36 stages, 30 fits") for line in lines)
    evaluations = next(line for line in lines if line.startswith("total: 6 evaluations: <="))
    assert evaluations.endswith("(+1 that could not be counted here)")
    assert lines[-1].startswith("at 2,500 tokens/s: fits <=") and "GPU-hours" in lines[-1]


def test_an_evaluation_is_priced_from_its_items_when_they_are_readable():
    from adamergex_pl.metrics.bootstrap import selection_split
    from adamergex_pl.pipeline.budget import eval_budget
    from data_modules import DataSource, TaskDataModule

    spec, _, _ = parse([])  # the embedded demo: its items are shipped
    stage = next(s for s in st.plan(spec) if s.name.startswith("evaluate_"))
    merge = stage.config["model"]["init_args"]
    budget = eval_budget(stage.config)
    fixed = {"base", "zero_shot", "stack"}
    by_scale = {
        "arimerge",
        "adamergex",
        "adamergex_factor",
        "ties",
        "dare_ties",
        "ties_core",
        "dare_ties_core",
    }
    init = dict(stage.config["data"]["init_args"])
    init["val"] = [DataSource(**source.get("init_args", source)) for source in init["val"]]
    data = TaskDataModule(**init, tokenizer=merge["base_model"])
    data.setup("validate")
    tokens = runs = 0
    for lang in data.val_languages:
        oracle = lang in merge.get("oracle_adapters", {})
        adapters = (
            sum(
                1 if m in fixed else len(merge["scales"]) if m in by_scale else len(merge["swaps"])
                for m in merge["methods"]
                if m != "oracle"
            )
            + oracle
        )
        once = len(merge["methods"]) - 1 + oracle  # on the test items: each method at its chosen value
        assert budget.adapters[lang] == adapters and budget.adapters_on_test[lang] == once < adapters
        assert budget.items[lang] == len(data.val_examples[lang]) > 0
        items = data.val_examples[lang]
        ids = sorted(e["index"] for e in items)
        selected, _ = selection_split(len(ids), merge["selection_fraction"], merge.get("stats_seed", 0))
        held_out = {ids[i] for i in selected}
        for e in items:
            count = adapters if e["index"] in held_out else once
            tokens += count * (len(e["prompt_ids"]) + sum(map(len, e["option_ids"])))
            runs += count
    assert budget.tokens == tokens and budget.generated == 0 and not budget.upper_bound
    assert budget.evaluations == runs
    assert len(set(budget.adapters.values())) == 2  # the oracle exists in one language only


def test_every_evaluation_chooses_t_and_k_on_held_out_items():
    spec, _, _ = parse(["--config", str(PAPER)])
    for stage in st.plan(spec):
        if stage.name.startswith("evaluate_"):
            merge = stage.config["model"]["init_args"]
            assert merge["selection_fraction"] == 0.3 and merge["swaps"] == [2, 4, 8], stage.name
            assert merge["svd_rank"] >= 8 and merge["density"] == 0.2


def test_a_rehearsal_keeps_the_shape_and_shrinks_the_cost():
    spec, _, _ = parse(["--config", str(PAPER), "--rehearse"])
    assert spec.run_dir.endswith("/rehearsal") and spec.model["base_model"] == "builtin:tiny-llama"
    assert spec.trainer["max_steps"] == 2 and spec.trainer["accelerator"] == "cpu"
    assert spec.swaps == [1]  # K bottom + K top layers of the 2-layer rehearsal model
    assert spec.reference.data["init_args"]["max_windows"] == 4
    assert all(t.evaluation.data["init_args"]["eval_samples"] == 4 for t in spec.tasks.values())
    full, _, _ = parse(["--config", str(PAPER)])
    assert [s.name for s in st.plan(spec)] == [s.name for s in st.plan(full)]


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_the_whole_table_rehearsed_on_slurm_has_every_task_language_and_method(tmp_path):
    from hub_fixtures import write_hub_fixtures
    from local_slurm import cancel, wait_for_job

    write_hub_fixtures(tmp_path / "mirror")
    env = {**os.environ, "ADAMERGEX_DATASET_MIRROR": str(tmp_path / "mirror")}
    command = [str(ADAMERGEX_BIN), "pipeline", "--config", str(PAPER), "--rehearse", "--submit",
               "--slurm.time", "00:20:00"]  # fmt: skip
    out = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=True
    )
    jobs = dict(line.split("\t") for line in out.stdout.strip().splitlines())
    assert len(jobs) == 37 and list(jobs)[-1] == "report"
    try:
        report = wait_for_job(jobs["report"], timeout=900)
        assert report["JobState"] == "COMPLETED", report
    finally:
        cancel(list(jobs.values()))
    run_dir = tmp_path / "runs/paper_llama2_7b/rehearsal"
    rows = json.loads((run_dir / "results.json").read_text())["rows"]
    spec = yaml.safe_load(PAPER.read_text())
    methods = set(spec["methods"]) - {"oracle"}
    for task, settings in spec["tasks"].items():
        for lang in settings["tgt_langs"]:
            found = {r["method"] for r in rows if (r["task"], r["language"]) == (task, lang)}
            assert methods <= found, (task, lang, found)
            if lang in settings.get("oracle_langs", []):
                assert "oracle" in found
    assert all(math.isfinite(r["value"]) for r in rows)
    assert (run_dir / "plots" / "overview.png").is_file() and (run_dir / "plots" / "diagnosis.png").is_file()
    assert sorted(p.name for p in (run_dir / "diagnosis").glob("*.json")) == [
        "pawsx_de.json",
        "xlsum_es.json",
        "xnli_de.json",
    ]


def test_a_dry_run_is_offline_even_when_the_hub_libraries_were_imported_first():
    code = (
        "import datasets, huggingface_hub.constants as hub, adamergex_pl.cli\n"
        "from adamergex_pl.pipeline.budget import count_offline\n"
        "assert not hub.is_offline_mode()\n"
        "count_offline()\n"
        "print(hub.is_offline_mode(), datasets.config.HF_HUB_OFFLINE)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
