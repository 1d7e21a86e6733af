"""``RougeLMetric``: ROUGE-L precision, recall and F1 of generated summaries, per language, DDP-safe.

Formulas and tokenisation: :mod:`adamergex_pl.metrics.rouge`. State and sync:
:mod:`adamergex_pl.metrics.per_language_mean`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from adamergex_pl.metrics.per_language_mean import PerLanguageMeanMetric
from adamergex_pl.metrics.references import check_predictions, reference_lists
from adamergex_pl.metrics.rouge import rouge_l

__all__ = ["RougeLMetric"]


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
