"""XNLI (Conneau et al., 2018): natural language inference in 15 languages, three labels.

Hub ``facebook/xnli``; the ``test`` split (5,010, human translated, parallel) of which AdaMergeX samples 1,000 per
language (one seed, the same items everywhere). Training: English ``train`` (392,702, machine translated).
"""

from __future__ import annotations

from data_modules.sources import DataSource
from data_modules.tasks.spec import TaskSpec

LABELS = ("entailment", "neutral", "contradiction")
LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")


XNLI = TaskSpec(
    name="xnli",
    kind="choice",
    hub_path="facebook/xnli",
    configs={lang: lang for lang in LANGUAGES},
    eval_split="test",
    paper_languages=("fr", "de", "tr", "hi", "el", "ar", "vi", "zh", "es", "ru", "sw", "th"),
    paper_samples=1000,
    fields=("premise", "hypothesis", "label"),
    train_source=DataSource("facebook/xnli", name="en", split="train", language="en"),
    train_fields=("premise", "hypothesis", "label"),
    train_split="train",
    instruction=(
        "Does the premise entail the hypothesis, contradict it, or neither? "
        "Answer with one word: entailment, neutral or contradiction."
    ),
    input_template="Premise: {premise}\nHypothesis: {hypothesis}",
    cue="Answer:",
    labels=LABELS,
    metric="accuracy",
    label_field="label",
    required_text=("premise", "hypothesis"),
)
