"""InstructionDataModule: prompt masking, truncation, splits and per-language validation."""

from __future__ import annotations

import json

import pytest

from data_modules import DataSource, InstructionDataModule
from data_modules.collate import IGNORE_INDEX, PadCollator


def _write(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return str(path)


def _module(tiny_llama_path, **kwargs):
    module = InstructionDataModule(tokenizer=tiny_llama_path, **kwargs)
    module.setup("fit")
    return module


def test_labels_cover_exactly_the_completion_and_eos(tiny_llama_path, tmp_path):
    path = _write(tmp_path / "t.jsonl", [{"q": "ab", "a": "xyz"}])
    module = _module(
        tiny_llama_path, train=DataSource(path), prompt_template="{q}=", completion_template="{a}"
    )
    (example,) = module.train_examples
    tok = module.tokenizer
    prompt = tok("ab=").input_ids  # <s> a b =
    completion = [*tok("xyz", add_special_tokens=False).input_ids, tok.eos_token_id]
    assert example["input_ids"] == prompt + completion
    assert example["labels"] == [IGNORE_INDEX] * len(prompt) + completion


def test_truncation_drops_examples_without_completion_and_refuses_empty_data(tiny_llama_path, tmp_path):
    path = _write(tmp_path / "t.jsonl", [{"q": "a" * 30, "a": "b"}, {"q": "c", "a": "d"}])
    kwargs = dict(train=DataSource(path), prompt_template="{q}", completion_template="{a}")
    module = _module(tiny_llama_path, max_length=20, **kwargs)
    assert len(module.train_examples) == 1
    with pytest.raises(
        ValueError, match=r"no rows left after dropping the 2 whose prompt alone reaches max_length=2"
    ):
        _module(tiny_llama_path, max_length=2, **kwargs)


def test_template_with_missing_field_stops_before_tokenizing(tiny_llama_path, tmp_path):
    path = _write(tmp_path / "t.jsonl", [{"question": "a", "answer": "b"}])
    with pytest.raises(
        ValueError, match=r"names field\(s\) \['prompt'\] .* their fields are \['question', 'answer'\]"
    ):
        _module(tiny_llama_path, train=DataSource(path))


def test_val_fraction_holds_out_disjoint_records_and_max_samples_is_seeded(tiny_llama_path, tmp_path):
    records = [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(40)]
    path = _write(tmp_path / "t.jsonl", records)
    a = _module(tiny_llama_path, train=DataSource(path), val_fraction=0.25, max_samples=10, seed=3)
    b = _module(tiny_llama_path, train=DataSource(path), val_fraction=0.25, max_samples=10, seed=3)
    c = _module(tiny_llama_path, train=DataSource(path), val_fraction=0.25, max_samples=10, seed=4)
    assert a.val_languages == ["en"] and len(a.val_examples["en"]) == 10 and len(a.train_examples) == 10
    train_ids = {tuple(e["input_ids"]) for e in a.train_examples}
    assert not train_ids & {tuple(e["input_ids"]) for e in a.val_examples["en"]}
    assert a.train_examples == b.train_examples
    assert a.train_examples != c.train_examples


def test_one_validation_set_per_language_and_no_duplicates(tiny_llama_path):
    en, es = DataSource("builtin:tiny/add_en.jsonl"), DataSource("builtin:tiny/add_es.jsonl", language="es")
    module = _module(tiny_llama_path, train=en, val=[en, es], max_val_samples=5)
    assert module.val_languages == ["en", "es"]
    assert [len(d.dataset) for d in module.val_dataloader()] == [5, 5]
    with pytest.raises(ValueError, match="two val sources have language 'en'"):
        _module(tiny_llama_path, train=en, val=[en, en])
    with pytest.raises(ValueError, match=r"val sources and val_fraction=0\.1 conflict"):
        InstructionDataModule(train=en, val=[es], val_fraction=0.1)


def test_dynamic_padding_right_for_training_left_for_generation():
    examples = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    right = PadCollator(pad_token_id=0)(examples)
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    left = PadCollator(pad_token_id=0, padding_side="left", pad_to_multiple_of=4)(examples)
    assert left["input_ids"].tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]]
    assert left["attention_mask"].tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]
