"""The embedded demo's task: the number that comes next, before, or two after a number, in words.

Shipped in English and Spanish (``adamergex_pl/assets/demo/count_<lang>.jsonl``, the same 59 items); the demo
base model ``builtin:demo-bilingual`` counts in both but never saw this task, so an English task adapter's
Spanish accuracy measures transfer. There is no held-out split.
"""

from __future__ import annotations

from data_modules.sources import DataSource
from data_modules.tasks.spec import Record, TaskSpec


def _options(record: Record) -> list[str]:
    options = record["options"]
    if not isinstance(options, list) or not options:
        raise ValueError(f"options={options!r} must be a non-empty list of number words")
    return [str(o) for o in options]


def _label(record: Record) -> int:
    label, count = record["label"], len(_options(record))
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < count:
        raise ValueError(f"label={label!r} is outside the label set 0..{count - 1}")
    return label


COUNT = TaskSpec(
    name="count",
    kind="choice",
    hub_path="builtin:demo/count_{lang}.jsonl",
    configs={"en": "en", "es": "es"},
    eval_split="all",
    paper_languages=("en", "es"),
    paper_samples=None,
    fields=("question", "options", "label"),
    train_source=DataSource("builtin:demo/count_en.jsonl", language="en"),
    train_fields=("question", "options", "label"),
    train_split="all",
    instruction="Answer with a number word.",
    input_template="{question}",
    cue="",
    train_target=lambda record: _options(record)[_label(record)],
    options=_options,
    label=_label,
    num_options=21,
    metric="accuracy",
)
