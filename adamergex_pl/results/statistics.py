"""Tidy result rows with their uncertainty: ``n``, a bootstrap interval, and a paired comparison with a baseline.

Every row names its ``task`` and, for a method that uses reference adapters, its ``reference`` task (``None``
for the others: ``zero_shot``, ``base``, ``oracle``; :class:`~adamergex_pl.merging.merge_results.MergeResults`
fills it in). For every result (method, scale ``t``, language, metric) with per-item scores
(:class:`~adamergex_pl.metrics.item_scores.ItemScores`):

* ``n``: the number of items;
* ``ci_low``, ``ci_high``: the seeded percentile bootstrap interval of the mean over items
  (:func:`~adamergex_pl.metrics.bootstrap.bootstrap_interval`; ``confidence`` 0.95, 2000 resamples, seed 0 by
  default); one seed for every result, so methods scored on the same ``n`` items are resampled identically;
* ``diff_vs_zero_shot``, ``diff_ci_low``, ``diff_ci_high``, ``p_value``: the paired bootstrap of
  ``method − zero_shot`` on the items both were scored on
  (:func:`~adamergex_pl.metrics.bootstrap.paired_bootstrap`), for every method but the baseline.

A token-weighted loss or perplexity is a ratio over items, not a mean: its rows have ``n`` (examples) but no
interval and no paired comparison, and ``note`` says why. A result without per-item scores (a cross-language
score such as ``consistency_3``) has ``n`` and intervals empty.

Selection split. With ``selection_fraction`` set, each language's items are split once
(:func:`~adamergex_pl.metrics.bootstrap.split_item_ids`: over the sorted item ids, seed ``seed``) into a
``selection`` part, on which the best ``t`` is chosen, and a ``test`` part, on which it is reported; every
result then has one row per part (``split``). Without it every row has ``split: all``, and ``t`` is chosen on
the very items it is reported on, which flatters the merge methods (the report says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.metrics.bootstrap import bootstrap_interval, paired_bootstrap, split_item_ids
from adamergex_pl.metrics.item_scores import ItemScores

FIELDS = (
    "task", "reference", "method", "scale", "language", "metric", "split", "value", "n", "ci_low", "ci_high",
    "diff_vs_zero_shot", "diff_ci_low", "diff_ci_high", "p_value", "note",
)  # fmt: skip
BASELINE = "zero_shot"  # the source-language task adapter as it is: zero-shot transfer
RATIO_NOTE = "token-weighted ratio over items (not a mean): no bootstrap interval"
NO_ITEMS_NOTE = "no per-item scores (a score across items or languages): no interval"


@dataclass(frozen=True)
class StatisticsOptions:
    """How intervals and splits are computed.

    Args:
        confidence: coverage of every interval, strictly between 0 and 1.
        resamples: bootstrap resamples.
        seed: the seed of the bootstrap and of the selection split.
        selection_fraction: the share of each language's items used to choose ``t`` (None: no split).

    Raises:
        InvalidValueError: ``selection_fraction`` outside (0, 1), or a bad option of the bootstrap.
    """

    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0
    selection_fraction: float | None = None

    def __post_init__(self) -> None:
        fraction = self.selection_fraction
        if fraction is not None and (isinstance(fraction, bool) or not 0 < float(fraction) < 1):
            raise InvalidValueError(
                f"selection_fraction={fraction!r} must be strictly between 0 and 1 (e.g. 0.3), or null for no "
                "selection split"
            )
        # the bootstrap checks its own options: a two-item run refuses bad ones with its message
        bootstrap_interval([0.0, 1.0], confidence=self.confidence, resamples=self.resamples, seed=self.seed)


@dataclass(frozen=True)
class Result:
    """One evaluated number with, where the evaluator has them, its per-item scores."""

    method: str
    scale: float | None
    language: str
    metric: str
    value: float
    items: ItemScores | None = None


def _splits(results: list[Result], options: StatisticsOptions) -> dict[str, dict[str, torch.Tensor]]:
    """Per language: ``{split: item ids}``, one split of the union of the language's item ids."""
    splits: dict[str, dict[str, torch.Tensor]] = {}
    for language in dict.fromkeys(r.language for r in results if r.items is not None):
        ids = torch.unique(torch.cat([r.items.ids for r in results if r.language == language and r.items]))
        if options.selection_fraction is None:
            splits[language] = {"all": ids}
            continue
        try:
            selection, test = split_item_ids(ids, options.selection_fraction, options.seed)
        except InvalidValueError as err:
            raise InvalidValueError(f"language {language!r}: {err}") from err
        splits[language] = {"selection": selection, "test": test}
    return splits


def tidy_rows(results: list[Result], task: str, options: StatisticsOptions) -> list[dict[str, Any]]:
    """One row per result and split, with ``n``, the interval and the paired comparison (see the module).

    Args:
        results: the evaluated numbers, in the order the rows should have.
        task: the task's name, written into every row.
        options: the interval and split options.

    Returns:
        Rows with the keys :data:`FIELDS`.
    """
    splits = _splits(results, options)
    baselines = {
        (r.language, r.metric): r.items for r in results if r.method == BASELINE and r.items is not None
    }
    rows = []
    for result in results:
        base = {"task": task, "method": result.method, "scale": result.scale, "language": result.language}
        base["metric"] = result.metric
        if result.items is None:
            rows.append(_row(base, "all", result.value, None, NO_ITEMS_NOTE, options))
            continue
        for split, ids in splits[result.language].items():
            items = result.items if split == "all" else result.items.subset(ids)
            if split != "all" and items.n == 0:
                continue  # not evaluated on this split's items (a merge method's t that was not chosen)
            value = result.value if split == "all" else items.value()
            row = _row(base, split, value, items, "" if items.is_mean else RATIO_NOTE, options)
            baseline = baselines.get((result.language, result.metric))
            if result.method != BASELINE and baseline is not None and items.is_mean:
                row.update(_paired(items, baseline.subset(ids), options))
            rows.append(row)
    return rows


def _row(base, split, value, items, note, options) -> dict[str, Any]:
    row = dict.fromkeys(FIELDS)
    row.update(base, split=split, value=value, n=None if items is None else items.n, note=note)
    if items is not None and items.is_mean and items.n:
        interval = bootstrap_interval(
            items.values, confidence=options.confidence, resamples=options.resamples, seed=options.seed
        )
        row.update(ci_low=interval.ci_low, ci_high=interval.ci_high)
    return row


def _paired(items: ItemScores, baseline: ItemScores, options: StatisticsOptions) -> dict[str, Any]:
    """The paired comparison on the items both were scored on (nothing when they share none)."""
    common = items.ids[torch.isin(items.ids, baseline.ids)]
    if common.numel() == 0:
        return {}
    method, reference = items.subset(common), baseline.subset(common)
    comparison = paired_bootstrap(
        method.values,
        reference.values,
        confidence=options.confidence,
        resamples=options.resamples,
        seed=options.seed,
    )
    paired = comparison.as_dict(BASELINE)
    paired.pop("n")  # the row's n is the method's; the comparison's items are the same ones
    if common.numel() != items.n:
        paired["note"] = f"paired on the {common.numel()} of {items.n} items the baseline was scored on"
    return paired


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite number (not None, not NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
