"""The pipeline's test of the AdaMergeX assumption, wherever an oracle exists.

For each task with target-language training data (``oracle_langs``), :func:`write_diagnosis` runs
:func:`adamergex_pl.merging.diagnose.language_gap_alignment` on ``A(T,src)``, the oracle ``A(T,tgt)`` and the
reference adapters of both languages: per adapted module, the cosine between the task's language gap and the
reference task's (1: the assumption holds up to the scale ``t``; 0: unrelated). It writes
``<run_dir>/diagnosis/<task>_<lang>.json`` and ``<run_dir>/plots/diagnosis.png`` (the mean cosine per layer).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from adamergex_pl.atomic_files import write_atomic

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def diagnose_task(spec, name: str, lang: str) -> dict:
    """The alignment report of one task and one oracle language (see the module docstring)."""
    from adamergex_pl.merging.diagnose import language_gap_alignment
    from adamergex_pl.pipeline.stages import snapshots

    task = spec.tasks[name]
    return language_gap_alignment(
        snapshots(spec, f"task_{name}_{task.src_lang}"),
        snapshots(spec, f"task_{name}_{lang}"),
        snapshots(spec, f"reference_{task.src_lang}"),
        snapshots(spec, f"reference_{lang}"),
    )


def per_layer(report: dict) -> dict[int, float]:
    """The mean cosine of each layer's modules (modules outside the numbered layers and zero gaps left out)."""
    layers: dict[int, list[float]] = {}
    for module, cosine in report["modules"].items():
        match = _LAYER.search(module)
        if match and cosine is not None:
            layers.setdefault(int(match.group(1)), []).append(cosine)
    return {layer: sum(values) / len(values) for layer, values in sorted(layers.items())}


def write_diagnosis(spec, run_dir: Path) -> list[Path]:
    """Diagnose every (task, oracle language) of ``spec``; print one line each; return the files written."""
    pairs = [(name, lang) for name, task in spec.tasks.items() for lang in task.oracle_langs]
    if not pairs:
        return []
    written, curves = [], {}
    for name, lang in pairs:
        report = diagnose_task(spec, name, lang)
        path = write_atomic(
            run_dir / "diagnosis" / f"{name}_{lang}.json", json.dumps(report, indent=2) + "\n"
        )
        written.append(path)
        curves[f"{name} {spec.tasks[name].src_lang}->{lang}"] = per_layer(report)
        mean = "n/a" if report["mean"] is None else f"{report['mean']:+.3f}"
        print(f"[pipeline] language-gap alignment {name} {lang}: mean cosine {mean} over modules -> {path}")
    written.append(_plot(curves, run_dir / "plots" / "diagnosis.png"))
    return written


def _plot(curves: dict[str, dict[int, float]], out: Path) -> Path:
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
