"""Per-item scores of one result: what a bootstrap interval and a paired comparison are computed from.

Most results are means of per-item scores; a causal-LM loss is the ratio ``Σ_i v_i / Σ_i w_i`` of summed NLLs
and labelled-token counts, so its scores (:attr:`ItemScores.is_mean` false) carry no percentile interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from adamergex_pl.errors import InvalidValueError


@dataclass(frozen=True)
class ItemScores:
    """The scores of the items behind one result, in ascending order of item id.

    Attributes:
        ids: ``[n]`` int64 item ids (positions in the split), unique and ascending.
        values: ``[n]`` float64 per-item scores (a mean metric) or numerators ``v_i`` (a ratio).
        weights: ``[n]`` float64 denominators ``w_i`` of a ratio metric, or None for a mean.
        transform: ``identity``, or ``exp`` for a perplexity.

    Raises:
        InvalidValueError: Shapes that differ, or ids that are not unique and ascending.

    Example:
        >>> scores = ItemScores(torch.tensor([0, 3, 7]), torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
        >>> scores.n, round(scores.value(), 4), scores.is_mean
        (3, 0.6667, True)
        >>> scores.subset(torch.tensor([3, 7])).values.tolist()
        [0.0, 1.0]
    """

    ids: Tensor
    values: Tensor
    weights: Tensor | None = None
    transform: Literal["identity", "exp"] = "identity"

    def __post_init__(self) -> None:
        if self.ids.dim() != 1 or self.values.shape != self.ids.shape:
            raise InvalidValueError(
                f"item scores need one value per item id: ids {tuple(self.ids.shape)}, values "
                f"{tuple(self.values.shape)}"
            )
        if self.weights is not None and self.weights.shape != self.ids.shape:
            raise InvalidValueError(
                f"item weights have shape {tuple(self.weights.shape)}; expected {tuple(self.ids.shape)}"
            )
        if self.ids.numel() > 1 and not bool((self.ids[1:] > self.ids[:-1]).all()):
            raise InvalidValueError(
                "item ids must be unique and ascending (sort and de-duplicate them first)"
            )
        if self.transform not in ("identity", "exp"):
            raise InvalidValueError(f"transform={self.transform!r}; expected 'identity' or 'exp'")

    @property
    def n(self) -> int:
        """The number of items."""
        return int(self.ids.numel())

    @property
    def is_mean(self) -> bool:
        """Whether the result is the mean of :attr:`values` (so a bootstrap interval of a mean applies)."""
        return self.weights is None and self.transform == "identity"

    def value(self) -> float:
        """The result over these items: ``mean(values)``, or ``Σ values / Σ weights`` (then transformed)."""
        if self.n == 0:
            return math.nan
        denominator = float(self.weights.sum()) if self.weights is not None else float(self.n)
        ratio = math.fsum(self.values.tolist()) / denominator if denominator else math.nan
        return math.exp(ratio) if self.transform == "exp" else ratio

    def subset(self, ids: Tensor) -> ItemScores:
        """The scores of the items whose id is in ``ids`` (others are left out)."""
        keep = torch.isin(self.ids, ids.to(self.ids.device))
        weights = None if self.weights is None else self.weights[keep]
        return ItemScores(self.ids[keep], self.values[keep], weights, self.transform)


_SCALE = 2**40  # scores are kept as fixed-point int64 (exact under DDP's gather), |score| < 2**22
# non-finite scores are kept as themselves: a NaN is never turned into a number
_NONFINITE = {-(2**63): math.nan, 2**63 - 1: math.inf, -(2**63) + 1: -math.inf}


class ItemScoreMetric(Metric):
    """Records per-item scores by language; ``compute()`` returns them per language, sorted by item id.

    Args:
        languages: The dataloader labels this metric will see (``es``, or ``cross_mmlu/es``).
        names: The scores recorded for every item, e.g. ``["accuracy"]`` or ``["nll", "tokens"]``.
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Raises:
        InvalidValueError: No languages or names, or one of them twice.

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

        ``item_ids`` (``[B]``) may be None to number the items in arrival order; ``scores`` is ``[B, K]``.

        Raises:
            InvalidValueError: An unknown language, or shapes that do not match.
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
        fixed = torch.round(torch.where(values.isfinite(), values, 0.0) * _SCALE).to(torch.long)
        for code, value in _NONFINITE.items():
            fixed[values.isnan() if math.isnan(value) else values == value] = code
        fixed = fixed.to(device)
        for j in range(len(self.names)):
            getattr(self, f"score_{j}").append(fixed[:, j])

    def per_language(self) -> dict[str, tuple[Tensor, Tensor]]:
        """Per language ``(ids [n] int64, scores [n, K] float64)`` on the CPU, sorted by id; a DDP collective."""
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
        fixed = torch.stack(
            [dim_zero_cat(getattr(self, f"score_{j}")).to("cpu", torch.long) for j in range(len(self.names))],
            dim=1,
        )
        scores = fixed.to(torch.float64) / _SCALE
        for code, value in _NONFINITE.items():
            scores[fixed == code] = value
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
