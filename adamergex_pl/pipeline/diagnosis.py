"""The pipeline's test of the AdaMergeX assumption, wherever an oracle exists, and whether it predicts the gain.

For each task with target-language training data (``oracle_langs``) and each reference task, :func:`diagnose`
runs :func:`adamergex_pl.merging.diagnose.language_gap_alignment` (per module, the cosine between the task's
and the reference task's language gaps; 1: the assumption holds) and writes
``<run_dir>/diagnosis/<task>_<lang>[_<ref>].json`` and ``<run_dir>/plots/diagnosis.png``. :func:`gain_rows`
puts the mean cosine next to each reference method's paired gain over ``zero_shot`` at its best ``t``;
:func:`gain_table` and :func:`plot_gain` show them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from adamergex_pl.atomic_files import write_atomic
from adamergex_pl.merging.methods import reference_method_names, swept_method_names
from adamergex_pl.results.selection import best_per_language, by_reference, in_split, splits
from adamergex_pl.results.statistics import BASELINE, finite
from adamergex_pl.results.tables import format_difference, markdown_table

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
GAIN_PLOT = "gain_vs_cosine.png"


def diagnose_task(spec, name: str, reference: str, lang: str) -> dict:
    """The alignment report of one task, one reference task and one oracle language (see the module)."""
    from adamergex_pl.merging.diagnose import language_gap_alignment
    from adamergex_pl.pipeline.stages import reference_stage, snapshots

    task = spec.tasks[name]
    return language_gap_alignment(
        snapshots(spec, f"task_{name}_{task.src_lang}"),
        snapshots(spec, f"task_{name}_{lang}"),
        snapshots(spec, reference_stage(spec, reference, task.src_lang)),
        snapshots(spec, reference_stage(spec, reference, lang)),
    )


def per_layer(report: dict) -> dict[int, float]:
    """The mean cosine of each layer's modules (modules outside the numbered layers and zero gaps left out)."""
    layers: dict[int, list[float]] = {}
    for module, cosine in report["modules"].items():
        match = _LAYER.search(module)
        if match and cosine is not None:
            layers.setdefault(int(match.group(1)), []).append(cosine)
    return {layer: sum(values) / len(values) for layer, values in sorted(layers.items())}


def diagnose(spec, run_dir: Path) -> dict[tuple[str, str, str], float | None]:
    """Diagnose every (task, reference task, oracle language) of ``spec``; print one line each.

    Returns:
        ``{(task, reference, language): mean cosine}`` (``None`` where no module has a defined cosine).
    """
    from adamergex_pl.pipeline.stages import per_reference

    triples = [
        (name, ref, lang)
        for name, task in spec.tasks.items()
        for ref in spec.references
        for lang in task.oracle_langs
    ]
    means, curves = {}, {}
    for name, ref, lang in triples:
        report = diagnose_task(spec, name, ref, lang)
        path = write_atomic(
            run_dir / "diagnosis" / f"{per_reference(spec, f'{name}_{lang}', ref)}.json",
            json.dumps({"task": name, "reference": ref, **report}, indent=2) + "\n",
        )
        means[(name, ref, lang)] = report["mean"]
        curves[f"{name} {spec.tasks[name].src_lang}->{lang}, reference {ref}"] = per_layer(report)
        mean = "n/a" if report["mean"] is None else f"{report['mean']:+.3f}"
        print(
            f"[pipeline] language-gap alignment {name} {lang} (reference {ref}): mean cosine {mean} -> {path}"
        )
    if curves:
        _plot_layers(curves, run_dir / "plots" / "diagnosis.png")
    return means


def gain_rows(
    rows: list[dict[str, Any]], metric: str, cosines: dict[tuple[str, str], float | None]
) -> list[dict]:
    """One row per reference task, language with a cosine, and reference method at its best ``t``: cosine and gain.

    Args:
        rows: the task's tidy rows, every reference task's.
        metric: the main metric.
        cosines: ``{(reference, language): mean cosine}`` of this task.

    Returns:
        Rows ``{reference, language, gap_cosine, method, scale, chosen_on, n, value, diff_vs_zero_shot,
        diff_ci_low, diff_ci_high, p_value}``.
    """
    chosen_on, reported_on = splits(rows)
    found = []
    for ref, group in by_reference(rows).items():
        languages = [lang for (r, lang) in cosines if r == ref]
        best = best_per_language(in_split(group, chosen_on), metric, languages, swept_method_names())
        reported = {
            (r["method"], r["scale"], r["language"]): r
            for r in in_split(group, reported_on)
            if r["metric"] == metric
        }
        for method in dict.fromkeys(r["method"] for r in group if r["method"] in reference_method_names()):
            for lang in languages:
                scale = best[(method, lang)]["scale"] if (method, lang) in best else None
                row = reported.get((method, scale, lang))
                if row is None:
                    continue
                found.append(
                    {
                        "reference": ref,
                        "language": lang,
                        "gap_cosine": cosines[(ref, lang)],
                        "method": method,
                        "scale": scale,
                        "chosen_on": chosen_on if method in swept_method_names() else None,
                        **{key: row.get(key) for key in ("n", "value", f"diff_vs_{BASELINE}")},
                        **{key: row.get(key) for key in ("diff_ci_low", "diff_ci_high", "p_value")},
                    }
                )
    return found


def gain_table(found: list[dict]) -> str:
    """Markdown: the mean cosine of each reference task and language beside each method's gain over zero-shot."""
    body = [
        [
            row["reference"],
            row["language"],
            "n/a" if row["gap_cosine"] is None else f"{row['gap_cosine']:+.3f}",
            row["method"],
            "" if row["scale"] is None else f"{row['scale']:g}",
            format_difference(
                row[f"diff_vs_{BASELINE}"], row["diff_ci_low"], row["diff_ci_high"], row["p_value"]
            )
            if finite(row[f"diff_vs_{BASELINE}"])
            else "",
        ]
        for row in found
    ]
    where = (
        "held-out selection items"
        if any(r["chosen_on"] == "selection" for r in found)
        else "the reported items"
    )
    return (
        "**Does the diagnostic predict the gain?** Mean cosine between the task's and the reference task's "
        f"language gaps, beside each method's paired gain over {BASELINE} [95% interval], p (t or K chosen on "
        f"{where})\n\n"
        + markdown_table(["reference", "language", "gap cosine", "method", "t", f"Δ vs {BASELINE}"], body)
    )


def plot_gain(found: list[dict], metric: str, out: Path, oracle: dict[str, float] | None = None) -> Path:
    """Gain over zero-shot against the mean cosine: one point per reference task × method × language, with its
    interval; ``oracle`` (``{language: the oracle's gain}``) as dashed lines, the gain a merge could reach."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in found if r["gap_cosine"] is not None and finite(r[f"diff_vs_{BASELINE}"])]
    methods = list(dict.fromkeys(r["method"] for r in shown))
    references = list(dict.fromkeys(r["reference"] for r in shown))
    markers = ("o", "s", "^", "D", "v", "P")
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for row in shown:  # the methods of one reference share its cosine: side by side, a little apart
        i, j = methods.index(row["method"]), references.index(row["reference"])
        x = row["gap_cosine"] + (i - (len(methods) - 1) / 2) * 0.008
        diff = row[f"diff_vs_{BASELINE}"]
        low, high = diff - row["diff_ci_low"], row["diff_ci_high"] - diff
        ax.errorbar(
            x, diff, yerr=[[low], [high]], fmt=markers[j % len(markers)], color=f"C{i}", capsize=3, lw=1
        )
    for i, method in enumerate(methods):
        ax.plot([], [], "o", color=f"C{i}", label=method)
    for j, ref in enumerate(references):
        ax.plot([], [], markers[j % len(markers)], color="grey", label=f"reference: {ref}")
    for k, (lang, gain) in enumerate((oracle or {}).items()):
        ax.axhline(
            gain, color="black", linewidth=0.9, linestyle=("--", "-.", ":")[k % 3], label=f"oracle ({lang})"
        )
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.axvline(0.0, color="grey", linewidth=0.8, linestyle=":")
    cosines = [r["gap_cosine"] for r in shown] or [0.0]
    ax.set_xlim(
        min(-0.1, min(cosines) - 0.05), max(1.05, max(cosines) + 0.05)
    )  # 0: unrelated, 1: the assumption
    ax.set_xlabel("mean cosine of the task's and the reference task's language gaps")
    ax.set_ylabel(f"gain over {BASELINE}\n({metric}, paired difference)")
    ax.set_title(
        "Does the diagnostic predict the gain? One point per reference × method × language\n"
        "error bars: 95% paired bootstrap interval over the reported items",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _plot_layers(curves: dict[str, dict[int, float]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for label, layers in curves.items():
        ax.plot(list(layers), list(layers.values()), marker="o", label=label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("layer")
    ax.set_ylabel("cosine of the two language gaps")
    ax.set_title("Does the task's language gap follow the reference task's? (1 = yes)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
