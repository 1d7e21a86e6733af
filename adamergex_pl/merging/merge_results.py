"""The results of a merge comparison: tidy rows with intervals, written as CSV, JSON and Markdown.

One row per result (task, method, scale ``t``, language, metric, split) with ``value``, ``n`` (items),
``ci_low``/``ci_high`` (95% percentile bootstrap over items) and the paired comparison with ``zero_shot`` on
the same items (``diff_vs_zero_shot``, ``diff_ci_low``, ``diff_ci_high``, ``p_value``); see
:mod:`adamergex_pl.results.statistics` for the definitions, the selection split and what a token-weighted loss
gets. Summaries over languages that the per-language rows already hold (a task's macro average, the pooled
``loss``) are logged but not rows; cross-language scores (``consistency_k``, ``ac3_k``) are rows with language
``""``.

``results.json`` holds ``task``, ``languages``, ``src_lang``, ``main_metric``, ``statistics`` (the options),
``rows`` and ``best``; each ``best[<lang>].adapter_dir`` is relative to the folder of that ``results.json``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adamergex_pl.atomic_files import write_atomic
from adamergex_pl.merging.methods import merge_method_names
from adamergex_pl.metrics.item_scores import ItemScores
from adamergex_pl.results.selection import best_overall, best_per_language, in_split, main_metric, splits
from adamergex_pl.results.statistics import FIELDS, Result, StatisticsOptions, tidy_rows
from adamergex_pl.results.tables import comparison_table


@dataclass(frozen=True)
class Variant:
    """One column of the comparison: a method at a scale (``None`` for methods without one)."""

    method: str
    scale: float | None

    @property
    def label(self) -> str:
        """How the variant appears in metric names: ``adamergex/0.5``, ``zero_shot/none``."""
        return f"{self.method}/{'none' if self.scale is None else f'{self.scale:g}'}"

    @property
    def key(self) -> str:
        """A module and adapter name (no dots or slashes)."""
        return self.label.replace("/", "__").replace(".", "_").replace("-", "m")


class MergeResults:
    """Collects ``(method, scale, evaluator key, value, item scores)`` and splits each key into language and metric.

    An evaluator key such as ``xnli/es/accuracy`` becomes language ``es`` and metric ``xnli/accuracy``; a key
    with no language segment (a cross-language score such as ``consistency_3``) has language ``""``.

    Args:
        directory: where :meth:`write` puts ``results.csv``, ``results.json`` and ``results.md``.
        languages: the evaluated languages.
        task: the task's name, recorded in every row.
        src_lang: the source language (no difference column in the table).
        statistics: interval and selection-split options (default: 95%, 2000 resamples, seed 0, no split).
        metric: the main metric of the table (its full name or last part; default: the first recorded metric
            that is not a loss).

    Example:
        >>> results = MergeResults("out", ["en", "es"], "xnli")
        >>> results.add("adamergex", 0.5, "xnli/es/accuracy", 0.61)
        >>> results.rows[0]["language"], results.rows[0]["metric"], results.rows[0]["n"]
        ('es', 'xnli/accuracy', None)
    """

    def __init__(
        self,
        directory: str | Path,
        languages: list[str],
        task: str = "task",
        src_lang: str | None = None,
        statistics: StatisticsOptions | None = None,
        metric: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.languages = list(languages)
        self.task = task
        self.src_lang = src_lang
        self.statistics = statistics or StatisticsOptions()
        self.metric = metric
        self.results: list[Result] = []
        self.best: dict[str, dict[str, Any]] = {}
        self._rows: list[dict[str, Any]] | None = None

    def add(
        self, method: str, scale: float | None, key: str, value: float, items: ItemScores | None = None
    ) -> None:
        """Record one evaluated number and, where the evaluator has them, its per-item scores."""
        parts = key.split("/")
        language = next((p for p in parts if p in self.languages), "")
        metric = "/".join(p for p in parts if p != language) if language else key
        self.results.append(Result(method, scale, language, metric, float(value), items))
        self._rows = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The tidy rows (computed once after the last :meth:`add`)."""
        if self._rows is None:
            per_language = {r.metric for r in self.results if r.language}
            kept = [r for r in self.results if r.language or r.metric not in per_language]
            self._rows = tidy_rows(kept, self.task, self.statistics)
        return self._rows

    def metrics(self) -> list[str]:
        return list(dict.fromkeys(row["metric"] for row in self.rows if row["language"]))

    def best_merges(
        self, selection_metric: str | None, src_lang: str
    ) -> dict[str, tuple[str, float, str, float]]:
        """Per target language, the merge variant with the best ``selection_metric``: ``(method, t, metric, value)``.

        Chosen on the ``selection`` rows when there is a selection split, else on all items.

        Raises:
            ValueError: ``selection_metric`` names no recorded metric.
        """
        metric = main_metric(self.metrics(), selection_metric, what="selection_metric")
        targets = [language for language in self.languages if language != src_lang]
        rows = in_split(self.rows, splits(self.rows)[0])
        best = best_per_language(rows, metric, targets, merge_method_names())
        return {
            language: (row["method"], row["scale"], metric, row["value"])
            for language, row in best_overall(best, metric).items()
        }

    def save_best(
        self, selection_metric: str | None, src_lang: str, build: Callable[[Variant, str], Any]
    ) -> list[str]:
        """Write the best merge per target language to ``<directory>/best/<lang>/`` and record it.

        Args:
            selection_metric: the metric that picks the best merge (see :meth:`best_merges`).
            src_lang: the source language (not a target).
            build: ``(variant, language) -> MergeResult``, the merged adapter of a variant.

        Returns:
            One line per written adapter.
        """
        from adamergex_pl.merging.output import write_merged

        chosen = self.best_merges(selection_metric, src_lang=src_lang)
        lines = []
        for language, (method, scale, metric, value) in chosen.items():
            variant = Variant(method, scale)
            out = self.directory / "best" / language
            write_merged(build(variant, language), out, overwrite=True)
            lines.append(f"Best merge for {language}: {variant.label} ({metric}={value:.4g}) -> {out}")
        self.record_best(chosen)
        return lines

    def record_best(self, chosen: dict[str, tuple[str, float, str, float]]) -> None:
        """Record the written best adapters (``adapter_dir`` relative to this ``results.json``'s folder)."""
        chosen_on = splits(self.rows)[0]
        self.best = {
            lang: {
                "method": m, "scale": s, "metric": metric, "value": v, "chosen_on": chosen_on,
                "adapter_dir": f"best/{lang}",
            }
            for lang, (m, s, metric, v) in chosen.items()
        }  # fmt: skip
        self.write()

    # ------------------------------------------------------------------ output
    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
        return out.getvalue()

    def table(self, metric: str | None = None) -> str:
        """The comparison table of ``metric`` (default: the main metric, the first that is not a loss)."""
        chosen = main_metric(self.metrics(), metric or self.metric)
        return comparison_table(
            self.rows,
            chosen,
            self.languages,
            self.src_lang,
            merge_method_names(),
            task=self.task,
            confidence=self.statistics.confidence,
        )

    def markdown(self, metric: str | None = None) -> str:
        """``results.md``: the main metric's table first, then one table per other metric."""
        first = main_metric(self.metrics(), metric or self.metric)
        return "\n\n".join(self.table(m) for m in [first, *(m for m in self.metrics() if m != first)]) + "\n"

    def document(self, metric: str | None = None) -> dict[str, Any]:
        """What ``results.json`` holds."""
        options = self.statistics
        return {
            "task": self.task,
            "languages": self.languages,
            "src_lang": self.src_lang,
            "main_metric": main_metric(self.metrics(), metric or self.metric) if self.metrics() else None,
            "statistics": {
                "interval": "percentile bootstrap over items",
                "confidence": options.confidence,
                "resamples": options.resamples,
                "seed": options.seed,
                "selection_fraction": options.selection_fraction,
                "t_chosen_on": splits(self.rows)[0],
            },
            "rows": self.rows,
            "best": self.best,
        }

    def write(self, metric: str | None = None) -> None:
        """Write ``results.csv``, ``results.json`` and ``results.md`` (each replaced atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.directory / "results.csv", self.csv_text())
        write_atomic(self.directory / "results.json", json.dumps(self.document(metric), indent=2) + "\n")
        write_atomic(self.directory / "results.md", self.markdown(metric))
