"""Tables of results: the one renderer of Markdown and plain-text grids, and the validate table of metrics.

:func:`markdown_table` and :func:`text_table` render any grid (a header and rows of cells); every results table
of the package (``results.md`` of a merge comparison and of a pipeline, the table ``validate`` prints) goes
through them, and :func:`format_value` (with :func:`format_difference` for paired differences) writes every
number. The comparison of methods (:mod:`adamergex_pl.results.tables`) builds its grid here too.

The per-language table of logged metrics, printed at the end of ``adamergex validate``:

Keys ``<prefix>/<task>/<lang>/<metric>`` become one row per language and one column per ``<task>/<metric>``;
the macro averages ``<prefix>/<task>/<metric>`` fill a final ``mean`` row. Keys of the form
``<prefix>/<lang>/<metric>`` (the causal-LM evaluator's ``val/es/loss``) are shown as column ``<metric>``, and
``<prefix>/<metric>`` overall values (``val/loss``) in the ``mean`` row, which a table of one language leaves
out. Values print with four decimals.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from adamergex_pl.metrics.bootstrap import format_with_interval
from adamergex_pl.results.selection import best_per_language, by_reference, in_split, lower_is_better, splits
from adamergex_pl.results.statistics import BASELINE, finite

MEAN_ROW = "mean"


def _number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def results_grid(
    metrics: Mapping[str, Any], prefix: str = "val"
) -> tuple[list[str], dict[str, dict[str, float]]]:
    """``(columns, {row: {column: value}})`` of the metrics under ``prefix`` (rows: languages, then ``mean``).

    Example:
        >>> columns, rows = results_grid({"val/xnli/de/accuracy": 0.5, "val/xnli/accuracy": 0.5})
        >>> columns, rows
        (['xnli/accuracy'], {'de': {'xnli/accuracy': 0.5}, 'mean': {'xnli/accuracy': 0.5}})
    """
    parsed: list[tuple[str, ...]] = []
    for key, value in metrics.items():
        if key.startswith(f"{prefix}/"):
            parsed.append((*key[len(prefix) + 1 :].split("/"), _number(value)))
    tasks = {p[0] for p in parsed if len(p) == 4}  # <task>/<lang>/<metric>
    columns: list[str] = []
    rows: dict[str, dict[str, float]] = {}
    for parts in sorted(parsed, key=lambda p: (len(p) != 4, p[:-1])):
        *names, value = parts
        if len(names) == 3:  # task, language, metric
            row, column = names[1], f"{names[0]}/{names[2]}"
        elif len(names) == 2 and names[0] in tasks:  # task macro average
            row, column = MEAN_ROW, "/".join(names)
        elif len(names) == 2:  # language, metric (no task)
            row, column = names[0], names[1]
        elif len(names) == 1:
            row, column = MEAN_ROW, names[0]
        else:
            continue
        if column not in columns:
            columns.append(column)
        rows.setdefault(row, {})[column] = value
    if MEAN_ROW in rows:
        rows[MEAN_ROW] = rows.pop(MEAN_ROW)  # last
    return columns, rows


def format_results_table(metrics: Mapping[str, Any], prefix: str = "val") -> str:
    """The metrics under ``prefix`` as a plain-text table (empty string when there are none).

    Example:
        >>> print(format_results_table({"val/xnli/de/accuracy": 0.5, "val/xnli/zh/accuracy": 0.25,
        ...                             "val/xnli/accuracy": 0.375}))
        language  xnli/accuracy
        --------  -------------
        de               0.5000
        zh               0.2500
        mean             0.3750
    """
    columns, rows = results_grid(metrics, prefix)
    if not rows:
        return ""
    if len(rows) == 2 and MEAN_ROW in rows:  # one language: its "mean" would repeat it
        rows.pop(MEAN_ROW)
    body = [[row, *(format_value(values.get(c)) for c in columns)] for row, values in rows.items()]
    return text_table(["language", *columns], body)


def format_value(value: float | None, ci_low: float | None = None, ci_high: float | None = None) -> str:
    """A result as every table shows it: four decimals, ``nan``, or empty for a missing value; with an
    interval, three decimals and the interval (:func:`~adamergex_pl.metrics.bootstrap.format_with_interval`).

    Example:
        >>> format_value(0.18644), format_value(0.18644, 0.0983, 0.2881), format_value(None)
        ('0.1864', '0.186 [0.098, 0.288]', '')
    """
    if value is None:
        return ""
    if ci_low is not None and ci_high is not None:
        return format_with_interval(value, ci_low, ci_high, digits=3)
    return "nan" if math.isnan(value) else f"{value:.4f}"


def format_difference(difference: float, ci_low: float, ci_high: float, p_value: float) -> str:
    """A paired difference with its interval and p-value: ``+0.068 [0.000, 0.136] p=0.096``.

    p-values below 0.001 print as ``p<0.001`` (the bootstrap cannot resolve smaller ones).

    Example:
        >>> format_difference(0.0678, 0.0, 0.1356, 0.0955), format_difference(-0.5, -0.6, -0.4, 0.0004)
        ('+0.068 [0.000, 0.136] p=0.096', '-0.500 [-0.600, -0.400] p<0.001')
    """
    text = format_with_interval(difference, ci_low, ci_high, digits=3)
    if not text.startswith("-") and round(difference, 3) != 0:
        text = "+" + text
    return f"{text} {'p<0.001' if p_value < 0.001 else f'p={p_value:.3f}'}"


def text_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A plain-text grid: the first column left-aligned, the others right-aligned, a dashed rule."""
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in body)])


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A Markdown table (no trailing newline).

    Example:
        >>> print(markdown_table(["method", "es"], [["zero_shot", "0.5000"]]))
        | method | es |
        |---|---|
        | zero_shot | 0.5000 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


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
            f"t: each merge method's value per language, chosen on {sizes} held-out selection items per "
            "language; every value above is on the other (test) items, where only that value was evaluated."
        )
    else:
        text = (
            "\\* best t of each merge method per language, chosen on these same items (no selection split): "
            "that choice flatters the merge methods."
        )
    if any((row.get("note") or "").startswith("token-weighted") for row in rows):
        text += " Losses and perplexities are token-weighted ratios over items: no interval."
    return text


def _lines(variants: list[tuple], cells: dict[tuple, Any], languages: Sequence[str]) -> list[list[tuple]]:
    """With a selection split, each method's variants on one line where every language has one reported value
    (its chosen ``t``); a method with several values in a language (none finite where ``t`` is chosen) keeps a
    line per value."""
    groups: dict[tuple, list[tuple]] = {}
    for variant in variants:
        groups.setdefault(variant[:2], []).append(variant)
    lines: list[list[tuple]] = []
    for group in groups.values():
        single = all(sum((*v, lang) in cells for v in group) <= 1 for lang in languages)
        lines += [group] if single else [[v] for v in group]
    return lines


def _scales(merged: list[tuple], at: dict[str, tuple | None]) -> str:
    """The ``t`` column: one value, or each language's (``en 0.25 · es 1.5``) where they differ."""
    chosen = {lang: key[2] for lang, key in at.items() if key is not None and key[2] is not None}
    if len(set(chosen.values())) > 1:
        return " · ".join(f"{lang} {scale:g}" for lang, scale in chosen.items())
    scale = merged[0][2] if len(merged) == 1 else next(iter(chosen.values()), None)
    return "" if scale is None else f"{scale:g}"


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

    A row per method, reference task and ``t``: where rows name a ``reference`` (a comparison of several
    reference tasks), a ``reference`` column, a method's reference tasks side by side, and each reference
    task's best ``t`` marked apart.

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
    variants.sort(key=lambda variant: order.index(variant[0]))  # a method's reference tasks side by side
    marked = set()
    for group in by_reference(rows).values():  # each reference task's best t, apart
        best = best_per_language(in_split(group, chosen_on), metric, languages, merge_methods)
        marked |= {(m, _reference(row), row["scale"], lang) for (m, lang), row in best.items()}
    lines = _lines(variants, cells, languages) if chosen_on == "selection" else [[v] for v in variants]
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
    for merged in lines:  # one line per variant, or per method at its chosen t in each language
        method, reference, _ = merged[0]
        at = {
            lang: next(((m, r, s, lang) for m, r, s in merged if (m, r, s, lang) in cells), None)
            for lang in languages
        }
        line = [method, *([reference] if with_reference else []), _scales(merged, at)]
        line += [
            _cell(cells.get(at[lang]), chosen_on != "selection" and at[lang] in marked) for lang in languages
        ]
        line += [_difference(cells.get(at[lang])) for lang in targets]
        body.append(line)
    return "\n\n".join(
        [
            caption,
            markdown_table(header, body),
            _legend([r for r in rows if r["metric"] == metric], chosen_on),
        ]
    )
