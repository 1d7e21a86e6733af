"""Evaluation metrics of the cross-lingual task suite and of the CrossX consistency benchmark.

Pure functions, for in-memory predictions and for tests:

* MGSM: :func:`extract_final_number` (last number of the GENERATED text), :func:`parse_number`,
  :func:`numbers_equal`.
* XQuAD: :func:`squad_scores`, :func:`exact_match`, :func:`f1_score`, :func:`normalize_answer`.
* XLSum: :func:`rouge_l` (precision, recall, F1 of the token LCS; script-aware tokens).
* CrossX: :func:`consistency_scores` (per-language accuracy, ``consistency_k``, ``ac3_k``).
* Option letters: :func:`option_letter`, :func:`option_index`, :func:`index_to_letter`.

torchmetrics metrics for validation loops (every state is synced correctly under DDP):
:class:`SquadMetric`, :class:`RougeLMetric`, :class:`NumberMatchAccuracy` (per-language means, keys
``<lang>/<score>`` plus macro averages ``<score>``) and :class:`CrossLingualConsistency`. Accuracy-type
tasks (XNLI, XCOPA, PAWS-X) need no text metric: compare the extracted label with ``torchmetrics``
accuracy or a per-language mean.
"""

from adamergex_pl.metrics.consistency import consistency_scores
from adamergex_pl.metrics.consistency_metric import CrossLingualConsistency
from adamergex_pl.metrics.languages import normalize_language
from adamergex_pl.metrics.number_match import NumberMatchAccuracy
from adamergex_pl.metrics.numbers import extract_final_number, numbers_equal, parse_number
from adamergex_pl.metrics.options import index_to_letter, option_index, option_letter
from adamergex_pl.metrics.per_language_mean import PerLanguageMeanMetric
from adamergex_pl.metrics.rouge import lcs_length, rouge_l, rouge_tokens
from adamergex_pl.metrics.rouge_metric import RougeLMetric
from adamergex_pl.metrics.squad import answer_tokens, exact_match, f1_score, normalize_answer, squad_scores
from adamergex_pl.metrics.squad_metric import SquadMetric

__all__ = [
    "CrossLingualConsistency",
    "NumberMatchAccuracy",
    "PerLanguageMeanMetric",
    "RougeLMetric",
    "SquadMetric",
    "answer_tokens",
    "consistency_scores",
    "exact_match",
    "extract_final_number",
    "f1_score",
    "index_to_letter",
    "lcs_length",
    "normalize_answer",
    "normalize_language",
    "numbers_equal",
    "option_index",
    "option_letter",
    "parse_number",
    "rouge_l",
    "rouge_tokens",
    "squad_scores",
]
