"""PAWS-X (Yang et al., 2019): paraphrase identification in 7 languages, two labels.

Hub: ``google-research-datasets/paws-x``, configurations ``de``, ``en``, ``es``, ``fr``, ``ja``, ``ko``, ``zh``;
fields ``id``, ``sentence1``, ``sentence2``, ``label`` (0 not a paraphrase, 1 paraphrase); splits ``train``
(49,401, machine translated), ``validation`` (2,000) and ``test`` (2,000, human translated). The AdaMergeX
paper does not report PAWS-X; the default evaluation is the whole test split of the six non-English
languages. Training: the English ``train`` split.

Some rows have no label (``label`` -1) and some translated sentences are empty: those rows are dropped, and
the count is logged once per source (``... (de) [test]: dropped 12 of 2000 rows with label -1``); the other
rows keep their index in the split.
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
