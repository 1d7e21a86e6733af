"""Tables of results: the one renderer of Markdown and plain-text grids, and the validate table of metrics.

:func:`markdown_table` and :func:`text_table` render any grid (a header and rows of cells); every results table
of the package (``results.md`` of a merge comparison and of a pipeline, the table ``validate`` prints) goes
through them, and :func:`format_value` writes every number.

The per-language table of logged metrics, printed at the end of ``adamergex validate``:

Keys ``<prefix>/<task>/<lang>/<metric>`` become one row per language and one column per ``<task>/<metric>``;
the macro averages ``<prefix>/<task>/<metric>`` fill a final ``mean`` row. Keys of the form
``<prefix>/<lang>/<metric>`` (the causal-LM evaluator's ``val/es/loss``) are shown as column ``<metric>``, and
``<prefix>/<metric>`` overall values (``val/loss``) in the ``mean`` row. Values print with four decimals.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

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
    body = [[row, *(format_value(values.get(c)) for c in columns)] for row, values in rows.items()]
    return text_table(["language", *columns], body)


def format_value(value: float | None) -> str:
    """A result as every table shows it: four decimals, ``nan``, or empty for a missing value."""
    if value is None:
        return ""
    return "nan" if math.isnan(value) else f"{value:.4f}"


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
