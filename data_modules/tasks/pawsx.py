"""PAWS-X (Yang et al., 2019): paraphrase identification in 7 languages, two labels.

Hub ``google-research-datasets/paws-x``; not in the AdaMergeX paper, the default evaluates the whole ``test``
split (2,000) of the six non-English languages. Training: English ``train``. Rows with label -1 or an empty
sentence are dropped (counted once in the log).
"""

from __future__ import annotations

from data_modules.sources import DataSource
from data_modules.tasks.spec import TaskSpec

LABELS = ("no", "yes")  # index = the dataset's label: 1 means "the sentences are paraphrases"
LANGUAGES = ("de", "en", "es", "fr", "ja", "ko", "zh")


PAWSX = TaskSpec(
    name="pawsx",
    kind="choice",
    hub_path="google-research-datasets/paws-x",
    configs={lang: lang for lang in LANGUAGES},
    eval_split="test",
    paper_languages=("de", "es", "fr", "ja", "ko", "zh"),
    paper_samples=None,
    fields=("sentence1", "sentence2", "label"),
    train_source=DataSource("google-research-datasets/paws-x", name="en", split="train", language="en"),
    train_fields=("sentence1", "sentence2", "label"),
    train_split="train",
    instruction="Do the two sentences mean the same thing? Answer yes or no.",
    input_template="Sentence 1: {sentence1}\nSentence 2: {sentence2}",
    cue="Answer:",
    labels=LABELS,
    metric="accuracy",
    label_field="label",
    required_text=("sentence1", "sentence2"),
)
