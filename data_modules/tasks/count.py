"""The embedded demo's task: the number that comes next, before, or two after a number, in words.

It ships with the package (``adamergex_pl/assets/demo/count_<lang>.jsonl``, written by
``scripts/build_demo_model.py``) in English and Spanish, with the same 59 items in both languages: "Next: three ="
-> "four", "Siguiente: tres =" -> "cuatro". The demo's base model (``builtin:demo-bilingual``) learnt to count
in both languages in pretraining but never saw this task. Options are all of the language's number words, zero
to twenty, ranked by log-likelihood.

What it measures: a task adapter trained on the English items learns them (its English accuracy is a training
accuracy); its Spanish accuracy measures how much of that transfers to the parallel Spanish items, which it
never saw. An oracle trained on the Spanish items is a ceiling, not a competitor. A 1.3M-parameter model does
not generalise the relations to unseen numbers within a language, so there is no held-out split.

Fields: ``question``, ``answer``, ``options`` (the number words), ``label`` (the answer's index), ``item``.
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
