"""``SquadMetric``: SQuAD exact match and F1 (max over gold answers), per language, DDP-safe.

Formulas: :mod:`adamergex_pl.metrics.squad`. State and sync: :mod:`adamergex_pl.metrics.per_language_mean`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from adamergex_pl.metrics.per_language_mean import PerLanguageMeanMetric
from adamergex_pl.metrics.references import check_predictions, reference_lists
from adamergex_pl.metrics.squad import squad_scores

__all__ = ["SquadMetric"]


class SquadMetric(PerLanguageMeanMetric):
    """Mean SQuAD exact match and token F1 of generated answers, per language and macro-averaged.

    ``compute()`` returns ``<lang>/exact_match``, ``<lang>/f1`` for each language and their macro averages
    ``exact_match``, ``f1`` (fractions in ``[0, 1]``); the caller adds the ``val/<benchmark>/`` prefix.

    Args:
        languages: Language labels this metric will see (see :class:`PerLanguageMeanMetric`).
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

        Args:
            preds: Generated answers (generated text only, not the prompt), one per example.
            targets: Per example, the gold answer or a non-empty list of acceptable gold answers.
            language: One of the metric's ``languages``; selects English article removal.

        Raises:
            TypeError: If an input has the wrong type.
            ValueError: If lengths differ, a gold list is empty, or the language is not the metric's.
        """
        position = self._language_position(language)
        preds = check_predictions(preds)
        golds = reference_lists(preds, targets, lambda value: isinstance(value, str), "a string")
        code = self.language_codes[position]
        return [squad_scores(pred, refs, code) for pred, refs in zip(preds, golds, strict=True)]
