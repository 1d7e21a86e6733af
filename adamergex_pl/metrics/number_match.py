"""``NumberMatchAccuracy``: accuracy of the final number of a generation (MGSM), per language, DDP-safe.

Extraction and comparison: :mod:`adamergex_pl.metrics.numbers`. State and sync:
:mod:`adamergex_pl.metrics.per_language_mean`.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import ClassVar

from adamergex_pl.metrics.numbers import extract_final_number, numbers_equal
from adamergex_pl.metrics.per_language_mean import PerLanguageMeanMetric
from adamergex_pl.metrics.references import check_predictions, reference_lists

__all__ = ["NumberMatchAccuracy"]

GoldNumber = str | int | float | Decimal


def _is_gold_number(value: object) -> bool:
    return isinstance(value, (str, int, float, Decimal)) and not isinstance(value, bool)


class NumberMatchAccuracy(PerLanguageMeanMetric):
    """Fraction of generations whose last number equals the gold number, per language and macro-averaged.

    ``compute()`` returns ``<lang>/accuracy`` and ``<lang>/no_number_rate`` (the fraction of generations in
    which no number was found, a diagnostic for truncated or refused answers) and their macro averages
    ``accuracy`` and ``no_number_rate``.

    Args:
        languages: Language labels this metric will see (see :class:`PerLanguageMeanMetric`).
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Example:
        >>> metric = NumberMatchAccuracy(languages=["de"])
        >>> generations = ["Also 3 + 4 = 7. Die Antwort ist 1.234.", "keine Ahnung"]
        >>> metric.update(generations, [1234, "5"], language="de")
        >>> {key: float(value) for key, value in metric.compute().items() if key.startswith("de/")}
        {'de/accuracy': 0.5, 'de/no_number_rate': 0.5}
    """

    score_names: ClassVar[tuple[str, ...]] = ("accuracy", "no_number_rate")

    def score_items(
        self, preds: Sequence[str], targets: Sequence[GoldNumber | Sequence[GoldNumber]], language: str
    ) -> list[tuple[float, ...]]:
        """Score a batch of generations of one language: ``(correct, no_number)`` per generation.

        Args:
            preds: The generated text only, never the prompt (numbers in the question must not be read).
            targets: Per example, the gold number (int, float, Decimal, or a string holding exactly one
                number such as ``"1,234"``) or a non-empty list of acceptable gold numbers.
            language: One of the metric's ``languages``; decides how a lone ``1.234`` / ``1,234`` is read.

        Raises:
            TypeError: If an input has the wrong type.
            ValueError: If lengths differ, a gold string is not one number, or the language is not the
                metric's.
        """
        position = self._language_position(language)
        preds = check_predictions(preds)
        golds = reference_lists(preds, targets, _is_gold_number, "a number or a string holding one number")
        code = self.language_codes[position]
        rows = []
        for pred, gold_numbers in zip(preds, golds, strict=True):
            number = extract_final_number(pred, code)
            correct = any(numbers_equal(number, gold, code) for gold in gold_numbers)
            rows.append((float(correct), float(number is None)))
        return rows
