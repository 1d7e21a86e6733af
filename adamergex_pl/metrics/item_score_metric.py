"""``ItemScoreMetric``: one record per evaluated item (its id, language and named scores), gathered under DDP.

Aggregate states (sums, counters) give a metric's value but not its uncertainty; a bootstrap interval and a
paired comparison need every item's score. Each ``update`` appends records ``(item_id, language_index,
score_1 … score_K)`` to list states reduced with ``"cat"``, so a DDP sync gathers every rank's records and
``compute`` sees all items of every language.

State design (as :class:`~adamergex_pl.metrics.CrossLingualConsistency`). Scores are stored in fixed point,
``round(s · 2^40)`` as int64 (an error below 5e-13 per item; a per-item summed log-likelihood up to 8 million
nats fits), so Lightning's ``bf16-true`` precision, which converts a module's floating-point tensors and the
metric states with them, cannot round them. Each list state starts with an empty int64 tensor (also after
``reset``): torchmetrics stands in a float32 empty tensor for a rank without records, and gathering it next to
int64 tensors fails. An item recorded twice for one language (a sampler that pads with repeats) counts once:
the first record is kept.

Item ids are the batch's ``index`` (the item's position in its split). A batch without one gets positions
from a counter per language, which is right on one device only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from adamergex_pl.errors import InvalidValueError

__all__ = ["ItemScoreMetric"]

_SCALE = 2**40


class ItemScoreMetric(Metric):
    """Records per-item scores by language; ``compute()`` returns them per language, sorted by item id.

    Args:
        languages: the dataloader labels this metric will see (``es``, or ``cross_mmlu/es``).
        names: the names of the scores recorded for every item, e.g. ``["accuracy"]`` or ``["nll", "tokens"]``.
        **kwargs: passed to :class:`torchmetrics.Metric`.

    Raises:
        InvalidValueError: no languages or names, or one of them twice.

    Example:
        >>> metric = ItemScoreMetric(["en", "es"], ["accuracy"])
        >>> metric.update("es", torch.tensor([4, 2]), [[1.0], [0.0]])
        >>> ids, scores = metric.per_language()["es"]
        >>> ids.tolist(), scores[:, 0].tolist()
        ([2, 4], [0.0, 1.0])
    """

    is_differentiable = False
    full_state_update = False

    def __init__(self, languages: Sequence[str], names: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for what, labels in (("languages", languages), ("names", names)):
            if not labels or len(set(labels)) != len(labels):
                raise InvalidValueError(f"{what}={list(labels)} must be non-empty and without repeats")
        self.languages = list(languages)
        self.names = list(names)
        self._positions = {label: position for position, label in enumerate(self.languages)}
        self._states = ["item_id", "language_index", *(f"score_{j}" for j in range(len(self.names)))]
        for state in self._states:
            self.add_state(state, default=[], dist_reduce_fx="cat")
        self._seed_states()
        self._counters: dict[str, int] = {}

    def _seed_states(self) -> None:
        for state in self._states:
            getattr(self, state).append(torch.zeros(0, dtype=torch.long, device=self.device))

    def reset(self) -> None:
        """Drop the records (keeping the typed empty tensor each list state starts with)."""
        super().reset()
        self._seed_states()
        self._counters = {}

    def update(
        self,
        language: str,
        item_ids: Tensor | Sequence[int] | None,
        scores: Tensor | Sequence[Sequence[float]],
    ) -> None:
        """Record a batch of items of one language.

        Args:
            language: one of :attr:`languages`.
            item_ids: ``[B]`` item ids, or None to number the items of this language in arrival order.
            scores: ``[B, K]`` scores, in the order of :attr:`names`.

        Raises:
            InvalidValueError: an unknown language, or shapes that do not match.
        """
        if language not in self._positions:
            raise InvalidValueError(f"language={language!r} is not one of this metric's {self.languages}")
        values = torch.as_tensor(scores, dtype=torch.float64).reshape(-1, len(self.names))
        count = values.shape[0]
        if item_ids is None:
            start = self._counters.get(language, 0)
            ids = torch.arange(start, start + count, dtype=torch.long)
            self._counters[language] = start + count
        else:
            ids = torch.as_tensor(item_ids, dtype=torch.long).reshape(-1)
        if ids.numel() != count:
            raise InvalidValueError(
                f"{ids.numel()} item ids for {count} rows of scores; give one id per item"
            )
        device = self.device
        self.item_id.append(ids.to(device))
        self.language_index.append(
            torch.full((count,), self._positions[language], dtype=torch.long, device=device)
        )
        fixed = torch.round(values * _SCALE).to(torch.long).to(device)
        for j in range(len(self.names)):
            getattr(self, f"score_{j}").append(fixed[:, j])

    def per_language(self) -> dict[str, tuple[Tensor, Tensor]]:
        """:meth:`compute` with the shapes kept (torchmetrics squeezes one-element tensors to scalars).

        Returns:
            Per language with records: ``(ids [n] int64, scores [n, K] float64)`` on the CPU, sorted by id.
            Under DDP a collective: call it on every rank.
        """
        with warnings.catch_warnings():  # a variant that saw no batch of any language has no records
            warnings.filterwarnings("ignore", message=".*was called before the ``update``.*")
            computed = self.compute()
        return {
            label: (ids.reshape(-1), scores.reshape(-1, len(self.names)))
            for label, (ids, scores) in computed.items()
        }

    def compute(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Per language with records: ``(ids, scores)`` sorted by id (see :meth:`per_language`)."""
        ids = dim_zero_cat(self.item_id).to("cpu", torch.long)
        languages = dim_zero_cat(self.language_index).to("cpu", torch.long)
        scores = (
            torch.stack(
                [
                    dim_zero_cat(getattr(self, f"score_{j}")).to("cpu", torch.long)
                    for j in range(len(self.names))
                ],
                dim=1,
            ).to(torch.float64)
            / _SCALE
        )
        result: dict[str, tuple[Tensor, Tensor]] = {}
        for position, label in enumerate(self.languages):
            mine = (languages == position).nonzero().squeeze(1)
            if mine.numel() == 0:
                continue
            order = torch.argsort(ids[mine], stable=True)
            sorted_ids = ids[mine][order]
            first = torch.ones_like(sorted_ids, dtype=torch.bool)  # keep the first record of a repeated id
            first[1:] = sorted_ids[1:] != sorted_ids[:-1]
            result[label] = (sorted_ids[first], scores[mine][order][first])
        return result
