"""Reading records from local files and templates over their fields."""

from __future__ import annotations

import json

import pytest

from data_modules.instruction_format import PromptTemplate
from data_modules.sources import (
    MIRROR_ENV,
    PARQUET_EXPORT,
    DataSource,
    ReadCounter,
    iter_records,
    load_records,
    mirror_folder,
)

RECORDS = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]


def test_every_local_format_gives_the_same_records(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(RECORDS))
    (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n\n")
    (tmp_path / "r.csv").write_text("prompt,completion\na,b\nc,d\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "r.parquet")
    for suffix in ("json", "jsonl", "csv", "parquet"):
        assert load_records(DataSource(str(tmp_path / f"r.{suffix}"))) == RECORDS, suffix


def test_json_object_needs_its_field(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": RECORDS, "version": 1}))
    assert load_records(DataSource(str(path), field="data")) == RECORDS
    with pytest.raises(ValueError, match=r"holds a JSON object with keys \['data', 'version'\]; set field"):
        load_records(DataSource(str(path)))


def test_text_file_is_one_record(tmp_path):
    (tmp_path / "t.txt").write_text("hola mundo")
    assert load_records(DataSource(str(tmp_path / "t.txt"))) == [{"text": "hola mundo"}]


def test_builtin_data_is_shipped_with_the_package():
    records = load_records(DataSource("builtin:tiny/add_es.jsonl"))
    assert records[0]["prompt"] == "Suma: cero más cero =" and len(records) == 66


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data file '.*nope\.jsonl' does not exist"):
        load_records(DataSource(str(tmp_path / "nope.jsonl")))


def test_a_hub_name_offline_gets_one_clear_message():
    with pytest.raises(
        ValueError, match=r"could not load hub dataset no-such-org/no-such-set \(en\) \[train\]"
    ):
        load_records(DataSource("no-such-org/no-such-set", name="en"))


def test_template_renders_fields_and_refuses_missing_ones():
    template = PromptTemplate("Q: {question}\nA:", "prompt_template")
    assert template.render({"question": "2+2?", "other": 1}) == "Q: 2+2?\nA:"
    with pytest.raises(
        ValueError, match=r"prompt_template='Q: \{question\}\\nA:' names field\(s\) \['question'\]"
    ):
        template.check_fields(["query"], "train.jsonl")


def test_template_refuses_positional_and_malformed_fields():
    with pytest.raises(ValueError, match="uses fields"):
        PromptTemplate("{0} and {x.y}")
    with pytest.raises(ValueError, match="not a valid format string"):
        PromptTemplate("{unclosed")
    assert PromptTemplate("{{literal}} {x}").render({"x": 1}) == "{literal} 1"


ROWS = [{"id": i, "text": f"doc {i}"} for i in range(57)]


def _parquet(path, rows=ROWS, row_group_size=10):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return DataSource(str(path))


def test_iter_records_reads_in_file_order_or_in_a_seeded_order(tmp_path, monkeypatch):
    import data_modules.sources as sources

    monkeypatch.setattr(sources, "JSONL_CHUNK_BYTES", 64)  # several byte ranges in a small file
    jsonl = tmp_path / "docs.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")
    for source in (_parquet(tmp_path / "docs.parquet"), DataSource(str(jsonl))):
        assert list(iter_records(source)) == load_records(source) == ROWS
        first, again, other = (list(iter_records(source, seed=s)) for s in (1, 1, 2))
        assert first == again != other and first != ROWS
        assert sorted(first, key=lambda r: r["id"]) == ROWS  # every record once
        # row groups / byte ranges come in a seeded order too: a stream need not start at the file's start
        assert max(next(iter_records(source, seed=s))["id"] for s in range(8)) >= 10
        # stopping early leaves the rest unread: a row group / byte range at a time
        counter = ReadCounter()
        records = iter_records(source, seed=1, counter=counter)
        taken = [next(records) for _ in range(3)]
        records.close()
        assert taken == first[:3] and counter.emitted == 3 and counter.rows <= 10, (source.path, counter)


def test_a_bad_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: holds a list, not an object"):
        load_records(DataSource(str(path)))
    path.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2, column 10: not valid JSON"):
        load_records(DataSource(str(path)))


def test_data_dir_and_revision_are_checked_before_loading(tmp_path):
    for data_dir in ("/abs/spanish", "../spanish", "  "):
        with pytest.raises(
            ValueError, match=r"data_dir=.*expected a folder inside the dataset repository, relative"
        ):
            load_records(DataSource("csebuetnlp/xlsum", data_dir=data_dir))
    with pytest.raises(ValueError, match=r"facebook/xnli: split=''; expected a split name"):
        load_records(DataSource("facebook/xnli", name="de", split=""))
    source = DataSource("csebuetnlp/xlsum", name="spanish", split="test", revision=PARQUET_EXPORT)
    assert source.describe() == "csebuetnlp/xlsum (spanish) [test] @refs/convert/parquet"
    resolved = source.resolve()
    assert (resolved.kind, resolved.name, resolved.data_dir, resolved.revision) == (
        "hub",
        None,
        "spanish",
        PARQUET_EXPORT,
    )
    assert DataSource("google/xquad", name="xquad.de", revision="main").resolve().name == "xquad.de"


def test_the_mirror_maps_hub_ids_and_revisions_to_folders(tmp_path, monkeypatch):
    assert mirror_folder(tmp_path, "facebook/xnli") == tmp_path / "facebook" / "xnli"
    assert mirror_folder(tmp_path, "csebuetnlp/xlsum", PARQUET_EXPORT) == (
        tmp_path / "csebuetnlp" / "xlsum@refs%2Fconvert%2Fparquet"
    )
    (tmp_path / "facebook" / "xnli").mkdir(parents=True)
    source = DataSource("facebook/xnli", name="de", split="test")
    assert source.resolve().kind == "hub"  # no mirror set
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path))
    resolved = source.resolve()
    assert (resolved.kind, resolved.target, resolved.mirror) == (
        "directory",
        str(tmp_path / "facebook/xnli"),
        True,
    )
    assert DataSource("openai/gsm8k", name="main").resolve().kind == "hub"  # not mirrored: the hub
