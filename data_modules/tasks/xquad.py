"""XQuAD (Artetxe et al., 2020): 1,190 SQuAD v1.1 questions with their paragraphs, in 12 languages.

Hub ``google/xquad`` (``xquad.<lang>``, split ``validation``); AdaMergeX samples 1,000 per language. Training:
English SQuAD v1.1 (``rajpurkar/squad``), target the first gold answer. Scoring:
:func:`adamergex_pl.metrics.squad.squad_scores` of the answer's first line.
"""

from __future__ import annotations

from collections.abc import Mapping

from data_modules.sources import DataSource
from data_modules.tasks.spec import Record, TaskSpec

LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")


def answer_texts(record: Record) -> list[str]:
    """The gold answer strings of a SQuAD-layout record.

    Raises:
        ValueError: ``answers`` is not ``{"text": [<non-empty list of strings>], ...}``.
    """
    answers = record["answers"]
    texts = answers.get("text") if isinstance(answers, Mapping) else None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError(
            f"answers={answers!r} must be {{'text': [<answer>, ...], 'answer_start': [...]}} with at least one "
            "answer string"
        )
    return list(texts)


XQUAD = TaskSpec(
    name="xquad",
    kind="generation",
    hub_path="google/xquad",
    configs={lang: f"xquad.{lang}" for lang in LANGUAGES},
    eval_split="validation",
    paper_languages=("ar", "de", "el", "es", "hi", "ru", "th", "tr", "vi", "zh"),
    paper_samples=1000,
    fields=("context", "question", "answers"),
    train_source=DataSource("rajpurkar/squad", split="train", language="en"),
    train_fields=("context", "question", "answers"),
    train_split=None,
    instruction="Answer the question with a short span copied from the context.",
    input_template="Context: {context}\nQuestion: {question}",
    cue="Answer:",
    train_target=lambda record: answer_texts(record)[0],
    references=answer_texts,
    metric="squad",
    max_new_tokens=32,
    stops=("\n",),
    truncate_field="context",
)
