"""What an evaluation prints at its end: one table on stdout, instead of Lightning's.

Lightning's ``validate``/``test`` print every logged value in a table of their own when ``verbose`` is true,
once per dataloader (a per-language value logged without a dataloader suffix is repeated in every column),
on the logging stream. adamergex's modules print their own table instead, on stdout so that
``adamergex validate ... > out.txt`` keeps it: :func:`claim_results_printing` reads ``verbose`` (the user's
choice, ``--verbose false`` or ``verbose: false`` in a config) and switches Lightning's table off.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from adamergex_pl.atomic_files import write_jsonl_atomic
from adamergex_pl.results.tables import format_results_table

__all__ = ["claim_results_printing", "finish_evaluation", "fit_summary", "print_report"]


def claim_results_printing(trainer) -> bool:
    """Whether this ``validate``/``test`` run should print its results table; Lightning's own is switched off.

    Call it from ``on_validation_end``/``on_test_end`` (Lightning prints its table after those hooks). During
    ``fit`` and ``predict`` it returns False and changes nothing.

    Args:
        trainer: the running ``Trainer``.

    Returns:
        The run's ``verbose``, on the global-zero rank only.
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
    """The end of a validation or test run of a module: write its predictions and print its table.

    Writes ``<default_root_dir>/predictions.jsonl`` when there are predictions (every validation of a fit
    replaces it; not in the sanity check), and in a verbose ``validate``/``test`` prints the logged metrics
    under ``prefix`` as a table by language (:func:`~adamergex_pl.results.tables.format_results_table`) with
    the predictions' path. Call it on every rank from ``on_validation_end``/``on_test_end``.

    Args:
        trainer: the running ``Trainer``.
        prefix: ``val`` or ``test``.
        predictions: the gathered prediction records (may be empty).
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
    """At the end of ``fit``: the last validation's metrics as a table by language (rank zero; nothing when
    the fit never validated).

    Args:
        trainer: the running ``Trainer``.
        last_validation: ``{"val/<...>": value}`` of the last validation of the fit.
        epoch: the (0-based) epoch that validation ran in.
        step: the global step it ran at.
    """
    table = format_results_table(last_validation, "val")
    if table and trainer.is_global_zero:
        print_report(
            f"Validation results by language (last validation of fit; epoch {epoch}, step {step})\n{table}"
        )
