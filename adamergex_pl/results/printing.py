"""What an evaluation prints at its end: one table by language on stdout, instead of Lightning's per-dataloader
tables (which repeat a per-language value in every column), so that ``adamergex validate ... > out.txt`` keeps it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from adamergex_pl.atomic_files import write_jsonl_atomic
from adamergex_pl.results.tables import format_results_table

__all__ = ["claim_results_printing", "finish_evaluation", "fit_summary", "print_report"]


def claim_results_printing(trainer) -> bool:
    """This ``validate``/``test`` run's ``verbose`` on rank zero (False in ``fit``/``predict``); turns Lightning's off.

    Call it from ``on_validation_end``/``on_test_end``, before Lightning prints.
    """
    loops = {"validate": trainer.validate_loop, "test": trainer.test_loop}
    loop = loops.get(str(getattr(trainer.state.fn, "value", trainer.state.fn)))
    if loop is None or trainer.sanity_checking:
        return False
    verbose = bool(loop.verbose)
    loop.verbose = False  # valid for this run: Trainer.validate/test set it again from their argument
    return verbose and trainer.is_global_zero


def print_report(text: str) -> None:
    """Print a report (a table and the paths of the files) on stdout, after a blank line, flushed."""
    print(f"\n{text.rstrip()}", file=sys.stdout, flush=True)


def finish_evaluation(trainer, prefix: str, predictions: list[dict[str, Any]]) -> None:
    """Write ``<default_root_dir>/predictions.jsonl`` and, when verbose, print the ``prefix`` metrics' table.

    Call it on every rank from ``on_validation_end``/``on_test_end``; ``predictions`` may be empty.
    """
    show = claim_results_printing(trainer)
    if not trainer.is_global_zero or trainer.sanity_checking:
        return
    lines = []
    if predictions:
        path = write_jsonl_atomic(Path(trainer.default_root_dir) / "predictions.jsonl", predictions)
        lines.append(f"Predictions: {path}")
    table = format_results_table(trainer.callback_metrics, prefix)
    if show and table:
        title = "Validation" if prefix == "val" else "Test"
        print_report("\n".join([f"{title} results by language", table, *lines]))


def fit_summary(trainer, last_validation: dict[str, float], epoch: int, step: int) -> None:
    """At the end of ``fit``, print the last validation's metrics (at 0-based ``epoch``, ``step``) by language."""
    table = format_results_table(last_validation, "val")
    if table and trainer.is_global_zero:
        print_report(
            f"Validation results by language (last validation of fit; epoch {epoch}, step {step})\n{table}"
        )
