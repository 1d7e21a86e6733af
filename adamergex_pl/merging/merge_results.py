"""The table of a merge comparison: one row per method, scale, language and metric; CSV, JSON and Markdown."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from adamergex_pl.merging.methods import merge_method_names
from adamergex_pl.results.files import write_text_atomic
from adamergex_pl.results.selection import best_overall, best_per_language, main_metric
from adamergex_pl.results.tables import format_value, markdown_table

FIELDS = ("method", "scale", "language", "metric", "value")


class MergeResults:
    """Collects ``(method, scale, evaluator key, value)`` and splits each key into language and metric.

    An evaluator key such as ``xnli/es/accuracy`` becomes language ``es`` and metric ``xnli/accuracy``; a key
    with no language segment (a cross-language score such as ``consistency_3``) has language ``""``.

    Args:
        directory: where :meth:`write` puts ``results.csv``, ``results.json`` and ``results.md``.
        languages: the evaluated languages.
        task: the task's name, recorded in ``results.json``.

    Example:
        >>> results = MergeResults("out", ["en", "es"], "xnli")
        >>> results.add("adamergex", 0.5, "xnli/es/accuracy", 0.61)
        >>> results.rows[0]["language"], results.rows[0]["metric"]
        ('es', 'xnli/accuracy')
    """

    def __init__(self, directory: str | Path, languages: list[str], task: str = "task") -> None:
        self.directory = Path(directory)
        self.languages = list(languages)
        self.task = task
        self.rows: list[dict[str, Any]] = []
        self.best: dict[str, dict[str, Any]] = {}

    def add(self, method: str, scale: float | None, key: str, value: float) -> None:
        parts = key.split("/")
        language = next((p for p in parts if p in self.languages), "")
        metric = "/".join(p for p in parts if p != language) if language else key
        self.rows.append(
            {"method": method, "scale": scale, "language": language, "metric": metric, "value": value}
        )

    def metrics(self) -> list[str]:
        return list(dict.fromkeys(row["metric"] for row in self.rows if row["language"]))

    def best_merges(
        self, selection_metric: str | None, src_lang: str
    ) -> dict[str, tuple[str, float, str, float]]:
        """Per target language, the merge variant with the best ``selection_metric``: ``(method, t, metric, value)``.

        Raises:
            ValueError: ``selection_metric`` names no recorded metric.
        """
        metric = main_metric(self.metrics(), selection_metric, what="selection_metric")
        targets = [language for language in self.languages if language != src_lang]
        best = best_per_language(self.rows, metric, targets, merge_method_names())
        return {
            language: (row["method"], row["scale"], metric, row["value"])
            for language, row in best_overall(best, metric).items()
        }

    def record_best(self, chosen: dict[str, tuple[str, float, str, float]]) -> None:
        self.best = {
            lang: {"method": m, "scale": s, "metric": metric, "value": v, "adapter_dir": f"best/{lang}"}
            for lang, (m, s, metric, v) in chosen.items()
        }
        self.write()

    # ------------------------------------------------------------------ output
    def csv_text(self) -> str:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for row in self.rows:
            writer.writerow({**row, "scale": "" if row["scale"] is None else row["scale"]})
        return out.getvalue()

    def markdown(self) -> str:
        """One table per metric: a row per method and scale, a column per language."""
        values = {(r["method"], r["scale"], r["language"], r["metric"]): r["value"] for r in self.rows}
        variants = list(dict.fromkeys((r["method"], r["scale"]) for r in self.rows))
        blocks = []
        for metric in self.metrics():
            body = [
                [_label(method, scale)]
                + [format_value(values.get((method, scale, language, metric))) for language in self.languages]
                for method, scale in variants
            ]
            blocks.append(markdown_table([metric, *self.languages], body))
        overall = [r for r in self.rows if not r["language"]]
        if overall:
            body = [[_label(r["method"], r["scale"]), r["metric"], format_value(r["value"])] for r in overall]
            blocks.append(markdown_table(["method", "metric", "value"], body))
        return "\n\n".join(blocks) + "\n"

    def write(self) -> None:
        """Write ``results.csv``, ``results.json`` and ``results.md`` (each replaced atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        document = {"task": self.task, "languages": self.languages, "rows": self.rows, "best": self.best}
        write_text_atomic(self.directory / "results.csv", self.csv_text())
        write_text_atomic(self.directory / "results.json", json.dumps(document, indent=2) + "\n")
        write_text_atomic(self.directory / "results.md", self.markdown())


def _label(method: str, scale: float | None) -> str:
    return method if scale is None else f"{method} (t={scale:g})"
