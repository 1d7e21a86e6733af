"""The whole experiment in one table: methods as rows, task × target language as columns, a per-task average.

The shape of the AdaMergeX paper's main table: each merge method at its best ``t`` per task and language
(chosen on the evaluation items, which flatters it: the table says so); a method missing a language has no
average for that task. Files: ``<run_dir>/results.md``, ``results.csv`` and ``results.json`` (``task,
reference, method, language, metric, value, scale``), ``plots/overview.png``.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from adamergex_pl.atomic_files import write_atomic
from adamergex_pl.merging.methods import reference_method_names, swept_method_names
from adamergex_pl.pipeline.report import best_scales
from adamergex_pl.results.selection import by_reference, in_split, splits
from adamergex_pl.results.tables import format_value, markdown_table

FIELDS = ("task", "reference", "method", "language", "metric", "value", "scale")


def experiment_rows(spec, run_dir: Path) -> list[dict[str, Any]]:
    """One row per task, method (and reference task) and target language, from each task's report."""
    rows: list[dict[str, Any]] = []
    for name, task in spec.tasks.items():
        document = json.loads((run_dir / name / "results.json").read_text())
        metric = document["main_metric"]
        for ref, group in by_reference(document["rows"]).items():
            task_rows = in_split(group, splits(group)[1])  # the reported items
            best = best_scales(group, metric, task.tgt_langs)
            for method in dict.fromkeys(r["method"] for r in task_rows):
                shared = method not in reference_method_names()
                if shared and any(r["task"] == name and r["method"] == method for r in rows):
                    continue  # zero_shot, base, oracle: the same in every reference task's comparison
                for lang in task.tgt_langs:
                    if method in swept_method_names():
                        if (method, lang) not in best:
                            continue
                        scale, value = best[(method, lang)]
                    else:
                        found = [
                            r
                            for r in task_rows
                            if (r["method"], r["language"], r["metric"]) == (method, lang, metric)
                        ]
                        if not found:
                            continue
                        scale, value = found[0]["scale"], found[0]["value"]
                    rows.append(
                        {
                            "task": name,
                            "reference": None if shared else ref,
                            "method": method,
                            "language": lang,
                            "metric": metric,
                            "value": value,
                            "scale": scale,
                        }
                    )
    return rows


def label(row: dict[str, Any]) -> str:
    """A row's method as the tables name it: ``adamergex (wiki_lm)`` for a method of a reference task."""
    return f"{row['method']} ({row['reference']})" if row.get("reference") else row["method"]


def averages(rows: list[dict[str, Any]], spec) -> dict[tuple[str, str], float]:
    """``{(method, task): mean over the task's target languages}`` where the method covers all of them."""
    found: dict[tuple[str, str], float] = {}
    for name, task in spec.tasks.items():
        for method in dict.fromkeys(label(r) for r in rows if r["task"] == name):
            values = [r["value"] for r in rows if (r["task"], label(r)) == (name, method)]
            if len(values) == len(task.tgt_langs):
                found[(method, name)] = sum(values) / len(values)
    return found


def summary(rows: list[dict[str, Any]], spec) -> str:
    """Methods × tasks: each method's average over a task's target languages (what the run prints)."""
    means = averages(rows, spec)
    methods = list(dict.fromkeys(label(r) for r in rows))
    body = [[method, *(format_value(means.get((method, name))) for name in spec.tasks)] for method in methods]
    metrics = ", ".join(f"{name}: {_metric(rows, name)}" for name in spec.tasks)
    return (
        f"## The experiment: {len(spec.tasks)} tasks, mean over each task's target languages ({metrics})\n\n"
        + markdown_table(["method", *spec.tasks], body)
        + "\n\nMerge methods at their best t per task and language, chosen on these same items; a method "
        "that misses a language (an oracle) has no mean.\n"
    )


def markdown(rows: list[dict[str, Any]], spec) -> str:
    """The summary, then per task: methods × target languages and their mean (the paper's table)."""
    means = averages(rows, spec)
    blocks = [summary(rows, spec)]
    for name, task in spec.tasks.items():
        methods = list(dict.fromkeys(label(r) for r in rows if r["task"] == name))
        values = {(label(r), r["language"]): r["value"] for r in rows if r["task"] == name}
        body = [
            [
                method,
                *(format_value(values.get((method, lang))) for lang in task.tgt_langs),
                format_value(means.get((method, name))),
            ]
            for method in methods
        ]
        header = ["method", *task.tgt_langs, "avg"]
        blocks.append(f"### {name} ({_metric(rows, name)})\n\n" + markdown_table(header, body))
    return "\n\n".join(blocks) + "\n"


def _metric(rows: list[dict[str, Any]], task: str) -> str:
    return next(r["metric"] for r in rows if r["task"] == task)


def plot(rows: list[dict[str, Any]], spec, out: Path) -> Path:
    """Grouped bars: per task, each method's average over the task's target languages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = averages(rows, spec)
    methods = list(dict.fromkeys(m for m, _ in means))
    tasks = list(spec.tasks)
    fig, ax = plt.subplots(figsize=(min(11.0, max(6.0, 0.35 * len(tasks) * max(1, len(methods)))), 4.2))
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        positions = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(tasks))]
        ax.bar(positions, [means.get((method, t), float("nan")) for t in tasks], width, label=method)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("main metric, mean over target languages")
    ax.set_title("Every task: each method's average over its target languages", fontsize=10)
    ax.legend(fontsize=7, ncols=min(4, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def write_experiment_table(spec, run_dir: Path) -> str:
    """Write ``results.{md,csv,json}`` and ``plots/overview.png`` of the whole experiment; return the table."""
    rows = experiment_rows(spec, run_dir)
    table = markdown(rows, spec)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({**r, "scale": "" if r["scale"] is None else r["scale"]} for r in rows)
    write_atomic(run_dir / "results.csv", text.getvalue())
    document = {"tasks": {n: t.tgt_langs for n, t in spec.tasks.items()}, "rows": rows}
    write_atomic(run_dir / "results.json", json.dumps(document, indent=2) + "\n")
    write_atomic(run_dir / "results.md", table)
    plot(rows, spec, run_dir / "plots" / "overview.png")
    return summary(rows, spec)
