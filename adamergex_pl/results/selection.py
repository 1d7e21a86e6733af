"""Which metric a result is about, which direction is better, and which variant is best: one rule for all.

A metric name is better when lower if it is a loss or a perplexity (``loss``, ``xnli/loss``, ``perplexity``);
every other metric (accuracy, exact match, F1, ROUGE-L, consistency) is better when higher. A report's main
metric is the one asked for (by its full name or its last part), else the first recorded metric that is not a
loss, else the first one.

Rows are the comparison's tidy rows: ``{"method", "scale", "language", "metric", "split", "value", ...}``.
With a selection split (:mod:`adamergex_pl.results.statistics`) the best scale is chosen on the ``selection``
rows and reported on the ``test`` rows (:func:`splits`); without one both are the ``all`` rows.

Example:
    >>> main_metric(["xnli/loss", "xnli/accuracy"], None)
    'xnli/accuracy'
    >>> main_metric(["xnli/loss", "xnli/accuracy"], "loss")
    'xnli/loss'
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from adamergex_pl.errors import InvalidValueError


def lower_is_better(metric: str) -> bool:
    """Whether smaller values of ``metric`` are better (losses and perplexities)."""
    return "loss" in metric or "perplexity" in metric


def main_metric(metrics: Sequence[str], wanted: str | None, *, what: str = "metric") -> str:
    """The metric a table or a selection is about.

    Args:
        metrics: the recorded metric names, in order.
        wanted: the asked-for metric (exact, or its last ``/`` part), ``None`` for the default rule.
        what: the option's name, for the message.

    Raises:
        ValueError: nothing was recorded, or ``wanted`` names no recorded metric.
    """
    metrics = list(dict.fromkeys(metrics))
    if not metrics:
        raise InvalidValueError("the evaluation recorded no per-language metric")
    if wanted is None:
        return next((m for m in metrics if not lower_is_better(m)), metrics[0])
    for metric in metrics:
        if metric == wanted or metric.endswith("/" + wanted):
            return metric
    raise InvalidValueError(f"{what}={wanted!r} was not recorded; the evaluation has {metrics}")


def splits(rows: Iterable[dict[str, Any]]) -> tuple[str, str]:
    """``(the split t is chosen on, the split results are reported on)``.

    Example:
        >>> splits([{"split": "selection"}, {"split": "test"}]), splits([{"split": "all"}]), splits([{}])
        (('selection', 'test'), ('all', 'all'), ('all', 'all'))
    """
    found = {row.get("split", "all") for row in rows}
    return ("selection", "test") if "selection" in found else ("all", "all")


def in_split(rows: Iterable[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """The rows of one split (rows without a ``split`` are ``all``); rows without items are in every split."""
    return [row for row in rows if row.get("split", "all") in (split, "all")]


def best_per_language(
    rows: Iterable[dict[str, Any]], metric: str, languages: Iterable[str], methods: Iterable[str]
) -> dict[tuple[str, str], dict[str, Any]]:
    """Each of ``methods`` at its best value of ``metric`` per language: ``{(method, language): row}``.

    Non-finite values never win; ties keep the first row (the smaller swept value, in sweep order).
    """
    sign = -1.0 if lower_is_better(metric) else 1.0
    wanted_languages, wanted_methods = set(languages), set(methods)
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        if row["metric"] != metric or row["language"] not in wanted_languages:
            continue
        if row["method"] not in wanted_methods or not math.isfinite(row["value"]):
            continue
        key = (row["method"], row["language"])
        if key not in best or sign * row["value"] > sign * best[key]["value"]:
            best[key] = row
    return best


def by_reference(rows: Iterable[dict[str, Any]]) -> dict[str | None, list[dict[str, Any]]]:
    """The rows of each reference task together with the rows that use none (``zero_shot``, ``base``,
    ``oracle``), in order: what one comparison of methods holds. ``{None: rows}`` when no row names one.

    Example:
        >>> rows = [{"method": "zero_shot"}, {"method": "adamergex", "reference": "wiki"},
        ...         {"method": "adamergex", "reference": "count"}]
        >>> {ref: [r["method"] for r in group] for ref, group in by_reference(rows).items()}
        {'wiki': ['zero_shot', 'adamergex'], 'count': ['zero_shot', 'adamergex']}
    """
    rows = list(rows)
    references = list(dict.fromkeys(row["reference"] for row in rows if row.get("reference")))
    if not references:
        return {None: rows}
    return {ref: [row for row in rows if row.get("reference") in (ref, None)] for ref in references}


def best_overall(best: dict[tuple[str, str], dict[str, Any]], metric: str) -> dict[str, dict[str, Any]]:
    """From :func:`best_per_language`, the single best row per language over all methods."""
    sign = -1.0 if lower_is_better(metric) else 1.0
    chosen: dict[str, dict[str, Any]] = {}
    for (_, language), row in best.items():
        if language not in chosen or sign * row["value"] > sign * chosen[language]["value"]:
            chosen[language] = row
    return chosen


def reported(
    rows: Sequence[dict[str, Any]], metric: str, merge_methods: Iterable[str]
) -> list[dict[str, Any]]:
    """The rows a comparison reports: with a selection split, the ``test`` rows of a merge method only at its
    chosen value per language (and reference task); every row otherwise.

    A merge method's value is chosen by :func:`best_per_language` on the ``selection`` rows of ``metric``; its
    ``test`` rows (every metric) are kept at that value only. Where no value of a method has a finite selection
    score, all its test rows stay, so that NaNs show. This is what a
    :class:`~adamergex_pl.merging.merge_module.MergeModule` evaluates on the test items in the first place.

    Example:
        >>> rows = [{"method": "adamergex", "scale": t, "language": "es", "metric": "acc", "split": split,
        ...          "value": v} for t, split, v in [(0.5, "selection", 0.6), (1.0, "selection", 0.7),
        ...                                          (0.5, "test", 0.9), (1.0, "test", 0.5)]]
        >>> [(r["scale"], r["split"]) for r in reported(rows, "acc", ["adamergex"])]
        [(0.5, 'selection'), (1.0, 'selection'), (1.0, 'test')]
    """
    chosen_on, reported_on = splits(rows)
    if chosen_on != "selection":
        return list(rows)
    merge_methods = set(merge_methods)
    languages = {row["language"] for row in rows}
    kept_scale: dict[tuple[str | None, str, str], Any] = {}  # (reference, method, language) -> chosen value
    for reference, group in by_reference(rows).items():
        best = best_per_language(in_split(group, chosen_on), metric, languages, merge_methods)
        kept_scale.update({(reference, m, lang): row["scale"] for (m, lang), row in best.items()})
    return [
        row
        for row in rows
        if row.get("split") != reported_on
        or row["method"] not in merge_methods
        or kept_scale.get((row.get("reference"), row["method"], row["language"]), row["scale"])
        == row["scale"]
    ]
