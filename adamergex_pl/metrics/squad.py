"""SQuAD exact match and token F1 for extractive QA in any language (XQuAD).

Definitions (Rajpurkar et al., 2016, arXiv:1606.05250) for a prediction ``p`` and gold answers ``g_1..g_m``:

* ``norm(x)``: NFKC, case folding, delete punctuation and symbols, segment per script
  (:mod:`adamergex_pl.metrics.text_segmentation`), drop ``a``/``an``/``the`` of English answers only.
* ``EM(p, g) = 1[norm(p) = norm(g)]``; with several gold answers, ``max_j EM(p, g_j)`` and ``max_j F1(p, g_j)``.
* ``F1(p, g)``: with token multisets ``P``, ``G`` of ``norm(p)``, ``norm(g)`` and ``c = |P ∩ G|``,
  ``precision = c/|P|``, ``recall = c/|G|``, ``F1 = 2·precision·recall/(precision + recall)``, 0 when
  ``c = 0``, and ``F1 = 1[P = G]`` if ``P`` or ``G`` is empty.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import ClassVar

from adamergex_pl.errors import InvalidTypeError, InvalidValueError
from adamergex_pl.metrics.languages import normalize_language
from adamergex_pl.metrics.per_language_mean import PerLanguageMeanMetric
from adamergex_pl.metrics.references import check_predictions, reference_lists
from adamergex_pl.metrics.text_segmentation import prepare_text, segment

# Articles removed by normalisation, per ISO 639-1 code. Only English, by design (see the module docstring).
ARTICLES: dict[str, frozenset[str]] = {"en": frozenset({"a", "an", "the"})}


def _delete_punctuation(text: str) -> str:
    return "".join(char for char in text if unicodedata.category(char)[0] not in "PS")


def answer_tokens(text: str, language: str) -> list[str]:
    """Tokens of a normalised answer: the multiset that F1 compares.

    Raises:
        TypeError: If ``text`` is not a string.
        ValueError: If ``language`` (see :func:`adamergex_pl.metrics.languages.normalize_language`) is unknown.

    Example:
        >>> answer_tokens("The Eiffel Tower!", "en"), answer_tokens("北京大学。", "zh")
        (['eiffel', 'tower'], ['北', '京', '大', '学'])
    """
    articles = ARTICLES.get(normalize_language(language), frozenset())
    tokens = segment(_delete_punctuation(prepare_text(text)))
    return [token for token in tokens if token not in articles]


def normalize_answer(text: str, language: str) -> str:
    """``norm(text)``: the normalised answer that exact match compares.

    Raises:
        TypeError: If ``text`` is not a string.
        ValueError: If ``language`` is unknown.

    Example:
        >>> normalize_answer("  The  Eiffel-Tower. ", "en"), normalize_answer("The Eiffel-Tower", "fr")
        ('eiffeltower', 'the eiffeltower')
    """
    return " ".join(answer_tokens(text, language))


def _token_f1(prediction: list[str], reference: list[str]) -> float:
    if not prediction or not reference:
        return float(prediction == reference)
    common = sum((Counter(prediction) & Counter(reference)).values())
    if common == 0:
        return 0.0
    precision = common / len(prediction)
    recall = common / len(reference)
    return 2 * precision * recall / (precision + recall)


def _reference_list(references: str | Sequence[str]) -> list[str]:
    if isinstance(references, str):
        return [references]
    if not isinstance(references, Sequence) or isinstance(references, bytes):
        raise InvalidTypeError(
            f"references={references!r} must be a string or a sequence of strings (several gold answers)"
        )
    refs = list(references)
    if not refs:
        raise InvalidValueError(
            "references is empty; give at least one gold answer (a string or a non-empty list)"
        )
    for ref in refs:
        if not isinstance(ref, str):
            raise InvalidTypeError(
                f"gold answer {ref!r} in references must be a string, got {type(ref).__name__}"
            )
    return refs


def squad_scores(prediction: str, references: str | Sequence[str], language: str) -> tuple[float, float]:
    """Exact match and F1 of one prediction against one or several gold answers (max over golds).

    Returns ``(exact_match, f1)``, each in ``[0, 1]``; ``references`` is one gold answer or a non-empty sequence.

    Raises:
        TypeError: If the prediction or a gold answer is not a string.
        ValueError: If ``references`` is empty or ``language`` unknown.

    Example:
        >>> squad_scores("the Eiffel tower", ["Eiffel Tower", "tower"], "en")
        (1.0, 1.0)
    """
    pred_tokens = answer_tokens(prediction, language)
    best_em, best_f1 = 0.0, 0.0
    for reference in _reference_list(references):
        ref_tokens = answer_tokens(reference, language)
        best_em = max(best_em, float(pred_tokens == ref_tokens))
        best_f1 = max(best_f1, _token_f1(pred_tokens, ref_tokens))
    return best_em, best_f1


def exact_match(prediction: str, references: str | Sequence[str], language: str) -> float:
    """``max_j EM(prediction, g_j)``; see :func:`squad_scores` for arguments and errors.

    Example:
        >>> exact_match("An apple.", "apple", "en"), exact_match("An apple.", "apple", "es")
        (1.0, 0.0)
    """
    return squad_scores(prediction, references, language)[0]


def f1_score(prediction: str, references: str | Sequence[str], language: str) -> float:
    """``max_j F1(prediction, g_j)``; see :func:`squad_scores` for arguments and errors.

    Example:
        >>> f1_score("北京大学", "北京", "zh")  # P = 2/4, R = 2/2, F1 = 2·0.5·1/1.5
        0.6666666666666666
    """
    return squad_scores(prediction, references, language)[1]


class SquadMetric(PerLanguageMeanMetric):
    """Mean SQuAD exact match and token F1 of generated answers, per language and macro-averaged.

    ``compute()`` returns ``<lang>/exact_match``, ``<lang>/f1`` and their macro averages ``exact_match``, ``f1``.

    Args:
        languages: Language labels this metric will see.
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = SquadMetric(languages=["en", "zh"])
        >>> metric.update(["The Eiffel Tower"], ["Eiffel Tower"], language="en")
        >>> metric.update(["北京大学"], [["北京", "北京大学"]], language="zh")  # the best gold counts
        >>> {key: float(value) for key, value in metric.compute().items()}  # doctest: +NORMALIZE_WHITESPACE
        {'en/exact_match': 1.0, 'en/f1': 1.0, 'zh/exact_match': 1.0, 'zh/f1': 1.0,
         'exact_match': 1.0, 'f1': 1.0}
    """

    score_names: ClassVar[tuple[str, ...]] = ("exact_match", "f1")

    def score_items(
        self, preds: Sequence[str], targets: Sequence[str | Sequence[str]], language: str
    ) -> list[tuple[float, ...]]:
        """Score a batch of generated answers of one language: ``(exact_match, f1)`` each.

        Raises:
            TypeError: If an input has the wrong type.
            ValueError: If lengths differ, a gold list is empty, or the language is not the metric's.
        """
        position = self._language_position(language)
        preds = check_predictions(preds)
        golds = reference_lists(preds, targets, lambda value: isinstance(value, str), "a string")
        code = self.language_codes[position]
        return [squad_scores(pred, refs, code) for pred, refs in zip(preds, golds, strict=True)]
