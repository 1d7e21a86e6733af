"""The results of a merge comparison: tidy rows with intervals, written as CSV, JSON and Markdown.

One row per result (task, reference task, method, scale ``t``, language, metric, split) with ``value``, ``n``,
``ci_low``/``ci_high`` and the paired comparison with ``zero_shot`` (``diff_vs_zero_shot``, ``diff_ci_low``,
``diff_ci_high``, ``p_value``); definitions in :mod:`adamergex_pl.results.statistics`. Cross-language scores
(``consistency_k``, ``ac3_k``) are rows with language ``""``.

``results.json`` holds ``task``, ``reference_task``, ``languages``, ``src_lang``, ``main_metric``,
``statistics`` (the options), ``rows`` and ``best``; each ``best[<lang>].adapter_dir`` is relative to the
folder of that ``results.json``.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adamergex_pl.atomic_files import write_atomic
from adamergex_pl.errors import InvalidValueError, reraise_os_error
from adamergex_pl.merging.methods import merge_method_names, reference_method_names
from adamergex_pl.metrics.item_scores import ItemScores
from adamergex_pl.results.selection import (
    best_overall,
    best_per_language,
    in_split,
    main_metric,
    reported,
    splits,
)
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


# what one evaluation run writes into its results folder (predictions.jsonl and best/ only when asked)
RESULT_FILES = ("results.csv", "results.json", "results.md", "predictions.jsonl", "best")


class MergeResults:
    """Collects ``(method, scale, evaluator key, value, item scores)`` and splits each key into language and metric.

    Args:
        directory: where :meth:`write` puts ``results.csv``, ``results.json`` and ``results.md``.
        languages: the evaluated languages.
        task: the task's name, recorded in every row.
        src_lang: the source language (no difference column in the table).
        statistics: interval and selection-split options (default: 95%, 2000 resamples, seed 0, no split).
        metric: the table's main metric (default: the first recorded that is not a loss).
        reference_task: the reference task's name, recorded in the rows of the reference methods.

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
        reference_task: str | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.languages = list(languages)
        self.task = task
        self.src_lang = src_lang
        self.statistics = statistics or StatisticsOptions()
        self.metric = metric
        self.reference_task = reference_task
        self.results: list[Result] = []
        self.best: dict[str, dict[str, Any]] = {}
        self._rows: list[dict[str, Any]] | None = None

    def claim(self, overwrite: bool = False) -> None:
        """Make :attr:`directory` this run's: a folder holds one evaluation run's results at a time.

        Args:
            overwrite: remove the results of an earlier run there instead of refusing.

        Raises:
            ValueError: the folder holds an earlier run's results and ``overwrite`` is false.
        """
        earlier = [name for name in RESULT_FILES if (self.directory / name).exists()]
        if not earlier:
            return
        if not overwrite:
            raise InvalidValueError(
                f"{self.directory} already holds the results of an evaluation run ({', '.join(earlier)}); "
                "choose another --trainer.default_root_dir (or results_dir), remove that folder, or set "
                "overwrite: true on the MergeModule to replace them"
            )
        try:
            for name in earlier:
                path = self.directory / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
        except OSError as err:
            reraise_os_error(err, "results folder", self.directory)

    def add(
        self, method: str, scale: float | None, key: str, value: float, items: ItemScores | None = None
    ) -> None:
        """Record one evaluated number and, where the evaluator has them, its per-item scores."""
        language, metric = language_and_metric(key, self.languages)
        self.results.append(Result(method, scale, language, metric, float(value), items))
        self._rows = None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The tidy rows (computed once after the last :meth:`add`)."""
        if self._rows is None:
            per_language = {r.metric for r in self.results if r.language}
            kept = [r for r in self.results if r.language or r.metric not in per_language]
            rows = tidy_rows(kept, self.task, self.statistics)
            for row in rows:
                row["reference"] = self.reference_task if row["method"] in reference_method_names() else None
            metrics = list(dict.fromkeys(row["metric"] for row in rows if row["language"]))
            if metrics:  # with a selection split, only each merge method's chosen t is reported on test items
                rows = reported(
                    rows, main_metric(metrics, self.metric, what="selection_metric"), merge_method_names()
                )
            self._rows = rows
        return self._rows

    def metrics(self) -> list[str]:
        return list(dict.fromkeys(row["metric"] for row in self.rows if row["language"]))

    def best_merges(
        self, selection_metric: str | None, src_lang: str
    ) -> dict[str, tuple[str, float, str, float]]:
        """Per target language, the best merge ``(method, t, metric, value)`` (on the selection split if any).

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
        return csv_text(self.rows)

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
            "reference_task": self.reference_task,
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


def language_and_metric(key: str, languages: list[str]) -> tuple[str, str]:
    """An evaluator key's language (``""`` for a score across languages) and metric.

    Example:
        >>> language_and_metric("xnli/es/accuracy", ["en", "es"]), language_and_metric("consistency_2", ["en"])
        (('es', 'xnli/accuracy'), ('', 'consistency_2'))
    """
    parts = key.split("/")
    language = next((p for p in parts if p in languages), "")
    return language, "/".join(p for p in parts if p != language) if language else key


def csv_text(rows: list[dict[str, Any]]) -> str:
    """Tidy rows as ``results.csv`` (the columns of :data:`~adamergex_pl.results.statistics.FIELDS`)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in FIELDS})
    return out.getvalue()
