"""The table of a merge comparison: one row per method, scale, language and metric; CSV, JSON and Markdown."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

MERGE_METHODS = ("adamergex", "adamergex_factor", "arimerge")
FIELDS = ("method", "scale", "language", "metric", "value")


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or "perplexity" in metric


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
        metrics = self.metrics()
        if selection_metric is None:
            metric = next((m for m in metrics if not lower_is_better(m)), metrics[0] if metrics else None)
        else:
            metric = next(
                (m for m in metrics if m == selection_metric or m.endswith("/" + selection_metric)), None
            )
            if metric is None:
                from adamergex_pl.errors import InvalidValueError

                raise InvalidValueError(
                    f"selection_metric={selection_metric!r} is not among the metrics {metrics}"
                )
        sign = -1.0 if lower_is_better(metric) else 1.0
        chosen = {}
        for language in self.languages:
            if language == src_lang:
                continue
            candidates = [
                r for r in self.rows
                if r["language"] == language and r["metric"] == metric and r["method"] in MERGE_METHODS
                and math.isfinite(r["value"])
            ]  # fmt: skip
            if candidates:
                best = max(candidates, key=lambda r: sign * r["value"])
                chosen[language] = (best["method"], best["scale"], metric, best["value"])
        return chosen

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
        blocks = []
        variants = list(dict.fromkeys((r["method"], r["scale"]) for r in self.rows))
        for metric in self.metrics():
            header = f"| {metric} | " + " | ".join(self.languages) + " |"
            lines = [header, "|---" * (len(self.languages) + 1) + "|"]
            for method, scale in variants:
                cells = []
                for language in self.languages:
                    value = next(
                        (r["value"] for r in self.rows
                         if (r["method"], r["scale"], r["language"], r["metric"]) == (method, scale, language, metric)),
                        None,
                    )  # fmt: skip
                    cells.append("" if value is None else f"{value:.4f}")
                label = method if scale is None else f"{method} (t={scale:g})"
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            blocks.append("\n".join(lines))
        overall = [r for r in self.rows if not r["language"]]
        if overall:
            lines = ["| method | metric | value |", "|---|---|---|"]
            for r in overall:
                label = r["method"] if r["scale"] is None else f"{r['method']} (t={r['scale']:g})"
                lines.append(f"| {label} | {r['metric']} | {r['value']:.4f} |")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks) + "\n"

    def write(self) -> None:
        """Write ``results.csv``, ``results.json`` and ``results.md`` (each replaced atomically)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        document = {"task": self.task, "languages": self.languages, "rows": self.rows, "best": self.best}
        _atomic_write(self.directory / "results.csv", self.csv_text())
        _atomic_write(self.directory / "results.json", json.dumps(document, indent=2) + "\n")
        _atomic_write(self.directory / "results.md", self.markdown())


def _atomic_write(path: Path, text: str) -> None:
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(handle, "w") as stream:
        stream.write(text)
    os.replace(tmp, path)
