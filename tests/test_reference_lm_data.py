"""ReferenceLMDataModule: windows of exactly N tokens from one language's text."""

from __future__ import annotations

import json

import pytest

from data_modules import DataSource, ReferenceLMDataModule

WIKI_ES = DataSource("builtin:tiny/wiki_es.jsonl", language="es")


def _module(tiny_llama_path, **kwargs):
    module = ReferenceLMDataModule(tokenizer=tiny_llama_path, **kwargs)
    module.setup("fit")
    return module


def test_windows_are_exactly_window_tokens_of_the_joined_text(tiny_llama_path):
    module = _module(
        tiny_llama_path,
        train=WIKI_ES,
        text_fields=["prompt", "completion"],
        record_separator=" ",
        window_tokens=100,
    )
    records = [json.loads(line) for line in WIKI_ES.local_path().read_text(encoding="utf-8").splitlines()]
    text = " ".join(f"{r['prompt']} {r['completion']}" for r in records)
    stream = module.tokenizer(text, add_special_tokens=False).input_ids
    assert len(module.train_examples) == len(stream) // 100
    assert all(len(e["input_ids"]) == 100 and e["labels"] == e["input_ids"] for e in module.train_examples)
    assert module.train_examples[1]["input_ids"] == stream[100:200]


def test_independent_documents_are_separated_by_eos(tiny_llama_path, tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "abc"}\n{"text": "de"}\n')
    module = _module(tiny_llama_path, train=DataSource(str(path)), window_tokens=3)
    eos, tok = module.tokenizer.eos_token_id, module.tokenizer
    ids = lambda s: tok(s, add_special_tokens=False).input_ids  # noqa: E731
    assert [e["input_ids"] for e in module.train_examples] == [ids("abc"), [eos, *ids("de")]]


def test_max_windows_is_a_seeded_subset_and_val_fraction_is_disjoint(tiny_llama_path):
    kwargs = dict(train=WIKI_ES, text_fields=["prompt", "completion"], window_tokens=64, val_fraction=0.1)
    a = _module(tiny_llama_path, max_windows=20, seed=1, **kwargs)
    b = _module(tiny_llama_path, max_windows=20, seed=1, **kwargs)
    assert len(a.train_examples) == 20 and a.train_examples == b.train_examples
    assert a.val_languages == ["en"]  # the module's language names held-out windows of its own text
    train = {tuple(e["input_ids"]) for e in a.train_examples}
    assert not train & {tuple(e["input_ids"]) for e in a.val_examples["en"]}


def test_text_too_short_or_fields_missing_are_refused(tiny_llama_path, tmp_path):
    path = tmp_path / "short.jsonl"
    path.write_text('{"text": "hola"}\n')
    with pytest.raises(ValueError, match=r"has 5 tokens, fewer than one window of window_tokens=512"):
        _module(tiny_llama_path, train=DataSource(str(path)))
    with pytest.raises(
        ValueError, match=r"text_fields \['body'\] are not fields of .*its fields are \['text'\]"
    ):
        _module(tiny_llama_path, train=DataSource(str(path)), text_fields=["body"])
