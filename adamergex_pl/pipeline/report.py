"""The pipeline's report: the comparison table and two plots, from the evaluation's results.

* ``results.csv`` / ``results.json``: every evaluation's tidy rows (:mod:`adamergex_pl.results.statistics`),
  ``best[<lang>].adapter_dir`` relative to the run directory;
* ``results.md``: the one table (:mod:`adamergex_pl.results.tables`), also printed at the end;
* ``plots/by_method.png`` (``by_method_<ref>.png`` per reference task): each method per language, merge
  methods at their best ``t``, with intervals;
* ``plots/scale_sweep.png``: the main metric against ``t`` for the merge methods, with interval bands;
* ``plots/training.png`` (:func:`plot_training`): training and validation loss of every fit stage by step.

Choosing ``t`` on the evaluation data itself flatters the merge methods; the table says where ``t`` was chosen.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from adamergex_pl.atomic_files import write_atomic
from adamergex_pl.merging.merge_results import csv_text
from adamergex_pl.merging.methods import swept_method_names
from adamergex_pl.results.selection import (
    best_per_language,
    by_reference,
    in_split,
    lower_is_better,
    main_metric,
    splits,
)
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


def _by_method(plt, rows, metric, languages, src_lang, path: Path, reference: str | None = None) -> None:
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
    of = f" (reference task: {reference})" if reference else ""
    ax.set_title(f"Each method per language{of}; merge methods at their best t, chosen on {where}\n{bars}",
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


def _scale_sweep(plt, rows, metric, languages, src_lang, path: Path, reference: str | None = None) -> None:
    chosen_on, _ = splits(rows)  # every t has values on the items it is chosen on (the test items: one t)
    shown = {
        (r["method"], r["scale"], r["language"]): r
        for r in in_split(rows, chosen_on)
        if r["metric"] == metric
    }
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
        "Main metric against the merge scale t, source language beside each target"
        + (f" (reference task: {reference})" if reference else "")
        + "\n"
        + ("values on the held-out selection items, where t is chosen\n" if chosen_on == "selection" else "")
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


def plot(
    rows, metric: str, languages: list[str], src_lang: str, out_dir: Path, reference: str | None = None
) -> list[Path]:
    """Write the two PNG plots (``by_method.png``, ``scale_sweep.png``; of one of several reference tasks:
    ``by_method_<reference>.png``, ...); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"_{reference}" if reference else ""
    by_method, sweep = out_dir / f"by_method{suffix}.png", out_dir / f"scale_sweep{suffix}.png"
    _by_method(plt, rows, metric, languages, src_lang, by_method, reference)
    _scale_sweep(plt, rows, metric, languages, src_lang, sweep, reference)
    return [by_method, sweep]


def combined_results(results_dirs: dict[str, Path], run_dir: Path) -> dict:
    """One ``results.json`` document from the evaluations of one task, one per reference task.

    The rows of the methods that use no reference adapters (``zero_shot``, ``base``, ``oracle``) are the same in
    every evaluation and kept once; ``best[<lang>]`` is the best merge over every reference task (its
    ``reference`` says which), with ``adapter_dir`` relative to ``run_dir``.
    """
    documents = {ref: json.loads((path / "results.json").read_text()) for ref, path in results_dirs.items()}
    rows, seen, best = [], set(), {}
    for ref, document in documents.items():
        for row in document["rows"]:
            key = (row["method"], row["scale"], row["language"], row["metric"], row.get("split"))
            if not row.get("reference") and key in seen:
                continue
            seen.add(key)
            rows.append(row)
        for lang, entry in (document.get("best") or {}).items():
            entry = {**entry, "reference": ref}
            entry["adapter_dir"] = os.path.relpath(results_dirs[ref] / entry["adapter_dir"], run_dir)
            sign = -1.0 if lower_is_better(entry["metric"]) else 1.0
            if lang not in best or sign * entry["value"] > sign * best[lang]["value"]:
                best[lang] = entry
    first = next(iter(documents.values()))
    return {**first, "reference_task": list(documents), "rows": rows, "best": best}


def write_report(
    results_dirs: dict[str, Path],
    run_dir: Path,
    metric: str | None,
    src_lang: str,
    cosines: dict[tuple[str, str], float | None] | None = None,
) -> str:
    """Write the evaluations' results (one per reference task) into ``run_dir`` as one report.

    Args:
        results_dirs: ``{reference task: the evaluation's results folder}``, the first reference first.
        run_dir: where the report goes.
        metric: the main metric (default: the first that is not a loss).
        src_lang: the source language.
        cosines: ``{(reference, language): mean gap cosine}`` where an oracle exists, shown beside each gain
            (:mod:`adamergex_pl.pipeline.diagnosis`).

    Returns:
        The Markdown table (and, with ``cosines``, the diagnostic's).
    """
    from adamergex_pl.pipeline.diagnosis import GAIN_PLOT, gain_rows, gain_table, plot_gain

    document = combined_results(results_dirs, run_dir)
    rows, languages, task = document["rows"], document["languages"], document.get("task", "task")
    chosen = main_metric([r["metric"] for r in rows if r["language"]], metric)
    confidence = (document.get("statistics") or {}).get("confidence", 0.95)
    table = comparison_table(rows, chosen, languages, src_lang, swept_method_names(), task, confidence)
    document["main_metric"] = chosen
    if cosines:
        gains = gain_rows(rows, chosen, cosines)
        document["gain_vs_gap_cosine"] = gains
        table += "\n\n" + gain_table(gains)
        oracle = {
            row["language"]: row[f"diff_vs_{BASELINE}"]
            for row in in_split(rows, splits(rows)[1])
            if row["method"] == "oracle"
            and row["metric"] == chosen
            and finite(row.get(f"diff_vs_{BASELINE}"))
        }
        plot_gain(gains, chosen, run_dir / "plots" / GAIN_PLOT, oracle)
    write_atomic(run_dir / "results.csv", csv_text(rows))
    write_atomic(run_dir / "results.json", json.dumps(document, indent=2) + "\n")
    write_atomic(run_dir / "results.md", table + "\n")
    groups = by_reference(rows)
    for ref, group in groups.items():
        plot(group, chosen, languages, src_lang, run_dir / "plots", ref if len(groups) > 1 else None)
    return table


TRAINING_CURVES = ("train/loss", "val/loss")


def training_curves(files: list[Path]) -> dict[str, list[tuple[int, float]]]:
    """``{metric: [(step, value), ...]}`` of :data:`TRAINING_CURVES` from a stage's ``metrics.csv`` files,
    oldest first. A later file continues the curve from its first step on (as TensorBoard does): a resumed fit
    replaces the steps it trained again, and one that started again from scratch replaces the whole curve."""
    curves: dict[str, dict[int, float]] = {metric: {} for metric in TRAINING_CURVES}
    for path in files:
        with path.open(newline="") as handle:
            rows = [row for row in csv.DictReader(handle) if (row.get("step") or "").isdigit()]
        if not rows:
            continue
        first = min(int(row["step"]) for row in rows)
        for points in curves.values():
            for step in [step for step in points if step >= first]:
                del points[step]
        for row in rows:
            for metric, points in curves.items():
                value = row.get(metric) or ""
                if value and math.isfinite(float(value)):
                    points[int(row["step"])] = float(value)
    return {metric: sorted(points.items()) for metric, points in curves.items()}


def plot_training(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path) -> Path:
    """Write ``path``: the training loss (left) and validation loss (right) of each stage against the step.

    Args:
        curves: ``{stage: training_curves(...)}`` of the fit stages, in the pipeline's order.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    rows = math.ceil(len(curves) / 5)  # of the legend, below the panels
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4 + 0.25 * rows))
    cmap = plt.get_cmap("tab10" if len(curves) <= 10 else "tab20" if len(curves) <= 20 else "turbo")
    colors = {
        stage: cmap(i if len(curves) <= 20 else i / max(1, len(curves) - 1)) for i, stage in enumerate(curves)
    }
    for ax, metric, name in zip(axes, TRAINING_CURVES, ("training loss", "validation loss"), strict=True):
        title, missing = f"{name} ({metric})", []
        for stage, found in curves.items():
            points = found.get(metric) or []
            if not points:
                missing.append(stage)
                continue
            steps, values = zip(*points, strict=True)
            marker = "o" if len(points) <= 12 else None
            ax.plot(
                steps, values, color=colors[stage], marker=marker, markersize=4, linewidth=1.4, label=stage
            )
        shown = [value for line in ax.get_lines() for value in line.get_ydata()]
        if shown and min(shown) > 0 and max(shown) > 4 * min(shown):  # a first loss far above the rest
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            title += ", log scale"
        if len(missing) == len(curves):
            ax.text(0.5, 0.5, f"no fit logged {metric}", ha="center", va="center", transform=ax.transAxes)
        elif missing:
            names = ", ".join(missing) if len(missing) <= 4 else f"{len(missing)} of {len(curves)} stages"
            title += f"\nnot logged by {names}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (negative log-likelihood per token)")
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    fig.legend(
        handles.values(), handles.keys(), loc="lower center", ncols=min(5, max(1, len(handles))), fontsize=8
    )
    fig.suptitle(
        "Training curves of the pipeline's fits, one line per stage (from their CSV logs)", fontsize=11
    )
    fig.tight_layout(rect=(0, 0.06 * rows / (1 + 0.06 * rows) + 0.04, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
