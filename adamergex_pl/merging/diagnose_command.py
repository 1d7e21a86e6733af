"""``adamergex diagnose``: does the AdaMergeX assumption hold for these adapters? (see :mod:`.diagnose`)

    adamergex diagnose --task-src T_en --task-tgt T_es --ref-src R_en --ref-tgt R_es [--json]

prints, per adapted module, the cosine between the task's language gap ``ΔW(T,tgt) − ΔW(T,src)`` and the
reference task's ``ΔW(R,tgt) − ΔW(R,src)`` and both norms, then the mean cosine; ``--json`` prints
``{"modules": {<module>: cosine, ...}, "mean": <mean cosine>, "norms": ..., "adapter_type": ...}`` instead.
``--task-tgt`` is a task adapter trained in the target language (the oracle): the merge itself never needs
one, the diagnosis does. Bad input is one ``adamergex diagnose: error:`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys

PROG = "adamergex diagnose"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``adamergex diagnose``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Cosine per module between the task's language gap A(T,tgt) ⊖ A(T,src) and the reference "
        "task's A(R,tgt) ⊖ A(R,src): the assumption AdaMergeX rests on.",
    )
    for flag, what in (
        ("--task-src", "task adapter, source language"),
        ("--task-tgt", "task adapter, target language (an oracle)"),
        ("--ref-src", "reference-task adapter, source language"),
        ("--ref-tgt", "reference-task adapter, target language"),
    ):
        parser.add_argument(flag, required=True, metavar="DIR", help=what)
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``adamergex diagnose``; return the exit code (0 printed, 2 refused or bad arguments)."""
    from adamergex_pl.merging.diagnose import language_gap_alignment

    parser = build_parser()
    try:
        args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as stop:
        return int(stop.code or 0)
    try:
        report = language_gap_alignment(args.task_src, args.task_tgt, args.ref_src, args.ref_tgt)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
        return 0
    from adamergex_pl.results.tables import text_table

    body = [
        [
            module,
            "n/a" if cosine is None else f"{cosine:+.4f}",
            *(f"{v:.4g}" for v in report["norms"][module].values()),
        ]
        for module, cosine in report["modules"].items()
    ]
    print(text_table(["module", "cosine", *report["norms"][next(iter(report["modules"]))]], body))
    mean = report["mean"]
    print(f"mean cosine over modules: {'n/a' if mean is None else f'{mean:+.4f}'} ({report['adapter_type']})")
    return 0
