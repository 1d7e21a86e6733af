"""Base class of the text metrics: means of per-example scores, kept per language, synced under DDP.

Reports ``mean_i s_{l,i}`` as ``<l>/<name>`` and the macro average as ``<name>`` (NaN without examples). States
are int64 fixed-point sums (``round(s · 2^40)``), so results do not depend on sharding and survive
``"bf16-true"``; they count ``DistributedSampler``'s padding repeats (at most ``world_size - 1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric

from adamergex_pl.errors import InvalidTypeError, InvalidValueError
from adamergex_pl.metrics.languages import normalize_language

__all__ = ["PerLanguageMeanMetric"]

_SCALE = 2**40


class PerLanguageMeanMetric(Metric):
    """Per-language means of per-example scores; subclasses set :attr:`score_names` and :meth:`score_items`.

    Args:
        languages: Labels used in the output keys (``"de"``), each a distinct known language.
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Raises:
        TypeError: If ``languages`` is not a list of strings.
        ValueError: If it is empty, holds an unknown language, or names a language twice.

    Example:
        >>> from adamergex_pl.metrics.squad import SquadMetric
        >>> metric = SquadMetric(languages=["en", "zh"])
        >>> metric.update(["Paris"], ["Paris"], language="en")
        >>> float(metric.compute()["en/exact_match"])
        1.0
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False
    score_names: ClassVar[tuple[str, ...]] = ()

    score_sums: Tensor
    counts: Tensor

    def __init__(self, languages: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(languages, str) or not isinstance(languages, Sequence):
            raise InvalidTypeError(
                f"languages={languages!r} must be a list of language codes, e.g. ['en', 'de']"
            )
        if not languages:
            raise InvalidValueError(
                "languages is empty; list the languages this metric will see, e.g. ['en', 'de']"
            )
        codes = [normalize_language(language) for language in languages]
        for position, code in enumerate(codes):
            if code in codes[:position]:
                first = codes.index(code)
                raise InvalidValueError(
                    f"languages lists {languages[first]!r} and {languages[position]!r}, which are the same "
                    f"language ({code!r}); list each language once"
                )
        self.languages: list[str] = list(languages)
        self.language_codes: list[str] = codes
        self._positions = {label: position for position, label in enumerate(self.languages)}
        num_scores = len(self.score_names)
        self.add_state(
            "score_sums", torch.zeros(len(codes), num_scores, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("counts", torch.zeros(len(codes), dtype=torch.long), dist_reduce_fx="sum")

    def _language_position(self, language: str) -> int:
        """Index of ``language`` among :attr:`languages` (the label exactly as given to ``__init__``)."""
        position = self._positions.get(language)
        if position is None:
            raise InvalidValueError(
                f"language={language!r} is not one of this metric's languages {self.languages}; pass one of "
                "them, or add it to `languages` when creating the metric"
            )
        return position

    def update(
        self,
        preds: Sequence[str],
        targets: Sequence[Any],
        language: str,
        scores: Sequence[Sequence[float]] | None = None,
    ) -> None:
        """Score a batch of one language (see :meth:`score_items`) and add the scores.

        Args:
            preds: The generated texts.
            targets: Per example, the gold answer(s).
            language: One of :attr:`languages`.
            scores: The batch's :meth:`score_items`, if the caller computed them already (added as they are).
        """
        rows = self.score_items(preds, targets, language) if scores is None else scores
        self._accumulate(self._language_position(language), rows)

    def score_items(
        self, preds: Sequence[str], targets: Sequence[Any], language: str
    ) -> list[tuple[float, ...]]:
        """One tuple of scores (ordered as :attr:`score_names`) per example; subclasses implement it."""
        raise NotImplementedError

    def _accumulate(self, position: int, scores: Sequence[Sequence[float]]) -> None:
        """Add a batch of per-example score vectors (ordered as :attr:`score_names`) to one language."""
        if not scores:
            return
        totals = [sum(round(row[j] * _SCALE) for row in scores) for j in range(len(self.score_names))]
        self.score_sums[position] += torch.tensor(totals, dtype=torch.long, device=self.score_sums.device)
        self.counts[position] += len(scores)

    def compute(self) -> dict[str, Tensor]:
        """Per-language means ``<language>/<score>`` and macro averages ``<score>`` (float64; NaN when empty)."""
        counts = self.counts.to(torch.float64).unsqueeze(1)
        means = self.score_sums.to(torch.float64) / _SCALE / counts
        macro = torch.nanmean(means, dim=0)
        result: dict[str, Tensor] = {}
        for position, label in enumerate(self.languages):
            for column, name in enumerate(self.score_names):
                result[f"{label}/{name}"] = means[position, column]
        for column, name in enumerate(self.score_names):
            result[name] = macro[column]
        return result
