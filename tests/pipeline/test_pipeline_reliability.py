"""``adamergex pipeline`` trusts the disk, not only its records: a skipped stage's outputs must exist and be
the ones it recorded, a damaged checkpoint is reported and refitted, and a recipe that cannot run to its end
(evaluation languages, metric names, method requirements, data files) is refused before the first fit."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import yaml
from conftest import REPO_ROOT
from fault_injection import small_pipeline
from safetensors.torch import load_file, save_file

from adamergex_pl.cli import main

RUN = "runs/tiny/pipeline"


def pipeline(config, capsys) -> tuple[int, str]:
    code = main(["pipeline", "--config", str(config)])
    return code, capsys.readouterr().out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished small pipeline: its folder, config and table."""
    cwd = tmp_path_factory.mktemp("pipeline")
    config = small_pipeline(cwd / "pipeline.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        assert main(["pipeline", "--config", str(config)]) == 0
    return cwd, config, (cwd / RUN / "results.md").read_text()


def test_deleted_outputs_of_a_finished_stage_are_made_again(finished, capsys, monkeypatch):
    cwd, config, table = finished
    monkeypatch.chdir(cwd)
    shutil.rmtree(cwd / RUN / "reference_es/snapshots")
    code, out = pipeline(config, capsys)
    assert code == 0
    assert (
        f"reference_es: runs again: its outputs ({RUN}/reference_es/snapshots) are missing or incomplete"
        in out
    )
    assert "reference_es: removed checkpoints of an earlier attempt" in out  # a fresh fit, not a no-op resume
    assert "task_add_en: done, skipped" in out and (cwd / RUN / "results.md").read_text() == table
    assert pipeline(config, capsys)[1].count("done, skipped") == 4


def test_a_replaced_adapter_or_a_changed_input_makes_its_stages_run_again(finished, capsys, monkeypatch):
    cwd, config, table = finished
    monkeypatch.chdir(cwd)
    weights = cwd / RUN / "task_add_en/snapshots/last/adapter_model.safetensors"
    original = weights.read_bytes()
    tensors = load_file(weights)
    save_file({k: v * 1.5 for k, v in tensors.items()}, str(weights))  # replaced behind the record's back
    code, out = pipeline(config, capsys)
    assert (
        code == 0
        and f"task_add_en: runs again: its outputs ({RUN}/task_add_en/snapshots) changed since it finished"
        in out
    )
    assert weights.read_bytes() == original and (cwd / RUN / "results.md").read_text() == table
    # a dependency that finished again with other weights (its record agrees): the evaluation runs again
    record_path = cwd / RUN / "task_add_en/stage.json"
    record = json.loads(record_path.read_text())
    save_file({k: v * 1.5 for k, v in tensors.items()}, str(weights))
    from adamergex_pl.pipeline.stage_records import output_digest

    record_path.write_text(json.dumps({**record, "outputs": output_digest(cwd / RUN / "task_add_en", True)}))
    code, out = pipeline(config, capsys)
    assert code == 0 and "evaluate_add: runs again: the outputs of task_add_en changed since it ran" in out
    assert "task_add_en: done, skipped" in out and (cwd / RUN / "results.md").read_text() != table


def test_a_damaged_checkpoint_of_an_interrupted_fit_is_reported_and_refitted(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = small_pipeline(tmp_path / "pipeline.yaml")
    assert pipeline(config, capsys)[0] == 0
    table = (tmp_path / RUN / "results.md").read_text()
    stage = tmp_path / RUN / "reference_en"
    fingerprint = json.loads((stage / "stage.json").read_text())["fingerprint"]
    (stage / "stage.json").unlink()  # as if killed mid-fit: an attempt and its checkpoint
    (stage / "attempt.json").write_text(json.dumps({"stage": "reference_en", "fingerprint": fingerprint}))
    with (stage / "checkpoints/last.ckpt").open("r+b") as handle:
        handle.truncate(3000)  # what a full disk left before checkpoints were atomic
    code, out = pipeline(config, capsys)
    assert code == 0, out
    assert (
        f"reference_en: cannot resume from {RUN}/reference_en/checkpoints/last.ckpt: it is truncated or not a "
        "checkpoint" in out
    )
    assert "fitting it again" in out and "removed snapshots, checkpoints of an earlier attempt" in out
    assert (tmp_path / RUN / "results.md").read_text() == table


def _refused_before_any_fit(tmp_path, capsys, monkeypatch, **overrides) -> str:
    monkeypatch.chdir(tmp_path)
    config = small_pipeline(tmp_path / "pipeline.yaml", **overrides)
    assert main(["pipeline", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("adamergex: error:") == 1 and "Traceback" not in captured.err, captured.err
    assert "adamergex fit" not in captured.out and not (tmp_path / RUN).exists(), "a fit ran first"
    return captured.err.strip()


def _tiny(section: str) -> dict:
    """A section of ``configs/pipeline/tiny.yaml``, to change one thing in it."""
    return copy.deepcopy(yaml.safe_load((REPO_ROOT / "configs/pipeline/tiny.yaml").read_text())[section])


def test_evaluation_data_without_a_target_language_is_refused_before_any_fit(tmp_path, capsys, monkeypatch):
    evaluation = {
        "data": {
            "class_path": "data_modules.TaskDataModule",
            "init_args": {"task": "xnli", "languages": ["en", "de"]},
        }
    }
    err = _refused_before_any_fit(tmp_path, capsys, monkeypatch, evaluation=evaluation)
    assert "evaluation.data languages ['en', 'de'] differ from the task's languages ['en', 'es']" in err


def test_evaluation_records_without_the_completion_field_are_refused_before_any_fit(
    tmp_path, capsys, monkeypatch
):
    (tmp_path / "es.jsonl").write_text('{"prompt": "2+2="}\n{"prompt": "3+3="}\n')  # no "completion"
    evaluation = _tiny("evaluation")
    evaluation["data"]["init_args"]["val"][1]["path"] = str(tmp_path / "es.jsonl")
    err = _refused_before_any_fit(tmp_path, capsys, monkeypatch, evaluation=evaluation)
    assert (
        "stage evaluate_add: completion_template='{completion}' names field(s) ['completion'] that the records of "
        f"{tmp_path}/es.jsonl lack" in err
    ), err


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"metric": "accuracy"},
         "metric='accuracy' is not a metric the evaluation reports; it reports loss, perplexity"),
        ({"metric": None, "evaluation": {**_tiny("evaluation"), "merge": {"selection_metric": "f1"}}},
         "evaluation.merge.selection_metric='f1' is not a metric the evaluation reports"),
        ({"model": {**_tiny("model"), "adapter_type": "ia3"}, "methods": ["adamergex", "adamergex_factor"]},
         "method 'adamergex_factor'"),
        ({"evaluation": {**_tiny("evaluation"), "merge": {"lora_mode": "svd"}}}, "lora_mode: svd but no svd_rank"),
        ({"scales": [0.5, float("nan")]}, "scales=nan must be finite, e.g. 0.5"),
    ],
)  # fmt: skip
def test_metrics_and_method_requirements_are_checked_before_any_fit(
    tmp_path, capsys, monkeypatch, overrides, expected
):
    assert expected in _refused_before_any_fit(tmp_path, capsys, monkeypatch, **overrides)


def test_a_missing_data_file_or_a_bad_data_option_is_refused_before_any_fit(tmp_path, capsys, monkeypatch):
    reference = _tiny("reference")
    reference["data"]["init_args"]["train"] = {"path": "data/wiki_{lang}.jsonl"}
    err = _refused_before_any_fit(tmp_path, capsys, monkeypatch, reference=reference)
    assert "stage reference_en: data file 'data/wiki_en.jsonl' does not exist" in err
    task = _tiny("task")
    task["data"]["init_args"]["batch_sise"] = 8
    err = _refused_before_any_fit(tmp_path, capsys, monkeypatch, task=task)
    assert (
        "stage task_add_en: data (data_modules.InstructionDataModule): Option 'batch_sise' is not accepted"
        in err
    )


def _drop_field(source: str, target, field: str, line: int) -> None:
    """``target``: the records of the shipped ``source`` file, with ``field`` removed from line ``line``."""
    from data_modules.sources import DataSource

    lines = DataSource(source).local_path().read_text().splitlines()
    record = json.loads(lines[line - 1])
    del record[field]
    lines[line - 1] = json.dumps(record)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("datamodule", ["ReferenceLMDataModule", "TaskDataModule"])
def test_training_records_without_a_needed_field_are_refused_before_any_fit(
    tmp_path, capsys, monkeypatch, datamodule
):
    """The second fit (reference_en) reads a file whose third record lacks a field: nothing is fitted."""
    reference = _tiny("reference")
    if datamodule == "ReferenceLMDataModule":  # text_fields: [prompt, completion]
        for lang in ("en", "es"):
            _drop_field(
                f"builtin:tiny/wiki_{lang}.jsonl", tmp_path / f"data/wiki_{lang}.jsonl", "completion", 3
            )
        reference["data"]["init_args"]["train"] = {"path": "data/wiki_{lang}.jsonl"}
        expected = (
            "stage reference_en: data/wiki_en.jsonl, line 3: lacks field 'completion' that "
            "text_fields=['prompt', 'completion'] names (the record has ['prompt']); fix the record or drop it"
        )
    else:  # the demo's counting task as the reference task
        for lang in ("en", "es"):
            _drop_field(f"builtin:demo/count_{lang}.jsonl", tmp_path / f"data/count_{lang}.jsonl", "label", 3)
        reference["data"] = {
            "class_path": "data_modules.TaskDataModule",
            "init_args": {"task": "count", "train": {"path": "data/count_{lang}.jsonl", "language": "{lang}"},
                          "train_language": "{lang}", "languages": ["{lang}"], "max_length": 32},
        }  # fmt: skip
        expected = (
            "stage reference_en: task 'count', language 'en': data/count_en.jsonl: record 2 lacks field(s) "
            "['label'] (line 3); the task needs ['question', 'options', 'label']"
        )
    err = _refused_before_any_fit(tmp_path, capsys, monkeypatch, reference=reference)
    assert err.count("\n") == 0 and err.startswith(f"adamergex: error: {expected}"), err


def test_a_task_without_tgt_langs_is_named(tmp_path, capsys):
    raw = yaml.safe_load((REPO_ROOT / "configs/pipeline/paper_llama2_7b.yaml").read_text())
    del raw["tasks"]["xcopa"]["tgt_langs"]
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(raw))
    assert main(["pipeline", "--config", str(tmp_path / "pipeline.yaml"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "adamergex: error: tasks.xcopa.tgt_langs is empty; name at least one target language, e.g. [es]\n"
    ), err
