"""The pipeline's report: the comparison table and two plots, from the evaluation's results.

* ``results.csv`` / ``results.json``: the evaluation's tidy rows (method, scale, language, metric, split, value,
  ``n``, the 95% bootstrap interval, the paired comparison with zero-shot; :mod:`adamergex_pl.results.statistics`);
  ``results.json``'s ``best[<lang>].adapter_dir`` is rewritten relative to the run directory (the folder of
  this ``results.json``);
* ``results.md``: the one table (:mod:`adamergex_pl.results.tables`), also printed at the end;
* ``plots/by_method.png``: per language, each method (merge methods at their best ``t``, written under the
  bar) with its interval: bars from 0 for scores, points for losses and perplexities;
* ``plots/scale_sweep.png``: the main metric against ``t`` for the merge methods with interval bands, in the
  source language beside every target, with the methods that have no scale as horizontal lines.

Choosing ``t`` on the evaluation data itself flatters the merge methods; the table says where ``t`` was chosen.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from adamergex_pl.atomic_files import write_atomic
from adamergex_pl.merging.methods import swept_method_names
from adamergex_pl.results.selection import best_per_language, in_split, lower_is_better, main_metric, splits
from adamergex_pl.results.statistics import BASELINE, finite
from adamergex_pl.results.tables import comparison_table

_MARKERS = ("o", "s", "^", "D", "v", "P")
_NO_INTERVALS = "no intervals: a token-weighted loss is not a mean over items"
_WORDS = {
    "accuracy": "accuracy (share of items answered correctly)",
    "exact_match": "exact match (share of items)",
    "f1": "token F1 (mean over items)",
    "rouge_l_f1": "ROUGE-L F1 (mean over items)",
    "loss": "loss (negative log-likelihood per token)",
    "perplexity": "perplexity (exp of the loss per token)",
}


def metric_in_words(metric: str) -> str:
    """An axis label for ``metric``: ``count/accuracy`` -> ``count: accuracy`` and, on a second line,
    ``(share of items answered correctly)``."""
    *task, name = metric.split("/")
    words = _WORDS.get(name, name.replace("_", " ")).replace(" (", "\n(")  # two lines: fits a short axis
    return f"{task[0]}: {words}" if task else words


def _points(rows, metric, languages):
    """``{(method, scale, language): row}`` of the reported split, and the best rows of the chosen split."""
    chosen_on, reported_on = splits(rows)
    shown = {
        (r["method"], r["scale"], r["language"]): r
        for r in in_split(rows, reported_on)
        if r["metric"] == metric
    }
    best = best_per_language(in_split(rows, chosen_on), metric, languages, swept_method_names())
    return shown, best, chosen_on


def best_scales(rows, metric: str, languages: list[str]) -> dict[tuple[str, str], tuple[float, float]]:
    """``{(method, lang): (t, value)}``: each scale-swept method at its best ``t`` per language, chosen on the
    selection split when there is one, with the value of the reported split."""
    shown, best, _ = _points(rows, metric, languages)
    return {
        (method, lang): (row["scale"], shown[(method, row["scale"], lang)]["value"])
        for (method, lang), row in best.items()
        if (method, row["scale"], lang) in shown
    }


def _errors(row) -> tuple[float, float]:
    """Distances from the value to the interval's ends (0 without an interval)."""
    if row is None or not (finite(row.get("ci_low")) and finite(row.get("ci_high"))):
        return 0.0, 0.0
    return max(0.0, row["value"] - row["ci_low"]), max(0.0, row["ci_high"] - row["value"])


def _by_method(plt, rows, metric, languages, src_lang, path: Path) -> None:
    shown, best, chosen_on = _points(rows, metric, languages)
    methods = list(dict.fromkeys(m for m, _, _ in shown))
    loss = lower_is_better(metric)
    fig, ax = plt.subplots(figsize=(max(6.5, 2.2 + 1.1 * len(languages) * len(methods) / 2), 4.6))
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        for j, lang in enumerate(languages):
            if method in swept_method_names():
                pick = best.get((method, lang))
                row = None if pick is None else shown.get((method, pick["scale"], lang))
                name = "K" if method in swept_method_names("swap") else "t"
                label = "" if row is None else f"{name}={row['scale']:g}"
            else:
                row, label = shown.get((method, None, lang)), ""
            if row is None:
                continue
            x = j + (i - (len(methods) - 1) / 2) * width
            low, high = _errors(row)
            legend = (
                method
                if j == min(k for k, g in enumerate(languages) if _has(shown, best, method, g))
                else None
            )
            if loss:
                ax.errorbar(
                    x, row["value"], yerr=[[low], [high]], fmt="o", color=f"C{i}", capsize=3, label=legend
                )
            else:
                ax.bar(x, row["value"], width * 0.92, color=f"C{i}", label=legend)
                ax.errorbar(
                    x, row["value"], yerr=[[low], [high]], fmt="none", ecolor="black", capsize=3, lw=1
                )
            if label:
                ax.annotate(
                    label,
                    (x, 0),
                    xycoords=("data", "axes fraction"),
                    xytext=(0, -4),
                    textcoords="offset points",
                    ha="center",
                    va="top",
                    fontsize=7,
                    rotation=90,
                    annotation_clip=False,
                )  # fmt: skip  (under the axis, whatever the y range)
    ticks = [f"{lang} (source)" if lang == src_lang else f"{lang} (target)" for lang in languages]
    ax.set_xticks(range(len(languages)), ticks)
    ax.tick_params(axis="x", pad=34, length=0)  # room for the t labels under the bars
    ax.set_xlabel("evaluation language")
    ax.set_ylabel(metric_in_words(metric))
    if not loss:
        ax.set_ylim(0, 1.05 if _bounded(shown) else None)
    where = "held-out selection items" if chosen_on == "selection" else "the same items (flatters them)"
    bars = "error bars: 95% bootstrap interval over items" if _has_intervals(shown) else _NO_INTERVALS
    ax.set_title(f"Each method per language; merge methods at their best t, chosen on {where}\n{bars}",
                 fontsize=9)  # fmt: skip
    ax.legend(title="method", fontsize=8, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _has(shown, best, method, lang) -> bool:
    if method in swept_method_names():
        return (method, lang) in best
    return (method, None, lang) in shown


def _has_intervals(shown) -> bool:
    return any(_errors(row) != (0.0, 0.0) for row in shown.values())


def _bounded(shown) -> bool:
    return all(0 <= r["value"] <= 1 for r in shown.values())


def _scale_sweep(plt, rows, metric, languages, src_lang, path: Path) -> None:
    shown, _, _ = _points(rows, metric, languages)
    methods = list(dict.fromkeys(m for m, _, _ in shown))
    panels = (
        [src_lang, *(lang for lang in languages if lang != src_lang)] if src_lang in languages else languages
    )
    share = not lower_is_better(metric) and _bounded(shown)
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.2 * len(panels) + 0.6, 4.2), squeeze=False, sharey=share
    )
    shown = {key: row for key, row in shown.items() if key[0] not in swept_method_names("swap")}  # K is no t
    methods = [m for m in methods if m not in swept_method_names("swap")]
    scales = sorted({s for _, s, _ in shown if s is not None}) or [0.0, 1.0]
    merges = [m for m in methods if any(mm == m and s is not None for mm, s, _ in shown)]
    step = 0.015 * ((scales[-1] - scales[0]) or 1.0)  # merge methods side by side: equal values stay visible
    for ax, lang in zip(axes[0], panels, strict=True):
        for i, method in enumerate(methods):
            points = sorted(
                (r["scale"], r)
                for (m, s, g), r in shown.items()
                if m == method and g == lang and s is not None
            )
            if points:
                shift = (merges.index(method) - (len(merges) - 1) / 2) * step
                errors = [_errors(row) for _, row in points]
                ax.errorbar(
                    [scale + shift for scale, _ in points],
                    [row["value"] for _, row in points],
                    yerr=[[e[0] for e in errors], [e[1] for e in errors]],
                    marker=_MARKERS[merges.index(method) % len(_MARKERS)],
                    color=f"C{i}",
                    capsize=2,
                    linewidth=1.4,
                    elinewidth=0.8,
                    label=method,
                )
            elif (row := shown.get((method, None, lang))) is not None:
                ax.axhline(row["value"], linestyle="--", linewidth=1.2, color=f"C{i}", label=method)
                low, high = _errors(row)
                if method == BASELINE and (low or high):  # the baseline's interval, as a band
                    ax.axhspan(row["value"] - low, row["value"] + high, color=f"C{i}", alpha=0.12)
        role = "source language" if lang == src_lang else "target language"
        ax.set_title(f"{lang} ({role})", fontsize=10)
        ax.set_xlabel("merge scale t")
        ax.set_ylabel(metric_in_words(metric) if ax is axes[0][0] else "")
        ax.tick_params(labelleft=True)
    if share:
        axes[0][0].set_ylim(0, 1.05)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.legend(handles, labels, loc="lower center", ncols=min(len(labels), 6), fontsize=8, frameon=False)
    fig.suptitle(
        "Main metric against the merge scale t, source language beside each target\n"
        + (
            f"error bars: 95% bootstrap intervals · dashed: methods without a scale (band: {BASELINE}'s interval)"
            if _has_intervals(shown)
            else f"dashed: methods without a scale · {_NO_INTERVALS}"
        ),
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot(rows, metric: str, languages: list[str], src_lang: str, out_dir: Path) -> list[Path]:
    """Write the two PNG plots; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    by_method, sweep = out_dir / "by_method.png", out_dir / "scale_sweep.png"
    _by_method(plt, rows, metric, languages, src_lang, by_method)
    _scale_sweep(plt, rows, metric, languages, src_lang, sweep)
    return [by_method, sweep]


def write_report(results_dir: Path, run_dir: Path, metric: str | None, src_lang: str) -> str:
    """Copy the evaluation's results into ``run_dir`` and write the Markdown table and the plots.

    Returns:
        The Markdown table.
    """
    document = json.loads((results_dir / "results.json").read_text())
    rows, languages, task = document["rows"], document["languages"], document.get("task", "task")
    chosen = main_metric([r["metric"] for r in rows if r["language"]], metric)
    confidence = (document.get("statistics") or {}).get("confidence", 0.95)
    table = comparison_table(rows, chosen, languages, src_lang, swept_method_names(), task, confidence)
    best = {
        lang: {**entry, "adapter_dir": os.path.relpath(results_dir / entry["adapter_dir"], run_dir)}
        for lang, entry in (document.get("best") or {}).items()
    }  # relative to the run directory, where this copy of results.json lives
    shutil.copyfile(results_dir / "results.csv", run_dir / "results.csv")
    document = {**document, "main_metric": chosen, "best": best}
    write_atomic(run_dir / "results.json", json.dumps(document, indent=2) + "\n")
    write_atomic(run_dir / "results.md", table + "\n")
    plot(rows, chosen, languages, src_lang, run_dir / "plots")
    return table
