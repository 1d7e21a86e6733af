"""ROUGE-L (longest common subsequence) on tokens, for summaries in any script (XLSum).

Definition (Lin, 2004, sentence-level ROUGE-L) for prediction tokens ``x_1..x_n``, reference tokens
``y_1..y_m`` and ``L = LCS(x, y)``:

    P = L / n,    R = L / m,    F1 = 2·P·R / (P + R)   (β = 1; F1 = 0 when L = 0)

The whole text is one sequence (no ROUGE-Lsum); an empty side gives 0. The score is NOT divided by the
reference's character length (the AdaMergeX release did). Tokens: :func:`rouge_tokens` (no stemming). LCS length
is bit-parallel (Allison & Dix 1986; Hyyrö 2004): ``V ← (V + (V & M[y_j])) | (V & ~M[y_j])`` per ``y_j``, ``L``
the zero bits of ``V``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import ClassVar

from adamergex_pl.metrics.per_language_mean import PerLanguageMeanMetric
from adamergex_pl.metrics.references import check_predictions, reference_lists
from adamergex_pl.metrics.text_segmentation import prepare_text, segment


def rouge_tokens(text: str) -> list[str]:
    """Tokens that ROUGE-L compares (see the module docstring for the rule).

    Raises:
        TypeError: If ``text`` is not a string.

    Example:
        >>> rouge_tokens("Hello, World! 你好。")
        ['hello', 'world', '你', '好']
    """
    prepared = prepare_text(text)
    spaced = "".join(char if unicodedata.category(char)[0] in "LMN" else " " for char in prepared)
    return segment(spaced)


def lcs_length(first: Sequence[str], second: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences.

    Example:
        >>> lcs_length("ABCBDAB", "BDCABA")
        4
    """
    if len(first) < len(second):
        first, second = second, first  # the bit vector runs over the longer sequence
    if not second:
        return 0
    positions: dict[str, int] = {}
    for index, token in enumerate(first):
        positions[token] = positions.get(token, 0) | (1 << index)
    mask = (1 << len(first)) - 1
    vector = mask
    for token in second:
        matches = vector & positions.get(token, 0)
        vector = ((vector + matches) | (vector - matches)) & mask
    return len(first) - vector.bit_count()


def rouge_l(prediction: str, reference: str) -> tuple[float, float, float]:
    """ROUGE-L precision, recall and F1 of a prediction against one reference.

    Raises:
        TypeError: If either argument is not a string.

    Example:
        >>> rouge_l("the cat sat on the mat", "the cat is on the mat")  # LCS 5 of 6 and 6
        (0.8333333333333334, 0.8333333333333334, 0.8333333333333334)
    """
    pred_tokens = rouge_tokens(prediction)
    ref_tokens = rouge_tokens(reference)
    common = lcs_length(pred_tokens, ref_tokens)
    if common == 0:
        return 0.0, 0.0, 0.0
    precision = common / len(pred_tokens)
    recall = common / len(ref_tokens)
    return precision, recall, 2 * precision * recall / (precision + recall)


class RougeLMetric(PerLanguageMeanMetric):
    """Mean ROUGE-L (LCS on script-aware tokens) of generated summaries, per language and macro-averaged.

    ``compute()`` returns ``<lang>/rouge_l_f1``, ``<lang>/rouge_l_precision``, ``<lang>/rouge_l_recall`` and
    their macro averages. With several references, the one with the highest F1 gives all three numbers.

    Args:
        languages: Language labels this metric will see.
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = RougeLMetric(languages=["th"])
        >>> metric.update(["แมวกิน"], ["แมว"], language="th")  # LCS 3 of 6 and 3 characters
        >>> round(float(metric.compute()["th/rouge_l_f1"]), 4)
        0.6667
    """

    score_names: ClassVar[tuple[str, ...]] = ("rouge_l_f1", "rouge_l_precision", "rouge_l_recall")

    def score_items(
        self, preds: Sequence[str], targets: Sequence[str | Sequence[str]], language: str
    ) -> list[tuple[float, ...]]:
        """Score a batch of generated summaries of one language: ``(f1, precision, recall)`` each.

        Raises:
            TypeError: If an input has the wrong type.
            ValueError: If lengths differ, a reference list is empty, or the language is not the metric's.
        """
        self._language_position(language)  # refuses a language this metric does not know
        preds = check_predictions(preds)
        references = reference_lists(preds, targets, lambda value: isinstance(value, str), "a string")
        rows = []
        for pred, refs in zip(preds, references, strict=True):
            precision, recall, f1 = max((rouge_l(pred, ref) for ref in refs), key=lambda scores: scores[2])
            rows.append((f1, precision, recall))
        return rows
