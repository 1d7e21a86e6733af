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

from adamergex_pl.metrics.text_segmentation import prepare_text, segment

__all__ = ["lcs_length", "rouge_l", "rouge_tokens"]


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
