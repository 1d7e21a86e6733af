"""MGSM (Shi et al., 2022): 250 grade-school maths word problems from GSM8K, translated into 10 languages.

Hub ``juletxara/mgsm``, split ``test``. Training: GSM8K (``openai/gsm8k``, ``main``, ``train``), solutions
without ``<<48/2=24>>`` annotations ending in ``The answer is 72.``. Scoring:
:func:`adamergex_pl.metrics.numbers.extract_final_number` of the GENERATED text.
"""

from __future__ import annotations

import re

from data_modules.sources import DataSource
from data_modules.tasks.spec import Record, TaskSpec

LANGUAGES = ("bn", "de", "en", "es", "fr", "ja", "ru", "sw", "te", "th", "zh")
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"\n?####\s*(\S+)\s*$")


def gsm8k_target(record: Record) -> str:
    """A GSM8K solution as a training target: annotations removed, ``#### N`` -> ``The answer is N.``.

    Raises:
        ValueError: the answer does not end in ``#### <number>``.
    """
    answer = str(record["answer"])
    final = _FINAL.search(answer)
    if final is None:
        raise ValueError(f"answer={answer[-60:]!r} does not end in '#### <number>' as GSM8K answers do")
    steps = _CALCULATOR.sub("", answer[: final.start()]).strip()
    return f"{steps}\nThe answer is {final.group(1)}."


def _references(record: Record) -> list:
    value = record["answer_number"]
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"answer_number={value!r} is not a number")
    return [value]


MGSM = TaskSpec(
    name="mgsm",
    kind="generation",
    hub_path="juletxara/mgsm",
    configs={lang: lang for lang in LANGUAGES},
    eval_split="test",
    paper_languages=("de", "es", "fr", "ru", "sw", "th", "zh"),
    paper_samples=250,
    fields=("question", "answer_number"),
    train_source=DataSource("openai/gsm8k", name="main", split="train", language="en"),
    train_fields=("question", "answer"),
    train_split=None,
    instruction="Solve the problem step by step. End with: The answer is <number>.",
    input_template="Question: {question}",
    cue="Answer:",
    train_target=gsm8k_target,
    references=_references,
    metric="final_number",
    max_new_tokens=256,
    stops=("\nQuestion:",),
)
