"""Seeded percentile-bootstrap intervals of mean per-item scores, paired comparisons and a selection/test split.

One seeded index matrix ``I`` (``[resamples, n]``) gives the resampled means ``m*_b = mean_j s[I[b, j]]``; the
same ``(seed, n, resamples)`` resamples methods scored on the same items identically.

Interval: the ``α/2`` and ``1 − α/2`` quantiles of ``m*_1..m*_B`` with ``α = 1 − confidence`` (percentile
bootstrap, Efron & Tibshirani 1993, §13.3), linearly interpolated (Hyndman & Fan type 7, as ``numpy.quantile``).

Paired comparison: items are resampled jointly, ``d*_b = mean_j (m − b)[I[b, j]]``. Two-sided p-value for
"no difference", with ``d̂`` the observed difference:

    count = #{b : d*_b ≤ 0} if d̂ > 0,   #{b : d*_b ≥ 0} if d̂ < 0;
    p = min(1, 2 · (count + 1) / (B + 1));   p = 1 if d̂ = 0.

The smallest reachable p is ``2 / (B + 1)`` (report ``p < 0.001`` for B = 2000).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adamergex_pl.errors import InvalidTypeError, InvalidValueError

_BLOCK_ROWS = 256  # bootstrap rows gathered at a time (bounds the float copy to 256 · n values)


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` per-item scores with its percentile bootstrap interval ``[ci_low, ci_high]``."""

    mean: float
    n: int
    ci_low: float
    ci_high: float

    def as_dict(self) -> dict[str, Any]:
        """A tidy row of plain numbers: ``value`` (the mean), ``n``, ``ci_low``, ``ci_high``.

        Example:
            >>> Interval(mean=0.5, n=4, ci_low=0.25, ci_high=0.75).as_dict()
            {'value': 0.5, 'n': 4, 'ci_low': 0.25, 'ci_high': 0.75}
        """
        return {"value": self.mean, "n": self.n, "ci_low": self.ci_low, "ci_high": self.ci_high}


@dataclass(frozen=True)
class PairedComparison:
    """Difference of means (method − baseline) on ``n`` paired items, its interval and two-sided p-value."""

    difference: float
    n: int
    ci_low: float
    ci_high: float
    p_value: float

    def as_dict(self, baseline: str = "zero_shot") -> dict[str, Any]:
        """A tidy row: ``diff_vs_<baseline>``, ``diff_ci_low``, ``diff_ci_high``, ``p_value``, ``n``.

        Only ``n`` is shared with :meth:`Interval.as_dict`, so the two dicts merge into one row.

        Raises:
            InvalidValueError: If ``baseline`` holds characters other than letters, digits, ``_``.

        Example:
            >>> PairedComparison(difference=0.1, n=50, ci_low=0.02, ci_high=0.18, p_value=0.01).as_dict()
            {'diff_vs_zero_shot': 0.1, 'diff_ci_low': 0.02, 'diff_ci_high': 0.18, 'p_value': 0.01, 'n': 50}
        """
        if not isinstance(baseline, str) or not baseline.replace("_", "a").isalnum():
            raise InvalidValueError(
                f"baseline={baseline!r} must be a method name of letters, digits and '_', e.g. 'zero_shot'"
            )
        return {
            f"diff_vs_{baseline}": self.difference,
            "diff_ci_low": self.ci_low,
            "diff_ci_high": self.ci_high,
            "p_value": self.p_value,
            "n": self.n,
        }


def _scores_tensor(scores: Sequence[float] | Tensor, name: str) -> Tensor:
    """The scores as a 1-D float64 CPU tensor; refuses other shapes, non-numbers, NaN and infinities."""
    if isinstance(scores, Tensor):
        values = scores.detach().to("cpu")
    elif isinstance(scores, np.ndarray) and scores.dtype.kind in "biuf":
        values = torch.from_numpy(np.asarray(scores, dtype=np.float64))
    else:
        if isinstance(scores, (str, bytes)) or not isinstance(scores, Sequence):
            raise InvalidTypeError(
                f"{name} is a {type(scores).__name__}; pass one score per item as a list of numbers or a "
                "1-D tensor, e.g. [1, 0, 1]"
            )
        if not all(isinstance(s, numbers.Real) for s in scores):
            bad = next(s for s in scores if not isinstance(s, numbers.Real))
            raise InvalidTypeError(
                f"{name} holds {bad!r}; every per-item score must be a number, e.g. [1, 0, 0.5]"
            )
        values = torch.tensor([float(s) for s in scores], dtype=torch.float64)
    if values.dim() != 1:
        raise InvalidValueError(
            f"{name} has shape {tuple(values.shape)}; pass one score per item as a 1-D sequence"
        )
    if values.dtype.is_complex:
        raise InvalidTypeError(f"{name} is complex ({values.dtype}); per-item scores must be real numbers")
    values = values.to(torch.float64)
    if values.numel() == 0:
        raise InvalidValueError(f"{name} is empty; an interval needs at least one scored item")
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        position = int((~finite).nonzero()[0])
        raise InvalidValueError(
            f"{name}[{position}] is {float(values[position])}; every per-item score must be finite "
            "(drop or re-score that item)"
        )
    return values


def _check_options(confidence: float, resamples: int, seed: int) -> tuple[float, int, int]:
    """The options as ``(float, int, int)``, or an error naming the one out of range."""
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise InvalidValueError(
            f"confidence={confidence!r} must be a number strictly between 0 and 1, e.g. 0.95 for a 95% interval"
        )
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral) or resamples < 1:
        raise InvalidValueError(
            f"resamples={resamples!r} must be a positive integer; 2000 (the default) suits 95% intervals"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise InvalidValueError(f"seed={seed!r} must be an integer in [0, 2**63), e.g. 0")
    return float(confidence), int(resamples), int(seed)


def _resampled_means(values: Tensor, resamples: int, seed: int) -> Tensor:
    """``[resamples]`` means of bootstrap samples of ``values``, from one seeded index matrix."""
    n = values.numel()
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, n, (resamples, n), generator=generator)
    means = torch.empty(resamples, dtype=torch.float64)
    for start in range(0, resamples, _BLOCK_ROWS):
        block = index[start : start + _BLOCK_ROWS]
        means[start : start + block.shape[0]] = values[block].sum(dim=1) / n
    return means


def _percentile_interval(means: Tensor, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    levels = torch.tensor([alpha / 2, 1.0 - alpha / 2], dtype=torch.float64)
    low, high = torch.quantile(means, levels, interpolation="linear").tolist()
    return low, max(low, high)


def bootstrap_interval(
    scores: Sequence[float] | Tensor, *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Interval:
    """The mean of per-item scores and its seeded percentile bootstrap interval.

    Args:
        scores: One score per item: a list, a 1-D numpy array or a 1-D tensor.
        confidence: Coverage of the interval, strictly between 0 and 1.
        resamples: Number of bootstrap samples ``B``.
        seed: Seed of the index matrix; all-equal scores give a zero-width interval without resampling.

    Raises:
        InvalidValueError: If ``scores`` is empty, not 1-D or not finite, or an option is out of range.
        InvalidTypeError: If ``scores`` is not a sequence of numbers or a tensor.

    Example:
        >>> bootstrap_interval([1, 1, 1, 1])
        Interval(mean=1.0, n=4, ci_low=1.0, ci_high=1.0)
        >>> result = bootstrap_interval([1, 0] * 50, seed=0)
        >>> result.mean, result.n, result.ci_low < 0.5 < result.ci_high
        (0.5, 100, True)
    """
    confidence, resamples, seed = _check_options(confidence, resamples, seed)
    values = _scores_tensor(scores, "scores")
    n = values.numel()
    mean = math.fsum(values.tolist()) / n
    if bool((values == values[0]).all()):
        value = float(values[0])
        return Interval(mean=value, n=n, ci_low=value, ci_high=value)
    low, high = _percentile_interval(_resampled_means(values, resamples, seed), confidence)
    return Interval(mean=mean, n=n, ci_low=low, ci_high=high)


def paired_bootstrap(
    method_scores: Sequence[float] | Tensor,
    baseline_scores: Sequence[float] | Tensor,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> PairedComparison:
    """Difference of means (method − baseline) on the same items, its percentile interval and p-value.

    ``method_scores`` and ``baseline_scores`` score the same items in the same order; other arguments as
    :func:`bootstrap_interval`. Identical scores give difference 0, interval [0, 0] and p = 1.

    Raises:
        InvalidValueError: If the lengths differ, either is empty, not 1-D or not finite, or an option is out of range.
        InvalidTypeError: If either is not a sequence of numbers or a tensor.

    Example:
        >>> better = paired_bootstrap([1] * 40 + [0] * 10, [0] * 30 + [1] * 20)
        >>> better.difference, better.ci_low > 0, better.p_value < 0.05
        (0.4, True, True)
        >>> paired_bootstrap([1, 0, 1], [1, 0, 1])
        PairedComparison(difference=0.0, n=3, ci_low=0.0, ci_high=0.0, p_value=1.0)
    """
    confidence, resamples, seed = _check_options(confidence, resamples, seed)
    method = _scores_tensor(method_scores, "method_scores")
    baseline = _scores_tensor(baseline_scores, "baseline_scores")
    if method.numel() != baseline.numel():
        raise InvalidValueError(
            f"method_scores has {method.numel()} items but baseline_scores has {baseline.numel()}; a paired "
            "comparison needs both scored on the same items in the same order"
        )
    n = method.numel()
    difference = (math.fsum(method.tolist()) - math.fsum(baseline.tolist())) / n
    per_item = method - baseline
    if bool((per_item == per_item[0]).all()):  # no variation: every resample gives the same difference
        value = float(per_item[0])
        p_value = 1.0 if value == 0 else min(1.0, 2.0 / (resamples + 1))
        return PairedComparison(difference=value, n=n, ci_low=value, ci_high=value, p_value=p_value)
    means = _resampled_means(per_item, resamples, seed)
    low, high = _percentile_interval(means, confidence)
    if difference == 0:
        p_value = 1.0
    else:
        count = int((means <= 0).sum()) if difference > 0 else int((means >= 0).sum())
        p_value = min(1.0, 2.0 * (count + 1) / (resamples + 1))
    return PairedComparison(difference=difference, n=n, ci_low=low, ci_high=high, p_value=p_value)


def selection_split(n_items: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded split of item indices into a ``selection`` part (to choose ``t``) and a ``test`` part (to report).

    The selection part is the first ``k = floor(fraction · n_items + 0.5)`` of a seeded ``torch.randperm``; use
    one seed for every method and scale of a language. Returns disjoint sorted lists.

    Raises:
        InvalidValueError: If ``fraction`` is not in (0, 1), an integer is out of range, or a part would be empty.

    Example:
        >>> selection, test = selection_split(10, 0.3, seed=0)
        >>> len(selection), len(test), sorted(selection + test) == list(range(10))
        (3, 7, True)
    """
    if isinstance(n_items, bool) or not isinstance(n_items, numbers.Integral) or n_items < 0:
        raise InvalidValueError(f"n_items={n_items!r} must be a non-negative integer (the number of items)")
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 < fraction < 1:
        raise InvalidValueError(
            f"fraction={fraction!r} must be strictly between 0 and 1, e.g. 0.3 for 30% selection items"
        )
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise InvalidValueError(f"seed={seed!r} must be an integer in [0, 2**63), e.g. 0")
    n_items, seed = int(n_items), int(seed)
    k = math.floor(fraction * n_items + 0.5)
    if k == 0 or k == n_items:
        empty = "selection" if k == 0 else "test"
        raise InvalidValueError(
            f"fraction={fraction!r} of n_items={n_items} leaves the {empty} part empty; each part needs at "
            "least one item (use a fraction nearer 0.5, or more items)"
        )
    order = torch.randperm(n_items, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[:k]), sorted(order[k:])


def split_item_ids(
    item_ids: Iterable[int] | torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One language's ``(selection ids, test ids)``: :func:`selection_split` over its unique ids in ascending
    order, the split that every result of the language and every evaluation of it share.

    Raises:
        InvalidValueError: as :func:`selection_split`.

    Example:
        >>> selection, test = split_item_ids([7, 3, 3, 9, 1], 0.5, seed=0)
        >>> sorted(selection.tolist() + test.tolist())
        [1, 3, 7, 9]
    """
    ordered = torch.unique(
        torch.as_tensor(item_ids if torch.is_tensor(item_ids) else list(item_ids), dtype=torch.long)
    )
    selection, test = selection_split(ordered.numel(), fraction, seed)
    return ordered[selection], ordered[test]


def _fixed(value: float, digits: int) -> str:
    if math.isnan(value):
        return "nan"
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_with_interval(value: float, ci_low: float | None, ci_high: float | None, digits: int = 3) -> str:
    """``"<value> [<ci_low>, <ci_high>]"`` with ``digits`` decimals, or ``"<value>"`` when there is no interval.

    Raises:
        InvalidValueError: If ``digits`` is not a non-negative integer, a number is not real, or one end is None.

    Example:
        >>> format_with_interval(0.1864, 0.0981, 0.2876)
        '0.186 [0.098, 0.288]'
        >>> format_with_interval(-0.0004, -0.0123, 0.0110, digits=2)
        '0.00 [-0.01, 0.01]'
        >>> format_with_interval(0.5, None, None)
        '0.500'
    """
    if isinstance(digits, bool) or not isinstance(digits, numbers.Integral) or digits < 0:
        raise InvalidValueError(f"digits={digits!r} must be a non-negative integer, e.g. 3")
    if (ci_low is None) != (ci_high is None):
        raise InvalidValueError(
            f"ci_low={ci_low!r} and ci_high={ci_high!r}: pass both ends of the interval, or neither"
        )
    shown = _fixed(_as_float("value", value), int(digits))
    if ci_low is None or ci_high is None:
        return shown
    low = _fixed(_as_float("ci_low", ci_low), int(digits))
    high = _fixed(_as_float("ci_high", ci_high), int(digits))
    return f"{shown} [{low}, {high}]"


def _as_float(name: str, number: object) -> float:
    """``float(number)`` for a real number (also a numpy or 0-dim torch scalar); refuses text and booleans."""
    if not isinstance(number, (str, bytes, bool)):
        try:
            return float(number)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    raise InvalidValueError(f"{name}={number!r} must be a real number, e.g. 0.5")
