"""Reading records from local files and templates over their fields."""

from __future__ import annotations

import json

import pytest

from adamergex_pl.data.sources import DataSource, load_records
from adamergex_pl.data.templates import PromptTemplate

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
