"""XCOPA (Ponti et al., 2020): causal commonsense reasoning in 11 languages, two alternatives.

Hub ``cambridgeltl/xcopa`` (no English); AdaMergeX evaluates the 500 ``test`` items. Training: Balanced COPA
(``pkavumba/balanced-copa``, Kavumba et al., 2019) ``train``, never its ``test``, which XCOPA translates.
"""

from __future__ import annotations

from data_modules.sources import DataSource
from data_modules.tasks.spec import Record, TaskSpec

LANGUAGES = ("et", "ht", "id", "it", "qu", "sw", "ta", "th", "tr", "vi", "zh")
_RELATIONS = {"cause": "cause", "effect": "effect"}


def _relation(record: Record) -> str:
    question = str(record["question"]).strip().lower()
    if question not in _RELATIONS:
        raise ValueError(f"question={record['question']!r} is neither 'cause' nor 'effect'")
    return _RELATIONS[question]


def _prompt_fields(record: Record) -> dict:
    return {**record, "relation": _relation(record)}


XCOPA = TaskSpec(
    name="xcopa",
    kind="choice",
    hub_path="cambridgeltl/xcopa",
    configs={lang: lang for lang in LANGUAGES},
    eval_split="test",
    paper_languages=("tr", "vi", "zh", "sw", "th"),
    paper_samples=500,
    fields=("premise", "choice1", "choice2", "question", "label"),
    train_source=DataSource("pkavumba/balanced-copa", split="train", language="en"),
    train_fields=("premise", "choice1", "choice2", "question", "label"),
    train_split=None,
    instruction=(
        "Which alternative is the more plausible {relation} of the premise? Answer with that alternative."
    ),
    input_template="Premise: {premise}\nAlternative 1: {choice1}\nAlternative 2: {choice2}",
    cue="Answer:",
    prompt_fields=_prompt_fields,
    option_fields=("choice1", "choice2"),
    metric="accuracy",
    label_field="label",
    required_text=("premise", "choice1", "choice2"),
)
