"""The pipeline's report: a per-language table of every method and two plots, from the evaluation's results.

* ``results.csv`` / ``results.json``: every row of the comparison (method, scale, language, metric, value);
* ``results.md``: the main metric, a row per method and scale and a column per language, then each merge
  method at its best scale per language;
* ``plots/by_method.png``: per language, a bar per method (merge methods at their best scale, labelled);
* ``plots/scale_sweep.png``: per target language, the main metric against ``t`` for the merge methods, with
  the methods that have no scale as horizontal lines.

Choosing ``t`` on the evaluation data itself flatters the merge methods; the table shows every ``t`` too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from adamergex_pl.merging.methods import swept_method_names
from adamergex_pl.results.files import write_text_atomic
from adamergex_pl.results.selection import best_per_language, lower_is_better, main_metric
from adamergex_pl.results.tables import format_value, markdown_table


def _value(rows, method, scale, language, metric) -> float | None:
    for r in rows:
        if (r["method"], r["scale"], r["language"], r["metric"]) == (method, scale, language, metric):
            return r["value"]
    return None


def best_scales(rows, metric: str, languages: list[str]) -> dict[tuple[str, str], tuple[float, float]]:
    """``{(method, lang): (t, value)}``: each merge method's best scale per language."""
    best = best_per_language(rows, metric, languages, swept_method_names())
    return {key: (row["scale"], row["value"]) for key, row in best.items()}


def markdown(rows, metric: str, languages: list[str], task: str) -> str:
    variants = list(dict.fromkeys((r["method"], r["scale"]) for r in rows if r["metric"] == metric))
    direction = "lower is better" if lower_is_better(metric) else "higher is better"
    body = [
        [method, "" if scale is None else f"{scale:g}"]
        + [format_value(_value(rows, method, scale, lang, metric)) for lang in languages]
        for method, scale in variants
    ]
    blocks = [f"## {task}: {metric} ({direction})", markdown_table(["method", "t", *languages], body)]
    best = best_scales(rows, metric, languages)
    if best:
        body = [
            [method]
            + [
                "" if (c := best.get((method, lang))) is None else f"{format_value(c[1])} (t={c[0]:g})"
                for lang in languages
            ]
            for method in dict.fromkeys(m for m, _ in best)
        ]
        blocks += [
            "Each merge method at its best t per language (chosen on these same data):",
            markdown_table(["method", *languages], body),
        ]
    return "\n\n".join(blocks) + "\n"


def plot(rows, metric: str, languages: list[str], src_lang: str, out_dir: Path) -> list[Path]:
    """Write the two PNG plots; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    best = best_scales(rows, metric, languages)
    methods = list(dict.fromkeys(r["method"] for r in rows if r["metric"] == metric))
    fig, ax = plt.subplots(figsize=(1.8 + 1.2 * len(languages) * max(1, len(methods)) / 3, 4))
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        values, labels = [], []
        for lang in languages:
            if method in swept_method_names():
                scale, value = best.get((method, lang), (None, float("nan")))
                labels.append("" if scale is None else f"t={scale:g}")
            else:
                value = _value(rows, method, None, lang, metric)
                labels.append("")
            values.append(float("nan") if value is None else value)
        positions = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(languages))]
        bars = ax.bar(positions, values, width, label=method, color=f"C{i}")
        ax.bar_label(bars, labels=labels, fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(languages)), languages)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per language and method (merge methods at their best t)")
    ax.legend(fontsize=7, ncols=2)
    fig.tight_layout()
    by_method = out_dir / "by_method.png"
    fig.savefig(by_method, dpi=120)
    plt.close(fig)

    targets = [lang for lang in languages if lang != src_lang] or languages
    fig, axes = plt.subplots(1, len(targets), figsize=(4.5 * len(targets), 3.6), squeeze=False)
    for ax, lang in zip(axes[0], targets, strict=True):
        for i, method in enumerate(methods):
            points = sorted(
                (r["scale"], r["value"])
                for r in rows
                if r["method"] == method
                and r["language"] == lang
                and r["metric"] == metric
                and r["scale"] is not None
            )
            if points:
                ax.plot(
                    [p[0] for p in points], [p[1] for p in points], marker="o", label=method, color=f"C{i}"
                )
            elif (value := _value(rows, method, None, lang, metric)) is not None:
                ax.axhline(value, linestyle="--", linewidth=1, label=method, color=f"C{i}")
        ax.set_xlabel("t")
        ax.set_ylabel(metric)
        ax.set_title(lang)
        ax.legend(fontsize=7)
    fig.tight_layout()
    sweep = out_dir / "scale_sweep.png"
    fig.savefig(sweep, dpi=120)
    plt.close(fig)
    return [by_method, sweep]


def write_report(results_dir: Path, run_dir: Path, metric: str | None, src_lang: str) -> str:
    """Copy the evaluation's results into ``run_dir`` and write the Markdown table and the plots.

    Returns:
        The Markdown table.
    """
    document = json.loads((results_dir / "results.json").read_text())
    rows, languages, task = document["rows"], document["languages"], document.get("task", "task")
    chosen = main_metric([r["metric"] for r in rows if r["language"]], metric)
    table = markdown(rows, chosen, languages, task)
    shutil.copyfile(results_dir / "results.csv", run_dir / "results.csv")
    write_text_atomic(
        run_dir / "results.json", json.dumps({**document, "main_metric": chosen}, indent=2) + "\n"
    )
    write_text_atomic(run_dir / "results.md", table)
    plot(rows, chosen, languages, src_lang, run_dir / "plots")
    return table
