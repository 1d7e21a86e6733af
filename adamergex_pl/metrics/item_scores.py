"""Per-item scores of one result: what a bootstrap interval and a paired comparison are computed from.

A result (a method's ``accuracy`` in ``es``, say) is a statistic over evaluation items. For most metrics it is
the MEAN of one score per item (0/1 correctness, a per-item F1 or ROUGE-L), and the item scores are exactly
what :func:`~adamergex_pl.metrics.bootstrap.bootstrap_interval` resamples. A token-weighted causal-LM loss is
not a mean over items: with per-item summed negative log-likelihood ``v_i`` and labelled-token count ``w_i``,

    loss = Σ_i v_i / Σ_i w_i,        perplexity = exp(loss)

so an item (an example) still counts ``n`` and a subset of items still has a value, but the percentile
bootstrap of a mean does not apply; such scores say so (:attr:`ItemScores.is_mean` is false) and carry no
interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from adamergex_pl.errors import InvalidValueError

__all__ = ["ItemScores"]


@dataclass(frozen=True)
class ItemScores:
    """The scores of the items behind one result, in ascending order of item id.

    Attributes:
        ids: ``[n]`` int64 item ids (the item's position in its split), unique and ascending.
        values: ``[n]`` float64: the per-item score (a mean metric) or the numerator ``v_i`` (a ratio).
        weights: ``[n]`` float64 denominators ``w_i`` of a ratio metric (labelled tokens), or None for a mean.
        transform: ``identity``, or ``exp`` for a perplexity (the exponential of the ratio).

    Raises:
        InvalidValueError: shapes that differ, or ids that are not unique and ascending.

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
