"""CrossInDataModule (prompt formats, loss on responses only, validation per mode) and `adamergex crossin build`."""

from __future__ import annotations

import json

import pytest
from conftest import REPO_ROOT

from adamergex_pl.cli import main
from data_modules import CrossInDataModule, DataSource
from data_modules.collate import IGNORE_INDEX
from data_modules.crossin_mixture import CrossInMixture
from data_modules.instruction_format import InstructionFormat

TINY_CONFIG = REPO_ROOT / "configs/tiny/crossin_x2x.yaml"
PARALLEL = [
    DataSource(f"builtin:crossin/alpaca_{lang}.jsonl", language=lang) for lang in ("en", "zh", "vi", "es")
]
BASE = DataSource("builtin:crossin/base_en.jsonl")


def _module(tiny_llama_path, **kwargs) -> CrossInDataModule:
    kwargs = {"parallel": PARALLEL, "base": BASE, "variant": "x2x+trans", "n": 10, **kwargs}
    module = CrossInDataModule(tokenizer=tiny_llama_path, **kwargs)
    module.setup("fit")
    return module


@pytest.mark.parametrize("prompt_format", ["alpaca", "plain", "chat"])
def test_loss_is_on_the_response_only(tiny_llama_path, prompt_format):
    module = _module(tiny_llama_path, prompt_format=prompt_format)
    tok = module.tokenizer
    assert len(module.train_examples) == len(module.train_rows) == 12 + 3 * 10
    for row, example in zip(module.train_rows, module.train_examples, strict=True):
        prompt, completion = InstructionFormat(prompt_format).render(row, tok)
        response = [t for t in example["labels"] if t != IGNORE_INDEX]
        masked = example["labels"][: len(example["labels"]) - len(response)]
        assert masked == [IGNORE_INDEX] * len(masked) and example["input_ids"][len(masked) :] == response
        assert tok.decode(response) == completion + ("" if prompt_format == "chat" else tok.eos_token)
        assert tok.decode(example["input_ids"][: len(masked)], skip_special_tokens=True) == prompt.replace(
            "<s>", ""
        )
        assert row["output"] in completion and row["input"] in prompt


def test_prompt_formats_place_the_input_and_tag():
    row = {"instruction": "Add the two numbers.", "input": "3 and 4\n[zh]", "output": "7"}
    alpaca, _ = InstructionFormat("alpaca").render(row)
    assert alpaca.endswith(
        "### Instruction:\nAdd the two numbers.\n\n### Input:\n3 and 4\n[zh]\n\n### Response:\n"
    )
    no_input, _ = InstructionFormat("alpaca").render({**row, "input": ""})
    assert "### Input:" not in no_input and no_input.endswith("### Response:\n")
    assert InstructionFormat("plain").render(row) == ("Add the two numbers.\n\n3 and 4\n[zh]\n\n", "7")
    with pytest.raises(
        ValueError, match=r"prompt_format='json' is not supported; expected one of alpaca, plain, chat"
    ):
        InstructionFormat("json")


def test_validation_is_grouped_by_mode_and_disjoint_from_training(tiny_llama_path):
    module = _module(tiny_llama_path, n=40, val_fraction=0.25, max_val_samples=4)
    assert module.val_languages == ["base", "en2x", "x2en", "trans"]
    assert {k: len(v) for k, v in module.val_examples.items()} == {
        "base": 3,
        "en2x": 4,
        "x2en": 4,
        "trans": 4,
    }
    train_items = {r["index"] for r in module.train_rows if r["mode"]}
    val_items = {r["index"] for r in module.val_rows if r["mode"]}
    assert len(val_items) == 5 and not train_items & val_items
    assert module.build_evaluator().languages == ["base", "en2x", "x2en", "trans"]
    # no validation split: no evaluator, and AdapterModule runs no evaluation
    assert _module(tiny_llama_path).build_evaluator() is None


def test_rows_cut_to_nothing_are_dropped_and_an_empty_dataset_refused(tiny_llama_path):
    assert len(_module(tiny_llama_path, variant="base", max_length=200).train_examples) < 12
    with pytest.raises(
        ValueError, match=r"no rows left after dropping the 12 whose prompt alone reaches max_length=20"
    ):
        _module(tiny_llama_path, variant="base", max_length=20)


# ---- adamergex crossin build -------------------------------------------------------------------------------


def _rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_build_command_writes_the_configured_mixture(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    out = tmp_path / "mix.jsonl"
    assert main(["crossin", "build", "--config", str(TINY_CONFIG), "--out", str(out), "--split", "all"]) == 0
    rows = _rows(out)
    expected_train, expected_val = CrossInMixture(
        parallel=PARALLEL, base=BASE, variant="x2x", n=16, val_fraction=0.2, seed=0
    ).build()
    assert rows == [{"split": "train", **r} for r in expected_train] + [
        {"split": "val", **r} for r in expected_val
    ]
    assert "train {'base': 10, 'en2x': 16, 'x2en': 16}" in capsys.readouterr().out

    # overrides work as in `fit`; --rendered adds the text the model is trained on
    argv = ["crossin", "build", "--config", str(TINY_CONFIG), "--data.init_args.variant", "en2x+trans",
            "--data.init_args.n", "3", "--data.init_args.prompt_format", "chat", "--rendered",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = _rows(out)
    assert CrossInMixture.counts(rows) == {"base": 10, "en2x": 3, "trans": 3}
    assert rows[-1]["prompt"].startswith("<s><|user|>\n") and rows[-1]["completion"].endswith("</s>")


def test_build_command_refuses_conflicts_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO_ROOT)
    out = tmp_path / "mix.jsonl"
    argv = [
        "crossin",
        "build",
        "--config",
        str(TINY_CONFIG),
        "--data.init_args.modes",
        "[0, 1]",
        "--out",
        str(out),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("adamergex: error: variant='x2x' and modes=[0, 1] are both set")
        and err.count("\n") == 1
    )
    assert not out.exists()
    assert main(["crossin", "shuffle"]) == 2
    assert "unknown crossin subcommand 'shuffle'" in capsys.readouterr().err


def test_check_local_records_refuses_a_record_without_output_before_any_tokenizer(tmp_path):
    """What ``adamergex pipeline`` runs before its first fit: offline, no tokenizer loaded."""
    lines = PARALLEL[1].local_path().read_text().splitlines()
    record = json.loads(lines[2])
    del record["output"]
    lines[2] = json.dumps(record)
    (tmp_path / "alpaca_zh.jsonl").write_text("\n".join(lines) + "\n")
    bad = [PARALLEL[0], DataSource(str(tmp_path / "alpaca_zh.jsonl"), language="zh")]
    module = CrossInDataModule(parallel=bad, base=BASE, variant="x2x", n=4, tokenizer="not-loaded")
    with pytest.raises(
        ValueError, match=rf"^{tmp_path}/alpaca_zh.jsonl record 2 lacks field\(s\) \['output'\]"
    ):
        module.check_local_records()
    CrossInDataModule(
        parallel=PARALLEL, base=BASE, variant="x2x+trans", n=4, tokenizer="x"
    ).check_local_records()
