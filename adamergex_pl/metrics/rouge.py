"""ROUGE-L (longest common subsequence) on tokens, for summaries in any script (XLSum).

Definition (Lin, 2004, "ROUGE: A Package for Automatic Evaluation of Summaries", sentence-level ROUGE-L),
written here from the definition. For a prediction with tokens ``x_1..x_n`` and a reference with tokens
``y_1..y_m``, and ``L = LCS(x, y)`` the length of their longest common subsequence:

    P = L / n,    R = L / m,    F1 = 2·P·R / (P + R)   (β = 1; F1 = 0 when L = 0)

The whole text is one sequence (no sentence splitting, so no ROUGE-Lsum). If either side has no token,
P = R = F1 = 0. The score is NOT divided by the reference's character length (the AdaMergeX release did that,
which makes its XLSum numbers incomparable across languages and with other work).

Tokenisation (:func:`rouge_tokens`): NFKC, case folding, every character that is not a letter, mark or
digit (Unicode categories ``L*``, ``M*``, ``N*``) becomes a separator, then script-aware segmentation
(:mod:`adamergex_pl.metrics.text_segmentation`): Han, Kana, Thai, Lao, Khmer and Myanmar characters are one
token each, other scripts split on whitespace and punctuation. No stemming and no stop words: an English
stemmer applied to Chinese or Thai (or a tokenizer that drops non-ASCII characters, as the English-centric
ROUGE tools do by default) is exactly what this module avoids.

LCS length uses the bit-parallel algorithm of Allison & Dix (1986) in the form of Hyyrö (2004): with
``M[c]`` the bit set of positions of token ``c`` in ``x`` and ``V`` starting as all ones,
``V ← (V + (V & M[y_j])) | (V & ~M[y_j])`` for each ``y_j``; then ``L`` is the number of zero bits of ``V``.
It costs ``O(m·⌈n/w⌉)`` word operations on Python integers instead of ``O(n·m)`` interpreted steps.
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

    Args:
        text: A prediction or a reference.

    Returns:
        The tokens, in order.

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

    Args:
        first: Tokens of one text.
        second: Tokens of the other text.

    Returns:
        The LCS length, between 0 and ``min(len(first), len(second))``.

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

    Args:
        prediction: Generated summary (generated text only, not the prompt).
        reference: Gold summary.

    Returns:
        ``(precision, recall, f1)``, each in ``[0, 1]``.

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
    their macro averages ``rouge_l_f1``, ... (fractions in ``[0, 1]``, not divided by any text length).
    With several references for one example, the reference with the highest F1 gives all three numbers.

    Args:
        languages: Language labels this metric will see (see :class:`PerLanguageMeanMetric`).
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

        Args:
            preds: Generated summaries (generated text only, not the prompt), one per example.
            targets: Per example, the reference summary or a non-empty list of references.
            language: One of the metric's ``languages`` (tokenisation itself follows the script).

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
