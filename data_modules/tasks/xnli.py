"""XNLI (Conneau et al., 2018): natural language inference in 15 languages, three labels.

Hub: ``facebook/xnli``, one configuration per language code (``ar``, ``de``, ..., ``zh``), fields ``premise``,
``hypothesis``, ``label`` (0 entailment, 1 neutral, 2 contradiction); splits ``train`` (392,702, machine
translated from MultiNLI), ``validation`` (2,490) and ``test`` (5,010, human translated, parallel across
languages). AdaMergeX evaluates 1,000 test examples sampled per language; with one seed the same item indices
are drawn in every language, so the samples stay parallel. Training: the English ``train`` split.

The options are the English label words, scored after the answer cue; the instruction lists them all, which
cannot help the score (the prompt is only ever context, never parsed).
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
