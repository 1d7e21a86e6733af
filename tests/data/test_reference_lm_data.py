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


def _wiki_parquet(path, articles: int, row_group_size: int = 50) -> DataSource:
    """A Wikipedia-shaped Parquet corpus (id, url, title, text) in row groups, as hub Parquet files come."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {
            "id": str(i),
            "url": f"https://es.wikipedia.org/wiki?curid={i}",
            "title": f"Artículo {i}",
            "text": " ".join(f"El artículo {i} dice la frase {k}." for k in range(4 + i % 9)),
        }
        for i in range(articles)
    ]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return DataSource(str(path), language="es")


def test_keeping_max_windows_costs_the_same_on_a_ten_times_larger_corpus(tiny_llama_path, tmp_path):
    small = _wiki_parquet(tmp_path / "small.parquet", 400)
    large = _wiki_parquet(tmp_path / "large.parquet", 4000)
    kwargs = dict(window_tokens=64, max_windows=20, val_fraction=0.1, seed=3)
    cost = {}
    for name, source in (("small", small), ("large", large)):
        module = _module(tiny_llama_path, train=source, **kwargs)
        assert len(module.train_examples) == 20 and len(module.val_examples["en"]) == 2
        assert all(len(e["input_ids"]) == 64 for e in module.train_examples)
        cost[name] = (module.read_counter.rows, module.documents_tokenized)
    (rows_small, tokenized_small), (rows_large, tokenized_large) = cost["small"], cost["large"]
    assert rows_large <= 1.5 * rows_small and tokenized_large <= 1.5 * tokenized_small, cost
    assert rows_small <= 100 and tokenized_small <= 40, cost  # a row group or two of the 400 articles
    # without max_windows the whole text is read, in order, as one EOS-separated stream
    everything = _module(tiny_llama_path, train=small, window_tokens=64)
    assert everything.documents_tokenized == everything.read_counter.rows == 400
    import pyarrow.parquet as pq

    tok = everything.tokenizer
    stream = []
    for text in pq.read_table(small.path).column("text").to_pylist():
        stream += [*tok(text, add_special_tokens=False).input_ids, tok.eos_token_id]
    assert [e["input_ids"] for e in everything.train_examples] == [
        stream[i : i + 64] for i in range(0, len(stream) - 63, 64)
    ]


def test_the_windows_depend_on_the_seed_and_never_on_the_rank(tiny_llama_path, tmp_path):
    from types import SimpleNamespace

    source = _wiki_parquet(tmp_path / "wiki.parquet", 300, row_group_size=20)
    built = []
    for rank, seed in ((0, 5), (1, 5), (0, 6)):
        module = ReferenceLMDataModule(
            tokenizer=tiny_llama_path, train=source, window_tokens=32, max_windows=10, seed=seed
        )
        module.trainer = SimpleNamespace(world_size=2, global_rank=rank)  # what a DDP process sees
        module.setup("fit")
        built.append([e["input_ids"] for e in module.train_examples])
    assert built[0] == built[1] != built[2]
