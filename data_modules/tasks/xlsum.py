"""XL-Sum (Hasan et al., 2021): BBC articles and their one-sentence summaries in 45 languages.

Hub ``csebuetnlp/xlsum``, configurations named by the language's English name (no German or Greek), read from
its Parquet export ``refs/convert/parquet``; AdaMergeX samples 500 ``test`` examples per language. Training:
English ``train``, articles cut from the end to fit. Scoring: :func:`adamergex_pl.metrics.rouge.rouge_l`.
"""

from __future__ import annotations

from data_modules.sources import DataSource
from data_modules.tasks.spec import Record, TaskSpec

# language code -> XL-Sum configuration (all 45)
CONFIGS = {
    "am": "amharic", "ar": "arabic", "az": "azerbaijani", "bn": "bengali", "my": "burmese",
    "zh": "chinese_simplified", "zh-Hant": "chinese_traditional", "en": "english", "fr": "french",
    "gu": "gujarati", "ha": "hausa", "hi": "hindi", "ig": "igbo", "id": "indonesian", "ja": "japanese",
    "rn": "kirundi", "ko": "korean", "ky": "kyrgyz", "mr": "marathi", "ne": "nepali", "om": "oromo",
    "ps": "pashto", "fa": "persian", "pcm": "pidgin", "pt": "portuguese", "pa": "punjabi", "ru": "russian",
    "gd": "scottish_gaelic", "sr-Cyrl": "serbian_cyrillic", "sr-Latn": "serbian_latin", "si": "sinhala",
    "so": "somali", "es": "spanish", "sw": "swahili", "ta": "tamil", "te": "telugu", "th": "thai",
    "ti": "tigrinya", "tr": "turkish", "uk": "ukrainian", "ur": "urdu", "uz": "uzbek", "vi": "vietnamese",
    "cy": "welsh", "yo": "yoruba",
}  # fmt: skip


def _summary(record: Record) -> str:
    summary = record["summary"]
    if not isinstance(summary, str) or not summary.strip():
        raise ValueError(f"summary={summary!r} must be a non-empty string")
    return summary


XLSUM = TaskSpec(
    name="xlsum",
    kind="generation",
    hub_path="csebuetnlp/xlsum",
    configs=CONFIGS,
    eval_split="test",
    paper_languages=("ar", "es", "fr", "hi", "ru", "sw", "th", "tr", "vi", "zh"),
    paper_samples=500,
    fields=("text", "summary"),
    train_source=DataSource(
        "csebuetnlp/xlsum", name="english", split="train", language="en", revision="refs/convert/parquet"
    ),
    train_fields=("text", "summary"),
    train_split="train",
    instruction="Summarize the article in one sentence, in the language of the article.",
    input_template="Article: {text}",
    cue="Summary:",
    train_target=_summary,
    references=lambda record: [_summary(record)],
    metric="rouge_l",
    max_new_tokens=64,
    stops=("\n",),
    truncate_field="text",
    revision="refs/convert/parquet",
)
