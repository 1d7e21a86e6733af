"""The comparison of methods as ONE table: methods × languages for the main metric, with intervals.

    **count: count/accuracy** (higher is better) · value [95% bootstrap interval over items] · Δ: paired ...

    | method | t | en (n=59) | es (n=59) | Δ es vs zero_shot |
    |---|---|---|---|---|
    | zero_shot |  | 0.983 [0.949, 1.000] | 0.186 [0.085, 0.288] |  |
    | adamergex | 1.5 | 0.983 [0.949, 1.000] * | 0.203 [0.102, 0.305] * | +0.017 [-0.051, 0.085] p=0.748 |

A row per method, reference task (a ``reference`` column, where the rows name one: a method that uses reference
adapters is compared once per reference task) and scale ``t`` (methods without a scale have an empty ``t``), a
column per language with the number of items in its header, and, for every language but the source, the paired
difference with zero-shot transfer on the same items. ``*`` marks each merge method's best ``t`` per language
(and reference task), chosen on the ``selection`` items when the evaluation has a selection split and on the
reported items themselves otherwise (the line under the table says which). Every cell is written by
:mod:`adamergex_pl.results.tables`.

Example:
    >>> rows = [
    ...     {"method": "zero_shot", "scale": None, "language": "es", "metric": "accuracy", "split": "all",
    ...      "value": 0.5, "n": 4, "ci_low": 0.0, "ci_high": 1.0},
    ...     {"method": "adamergex", "scale": 1.0, "language": "es", "metric": "accuracy", "split": "all",
    ...      "value": 0.75, "n": 4, "ci_low": 0.25, "ci_high": 1.0, "diff_vs_zero_shot": 0.25,
    ...      "diff_ci_low": 0.0, "diff_ci_high": 0.5, "p_value": 0.5}]
    >>> print(comparison_table(rows, "accuracy", ["en", "es"], "en", {"adamergex"}, task="demo"))
    ... # doctest: +NORMALIZE_WHITESPACE
    **demo: accuracy** (higher is better) · value [95% bootstrap interval over items] · Δ: paired difference
    with zero_shot on the same items [95% interval], two-sided bootstrap p
    <BLANKLINE>
    | method | t | en | es (n=4) | Δ es vs zero_shot |
    |---|---|---|---|---|
    | zero_shot |  |  | 0.500 [0.000, 1.000] |  |
    | adamergex | 1 |  | 0.750 [0.250, 1.000] * | +0.250 [0.000, 0.500] p=0.500 |
    <BLANKLINE>
    \\* best t of each merge method per language, chosen on these same items (no selection split): that
    choice flatters the merge methods.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from adamergex_pl.results.selection import best_per_language, by_reference, in_split, lower_is_better, splits
from adamergex_pl.results.statistics import BASELINE, finite
from adamergex_pl.results.tables import format_difference, format_value, markdown_table

__all__ = ["comparison_table"]


def _header_language(language: str, rows: list[dict[str, Any]]) -> str:
    counts = {row.get("n") for row in rows if row["language"] == language and row.get("n") is not None}
    if len(counts) == 1:
        return f"{language} (n={counts.pop()})"
    return language if not counts else f"{language} (n={min(counts)}-{max(counts)})"


def _cell(row: dict[str, Any] | None, best: bool) -> str:
    if row is None:
        return ""
    low, high = row.get("ci_low"), row.get("ci_high")
    text = (
        format_value(row["value"], low, high) if finite(low) and finite(high) else format_value(row["value"])
    )
    return f"{text} *" if best else text


def _difference(row: dict[str, Any] | None) -> str:
    if row is None or row["method"] == BASELINE or not finite(row.get(f"diff_vs_{BASELINE}")):
        return ""
    return format_difference(
        row[f"diff_vs_{BASELINE}"], row["diff_ci_low"], row["diff_ci_high"], row["p_value"]
    )


def _reference(row: dict[str, Any]) -> str:
    return row.get("reference") or ""


def _legend(rows: list[dict[str, Any]], chosen_on: str) -> str:
    """The line under the table: where ``t`` was chosen, and why some cells have no interval."""
    if chosen_on == "selection":
        counts = sorted({row["n"] for row in rows if row.get("split") == "selection" and row.get("n")})
        sizes = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}" if counts else "some"
        text = (
            f"\\* best t of each merge method per language, chosen on {sizes} held-out selection items per "
            "language; every value above is on the other (test) items."
        )
    else:
        text = (
            "\\* best t of each merge method per language, chosen on these same items (no selection split): "
            "that choice flatters the merge methods."
        )
    if any((row.get("note") or "").startswith("token-weighted") for row in rows):
        text += " Losses and perplexities are token-weighted ratios over items: no interval."
    return text


def comparison_table(
    rows: Sequence[dict[str, Any]],
    metric: str,
    languages: Sequence[str],
    src_lang: str | None,
    merge_methods: Collection[str],
    task: str = "task",
    confidence: float = 0.95,
) -> str:
    """The Markdown table of ``metric`` (a caption line, the table, the legend under it).

    Args:
        rows: the tidy rows of a comparison (:func:`adamergex_pl.results.statistics.tidy_rows`).
        metric: the metric the table is about (e.g. ``xnli/accuracy``).
        languages: the columns, in order.
        src_lang: the source language: it gets no difference column (None: every language gets one).
        merge_methods: the methods that have a scale (their best ``t`` is marked).
        task: the task's name, for the caption.
        confidence: the intervals' coverage, for the caption.

    Returns:
        Markdown text (no trailing newline).
    """
    chosen_on, reported_on = splits(rows)
    shown = [r for r in in_split(rows, reported_on) if r["metric"] == metric]
    cells = {(r["method"], _reference(r), r["scale"], r["language"]): r for r in shown}
    variants = list(
        dict.fromkeys((r["method"], _reference(r), r["scale"]) for r in shown if r["language"] in languages)
    )
    order = list(dict.fromkeys(method for method, _, _ in variants))
    variants.sort(key=lambda variant: order.index(variant[0]))  # a method's references side by side
    marked = set()
    for group in by_reference(rows).values():  # each reference task's best t, apart
        best = best_per_language(in_split(group, chosen_on), metric, languages, merge_methods)
        marked |= {(m, _reference(row), row["scale"], lang) for (m, lang), row in best.items()}
    with_reference = any(reference for _, reference, _ in variants)
    targets = [lang for lang in languages if lang != src_lang]
    percent = f"{confidence * 100:g}%"
    direction = "lower is better" if lower_is_better(metric) else "higher is better"
    intervals = any(finite(r.get("ci_low")) for r in shown)
    compared = any(finite(r.get(f"diff_vs_{BASELINE}")) for r in shown)
    caption = f"**{task}: {metric}** ({direction})"
    if intervals:
        caption += f" · value [{percent} bootstrap interval over items]"
    if compared:
        caption += (
            f" · Δ: paired difference with {BASELINE} on the same items [{percent} interval], two-sided "
            "bootstrap p"
        )
    header = ["method", *(["reference"] if with_reference else []), "t"]
    header += [_header_language(lang, shown) for lang in languages]
    targets = targets if compared else []  # a table without paired comparisons (losses) has no Δ columns
    header += [f"Δ {lang} vs {BASELINE}" for lang in targets]
    body = []
    for method, reference, scale in variants:
        line = [method, *([reference] if with_reference else []), "" if scale is None else f"{scale:g}"]
        line += [
            _cell(cells.get((method, reference, scale, lang)), (method, reference, scale, lang) in marked)
            for lang in languages
        ]
        line += [_difference(cells.get((method, reference, scale, lang))) for lang in targets]
        body.append(line)
    return "\n\n".join(
        [
            caption,
            markdown_table(header, body),
            _legend([r for r in rows if r["metric"] == metric], chosen_on),
        ]
    )
