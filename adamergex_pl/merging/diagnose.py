"""Does the AdaMergeX assumption hold? The alignment of a task's language gap with the reference task's.

AdaMergeX (Zhao et al., arXiv 2402.18913) assumes ``A(T,tgt) ⊖ A(T,src) ≈ A(R,tgt) ⊖ A(R,src)``. With an
oracle task adapter in the target language, this measures per module how well that holds:

    G_T = ΔW(T,tgt) − ΔW(T,src),   G_R = ΔW(R,tgt) − ΔW(R,src),   cos = ⟨G_T, G_R⟩_F / (‖G_T‖_F ‖G_R‖_F),

with ``ΔW = s·B·A`` (LoRA; a missing module contributes 0); for (IA)³ the gaps are of log-vectors,
``g = log l_tgt − log l_src``. ``cos = 1`` means the assumption holds (best scale ``t = ‖G_T‖ / ‖G_R‖``).

LoRA gaps ``G = B_c A_c`` are never formed densely: thin QR gives ``G = Q_B C Q_Aᵀ`` with ``C = R_B R_Aᵀ``, so
``‖G‖_F = ‖C‖_F`` and ``⟨G_1, G_2⟩_F = Σ (C_1 ⊙ (Q_B1ᵀQ_B2) C_2 (Q_A2ᵀQ_A1))``, in ``O((out + in)·r²)`` float64.
A gap with ``‖G‖_F ≤ 1e-9·(‖ΔW_tgt‖_F + ‖ΔW_src‖_F)`` is zero: its cosine is ``None`` and left out of the mean.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from typing import Any, Literal

import torch

from adamergex_pl.merging.adapters import AdapterWeights, checked_lora_factors
from adamergex_pl.merging.checks import check_mergeable
from adamergex_pl.merging.ia3 import checked_log
from adamergex_pl.merging.lora import concat_factors
from adamergex_pl.merging.merge import AdapterInput, _as_adapter, _union

ZERO_GAP = 1e-9  # a gap this small relative to its two updates is zero (the cosine is undefined)
_PAIRS = {"task_gap": ("task_tgt", "task_src"), "reference_gap": ("ref_tgt", "ref_src")}


def language_gap_alignment(
    task_src: AdapterInput, task_tgt: AdapterInput, ref_src: AdapterInput, ref_tgt: AdapterInput
) -> dict[str, Any]:
    """Per module, the cosine between ``A(T,tgt) ⊖ A(T,src)`` and ``A(R,tgt) ⊖ A(R,src)``, and their norms.

    ``task_tgt`` is the oracle AdaMergeX replaces. Returns, JSON-serialisable, ``{"modules": {module: cosine
    or None}, "norms": {module: {"task_gap": ‖G_T‖, "reference_gap": ‖G_R‖}}, "mean": mean cosine or None,
    "adapter_type": "lora" or "ia3"}``.

    Raises:
        ValueError: Unmergeable inputs (:func:`check_mergeable`), a non-finite tensor, or an (IA)³ entry ``≤ 0``.
    """
    named = {
        "task_src": _as_adapter(task_src, "task_src"),
        "task_tgt": _as_adapter(task_tgt, "task_tgt"),
        "ref_src": _as_adapter(ref_src, "ref_src"),
        "ref_tgt": _as_adapter(ref_tgt, "ref_tgt"),
    }
    check_mergeable(named)
    adapter_type = named["task_src"].adapter_type
    gap_of = _lora_gap if adapter_type == "lora" else _ia3_gap
    cosines: dict[str, float | None] = {}
    norms: dict[str, dict[str, float]] = {}
    for module in _union(named):
        task, reference = (gap_of(named, *_PAIRS[key], module) for key in ("task_gap", "reference_gap"))
        norms[module] = {"task_gap": task.norm, "reference_gap": reference.norm}
        if task.is_zero or reference.is_zero:
            cosines[module] = None
        else:
            cosine = task.inner(reference) / (task.norm * reference.norm)
            cosines[module] = min(1.0, max(-1.0, cosine))
    defined = [c for c in cosines.values() if c is not None]
    return {
        "modules": cosines,
        "norms": norms,
        "mean": sum(defined) / len(defined) if defined else None,
        "adapter_type": adapter_type,
    }


class _LowRankGap:
    """``G = Q_B C Q_Aᵀ`` (LoRA) from the factors of ``B_c A_c``; no factors (``None``) is the zero gap."""

    def __init__(self, lora_A: torch.Tensor | None, lora_B: torch.Tensor | None, size: float) -> None:
        if lora_A is None:
            self.q_a = self.q_b = self.core = None
            self.norm = 0.0
        else:
            self.q_b, r_b = torch.linalg.qr(lora_B)
            self.q_a, r_a = torch.linalg.qr(lora_A.T)
            self.core = r_b @ r_a.T
            self.norm = float(torch.linalg.matrix_norm(self.core))
        self.is_zero = self.norm <= ZERO_GAP * size

    def inner(self, other: _LowRankGap) -> float:
        moved = (self.q_b.T @ other.q_b) @ other.core @ (other.q_a.T @ self.q_a)
        return float((self.core * moved).sum())


class _VectorGap:
    """``g = log l_tgt − log l_src`` ((IA)³)."""

    def __init__(self, gap: torch.Tensor, size: float) -> None:
        self.gap = gap
        self.norm = float(gap.norm())
        self.is_zero = self.norm <= ZERO_GAP * size

    def inner(self, other: _VectorGap) -> float:
        return float((self.gap * other.gap).sum())


def _lora_gap(named: Mapping[str, AdapterWeights], tgt: str, src: str, module: str) -> _LowRankGap:
    factors, coefficients, size = [], [], 0.0
    for role, sign in ((tgt, 1.0), (src, -1.0)):
        adapter = named[role]
        if module not in adapter.tensors:
            continue
        lora_A, lora_B, scaling = checked_lora_factors(adapter, module, role)
        factors.append((lora_A, lora_B))
        coefficients.append(sign * scaling)
        size += abs(scaling) * _product_norm(lora_A.double(), lora_B.double())
    if not factors:
        return _LowRankGap(None, None, 0.0)
    lora_A, lora_B = concat_factors(factors, coefficients, torch.float64)
    return _LowRankGap(lora_A, lora_B, size)


def _product_norm(lora_A: torch.Tensor, lora_B: torch.Tensor) -> float:
    """``‖B A‖_F = sqrt(trace((BᵀB)(AAᵀ)))`` without forming ``B A``."""
    return math.sqrt(max(0.0, float(((lora_B.T @ lora_B) * (lora_A @ lora_A.T)).sum())))


def _ia3_gap(named: Mapping[str, AdapterWeights], tgt: str, src: str, module: str) -> _VectorGap:
    logs = []
    for role in (tgt, src):
        adapter = named[role]
        if module not in adapter.tensors:
            logs.append(None)
            continue
        what = f"{role} ({adapter.label}) (IA)³ module {module!r}"
        purpose = "the gap of (IA)³ adapters is measured on log-vectors"
        logs.append(checked_log(adapter.tensors[module]["ia3_l"], what, purpose))
    shape = next(a.tensors[module]["ia3_l"].shape for a in named.values() if module in a.tensors)
    l_tgt, l_src = (v if v is not None else torch.zeros(shape, dtype=torch.float64) for v in logs)
    size = float(l_tgt.norm()) + float(l_src.norm())
    return _VectorGap(l_tgt - l_src, size)


def diagnose(
    task_src: str, task_tgt: str, ref_src: str, ref_tgt: str, format: Literal["table", "json"] = "table"
) -> int:
    """Cosine per module between the task's language gap A(T,tgt) ⊖ A(T,src) and the reference task's
    A(R,tgt) ⊖ A(R,src): the assumption AdaMergeX rests on (``adamergex diagnose``).

    Args:
        task_src: the task adapter in the source language (an adapter folder or a snapshot root).
        task_tgt: the task adapter in the target language (an oracle).
        ref_src: the reference-task adapter in the source language.
        ref_tgt: the reference-task adapter in the target language.
        format: ``table`` (a line per module and the mean) or ``json`` (the report as one JSON object).

    Returns:
        The exit code: 0 printed, 2 refused (one line on stderr).
    """
    try:
        report = language_gap_alignment(task_src, task_tgt, ref_src, ref_tgt)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"adamergex diagnose: error: {err}", file=sys.stderr)
        return 2
    if format == "json":
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


def main(argv: list[str]) -> int:
    """``adamergex diagnose --task_src A --task_tgt B --ref_src C --ref_tgt D [--format json]``."""
    from adamergex_pl.cli import run_function

    return run_function(diagnose, argv, "adamergex diagnose")
