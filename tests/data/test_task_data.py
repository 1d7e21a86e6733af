"""TaskDataModule in process: the task table, sampling, prompts, tokenization, and one-line bad-input errors."""

from __future__ import annotations

import json

import pytest

from adamergex_pl.cli import main
from adamergex_pl.metrics.languages import normalize_language
from data_modules import DataSource, TaskDataModule
from data_modules.collate import IGNORE_INDEX, TaskCollator
from data_modules.tasks import TASKS, get_task
from data_modules.tasks.mgsm import gsm8k_target

TOKENIZER = "builtin:tiny-llama"
FIXTURE_LANGUAGES = {"xnli": ["de", "zh"], "xcopa": ["tr", "zh"], "pawsx": ["de", "zh"]}
FIXTURE_LANGUAGES |= {
    "mgsm": ["de", "zh"],
    "xquad": ["de", "zh"],
    "xlsum": ["es", "zh"],
    "count": ["en", "es"],
}


def fixtures(task: str) -> list[DataSource]:
    if task == "count":  # the embedded demo's task ships its whole data set
        return [
            DataSource(f"builtin:demo/count_{lang}.jsonl", language=lang) for lang in FIXTURE_LANGUAGES[task]
        ]
    return [
        DataSource(f"builtin:tasks/{task}/{lang}.jsonl", language=lang) for lang in FIXTURE_LANGUAGES[task]
    ]


def datamodule(task: str, stage: str = "validate", **kwargs) -> TaskDataModule:
    kwargs.setdefault("val", fixtures(task))
    train = "builtin:demo/count_en.jsonl" if task == "count" else f"builtin:tasks/{task}/train_en.jsonl"
    kwargs.setdefault("train", DataSource(train, language="en"))
    data = TaskDataModule(task, tokenizer=TOKENIZER, eval_samples=kwargs.pop("eval_samples", "all"), **kwargs)
    data.setup(stage)
    return data


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


# ---------------------------------------------------------------------------------------------- the table
def test_task_table_matches_the_paper_and_the_hub_layouts():
    paper_tasks = {name: spec for name, spec in TASKS.items() if name != "count"}  # count: the embedded demo
    assert set(TASKS) == {"xnli", "xcopa", "pawsx", "mgsm", "xquad", "xlsum", "count"}
    paper = {"mgsm": 250, "xcopa": 500, "xnli": 1000, "xquad": 1000, "xlsum": 500, "pawsx": None}
    assert {name: spec.paper_samples for name, spec in paper_tasks.items()} == paper
    assert {name: spec.eval_split for name, spec in paper_tasks.items()} == {
        **dict.fromkeys(paper_tasks, "test"),
        "xquad": "validation",
    }
    assert TASKS["count"].eval_source("es").path == "builtin:demo/count_es.jsonl"
    for spec in TASKS.values():
        assert set(spec.paper_languages) <= set(spec.configs), spec.name
        for language in spec.configs:  # every language is one the metrics know, so scoring never refuses it
            normalize_language(language)
    xlsum = TASKS["xlsum"].configs
    assert (xlsum["zh"], xlsum["en"], xlsum["es"], len(xlsum)) == (
        "chinese_simplified",
        "english",
        "spanish",
        45,
    )
    assert "de" not in xlsum and "el" not in xlsum  # XL-Sum has neither German nor Greek
    assert TASKS["xquad"].eval_source("th").name == "xquad.th"
    assert TASKS["mgsm"].eval_source("sw").revision is None  # main is Parquet with a dataset card now
    xlsum_es = TASKS["xlsum"].eval_source(
        "es"
    )  # main has a script: its Parquet export, name read as data_dir
    assert (xlsum_es.name, xlsum_es.revision) == ("spanish", "refs/convert/parquet")
    assert TASKS["xcopa"].train_source.path == "pkavumba/balanced-copa"
    assert TASKS["xcopa"].train_source.split == "train"  # its test split is COPA's test = XCOPA's source


def test_gsm8k_solutions_become_targets_that_end_in_the_answer():
    answer = (
        "He sells 120 / 2 = <<120/2=60>>60 rolls.\nSo 120 - 60 = <<120-60=60>>60 rolls are left.\n#### 1,060"
    )
    assert gsm8k_target({"answer": answer}) == (
        "He sells 120 / 2 = 60 rolls.\nSo 120 - 60 = 60 rolls are left.\nThe answer is 1,060."
    )
    with pytest.raises(ValueError, match="does not end in '#### <number>'"):
        gsm8k_target({"answer": "no final line"})


# ---------------------------------------------------------------------------------------------- examples
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_builds_evaluation_sets_from_its_fixtures(task):
    data = datamodule(task)
    assert data.val_languages == FIXTURE_LANGUAGES[task] == data.test_languages
    assert data.train_examples == []  # training data is only loaded for fit
    for language, examples in data.val_examples.items():
        assert examples, language
        for position, example in enumerate(examples):
            assert example["index"] == position
            if TASKS[task].kind == "choice":
                assert len(example["option_ids"]) == TASKS[task].num_options
                assert 0 <= example["label"] < TASKS[task].num_options
            else:
                assert example["references"] and example["input_ids"][0] == data.tokenizer.bos_token_id
    batch = data.eval_collator()(data.val_examples[data.val_languages[0]][:2])
    if TASKS[task].kind == "choice":  # no `labels`: AdapterModule rewrites those under loss_on_prompt
        assert "labels" not in batch and (batch["prompt_attention_mask"][:, -1] == 1).all()
        data.share_prompt = False
        rows = data.eval_collator()(data.val_examples[data.val_languages[0]][:2])
        assert "labels" not in rows and rows["option_labels"].shape == rows["input_ids"].shape
    else:
        assert (batch["attention_mask"][:, -1] == 1).all()  # left-padded for generation


def test_option_rows_are_the_tokenization_of_the_full_prompt_and_option():
    data = datamodule("xnli")
    tokenizer = data.tokenizer
    example = data.val_examples["de"][0]
    first_record = data.val_sources[0].local_path().read_text(encoding="utf-8").splitlines()[0]
    prompt = data.template.render(json.loads(first_record))
    assert prompt.startswith("Does the premise entail the hypothesis") and prompt.endswith("\nAnswer:")
    for option, ids in zip(("entailment", "neutral", "contradiction"), example["option_ids"], strict=True):
        assert example["prompt_ids"] + ids == tokenizer(prompt + " " + option)["input_ids"]
    alpaca = datamodule("xnli", prompt_style="alpaca").val_examples["de"][0]
    assert tokenizer.decode(alpaca["prompt_ids"], skip_special_tokens=True).endswith("### Response:\n")
    assert tokenizer.decode(alpaca["option_ids"][0]) == "entailment"  # no space after the newline


def test_seeded_samples_pick_the_same_items_in_every_language(tmp_path):
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3} for i in range(40)]
    val = [DataSource(write_jsonl(tmp_path / f"{lang}.jsonl", rows), language=lang) for lang in ("de", "fr")]
    first = datamodule("xnli", val=val, eval_samples=7)
    de, fr = ([e["index"] for e in first.val_examples[lang]] for lang in ("de", "fr"))
    assert de == fr and len(de) == 7 and de == sorted(de)
    assert [e["index"] for e in datamodule("xnli", val=val, eval_samples=7).val_examples["de"]] == de
    other_seed = datamodule("xnli", val=val, eval_samples=7, seed=1).val_examples["de"]
    assert [e["index"] for e in other_seed] != de


def test_long_articles_are_cut_so_the_instruction_and_the_cue_survive(tmp_path):
    article = "Una frase muy larga sobre la ciudad. " * 200
    val = [
        DataSource(
            write_jsonl(tmp_path / "es.jsonl", [{"text": article, "summary": "Resumen."}]), language="es"
        )
    ]
    data = datamodule("xlsum", val=val, max_length=300, max_new_tokens=20)
    ids = data.val_examples["es"][0]["input_ids"]
    assert len(ids) <= 300 - 20
    text = data.tokenizer.decode(ids, skip_special_tokens=True)
    assert text.startswith("Summarize the article") and text.endswith("\nSummary:")


def test_fit_builds_prompt_masked_training_pairs_even_after_validate():
    data = datamodule("mgsm", stage="validate")
    assert data.train_examples == []
    data.setup("fit")
    assert len(data.train_examples) == 4
    example = data.train_examples[0]
    target = [
        t for t, label in zip(example["input_ids"], example["labels"], strict=True) if label != IGNORE_INDEX
    ]
    assert data.tokenizer.decode(target) == " Sam has 7 + 6 = 13 marbles.\nThe answer is 13.</s>"


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input_names_the_task_the_language_and_the_field(tmp_path):
    good = {"premise": "p", "hypothesis": "h", "label": 0}

    def error(rows=None, **kwargs) -> str:
        if rows is not None:
            kwargs["val"] = [DataSource(write_jsonl(tmp_path / "de.jsonl", rows), language="de")]
        with pytest.raises(ValueError) as info:
            datamodule("xnli", **kwargs)
        return str(info.value)

    message = error([good, {"premise": "p", "label": 1}])
    assert "task 'xnli', language 'de'" in message and "record 1 lacks field(s) ['hypothesis']" in message
    message = error([good, {**good, "label": 5}])
    assert "task 'xnli', language 'de': record 1 of" in message
    assert (
        "label: label=5 is outside the label set {0 (entailment), 1 (neutral), 2 (contradiction)}" in message
    )
    assert "holds no records (an empty split)" in error([])
    assert "names no language" in error(val=[DataSource(write_jsonl(tmp_path / "x.jsonl", [good]))])
    assert "names field(s) ['question']" in error([good], prompt_template="{question}\nAnswer:")
    with pytest.raises(
        ValueError, match=r"task 'xlsum' has no language 'de' \(languages\); csebuetnlp/xlsum has am"
    ):
        TaskDataModule("xlsum", languages=["zh", "de"])
    with pytest.raises(ValueError, match="task 'mgsm' has no training data in 'de' on the hub"):
        datamodule("mgsm", stage="fit", train=None, train_language="de")
    with pytest.raises(ValueError, match="task 'xnli': languages=\\['de'\\] and val sources conflict"):
        TaskDataModule("xnli", languages=["de"], val=fixtures("xnli"))
    with pytest.raises(ValueError, match="task='squad' is not a task of the suite"):
        get_task("squad")
    offline = TaskDataModule("xnli", languages=["de"], tokenizer=TOKENIZER)  # the tests run offline
    with pytest.raises(
        ValueError, match=r"task 'xnli', language 'de': could not load hub dataset facebook/xnli \(de\)"
    ):
        offline.setup("validate")


def test_the_cli_prints_one_line_for_a_language_the_dataset_lacks(tmp_path, capsys, monkeypatch):
    from conftest import REPO_ROOT

    monkeypatch.chdir(tmp_path)
    args = [
        "validate",
        "--config",
        str(REPO_ROOT / "configs/tiny/xlsum.yaml"),
        "--data.init_args.val",
        "null",
    ]
    assert main([*args, "--data.init_args.languages", "[zh, de]"]) == 2
    err = capsys.readouterr().err
    assert err.count("adamergex: error:") == 1
    assert "adamergex: error: task 'xlsum' has no language 'de' (languages)" in err


def test_task_collator_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="kind='ranking'"):
        TaskCollator("ranking", pad_token_id=0)


def test_rows_the_dataset_marks_invalid_are_dropped_and_counted(tmp_path, caplog):
    import logging

    rows = [
        {"id": 1, "sentence1": "a", "sentence2": "b", "label": 1},
        {"id": 2, "sentence1": "c", "sentence2": "d", "label": -1},
        {"id": 3, "sentence1": "e", "sentence2": "  ", "label": 0},
        {"id": 4, "sentence1": "g", "sentence2": "h", "label": 0},
    ]
    val = [DataSource(write_jsonl(tmp_path / "de.jsonl", rows), language="de")]
    with caplog.at_level(logging.INFO):
        data = datamodule("pawsx", val=val)
    assert [e["index"] for e in data.val_examples["de"]] == [0, 3]  # indices in the split
    assert f"{tmp_path / 'de.jsonl'}: dropped 2 of 4 rows (1 with label -1, 1 with an empty sentence2)" in [
        r.getMessage() for r in caplog.records
    ]
    unlabelled = [{**row, "label": -1} for row in rows]
    val = [DataSource(write_jsonl(tmp_path / "zh.jsonl", unlabelled), language="zh")]
    with pytest.raises(
        ValueError, match=r"language 'zh': .*zh\.jsonl: all 4 rows are marked invalid \(label -1"
    ):
        datamodule("pawsx", val=val)
