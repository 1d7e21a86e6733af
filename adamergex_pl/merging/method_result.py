"""The record of the comparison merges (layer swapping, TIES, DARE-TIES): a :class:`MergeResult` with options.

:class:`MergeResult` records ``t`` and, per input, a weight; the later cross-lingual merging methods have
other parameters that decide the result (the swapped layer counts, the TIES density, the DARE seed).
:class:`MethodResult` adds them as ``options``, written to ``merge.json`` under ``"options"`` and shown by
:meth:`MethodResult.summary`, so a written merge can be reproduced from its record alone.

Each method's formula is its entry in the method registry (:mod:`adamergex_pl.merging.methods`), which
:meth:`MergeResult.record` reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adamergex_pl.merging.result import MergeResult


@dataclass(frozen=True)
class MethodResult(MergeResult):
    """A merged adapter with its record, plus the method's own parameters.

    Args:
        options: JSON-serialisable parameters of the method beyond ``t`` (e.g. ``{"density": 0.2}``).
        (the other fields as in :class:`MergeResult`)

    Example:
        >>> result = ties_merge(task, en, de, scale=1.0, density=0.2, svd_rank=8)  # doctest: +SKIP
        >>> result.record()["options"]  # doctest: +SKIP
        {'density': 0.2, 'seed': None}
    """

    options: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The ``merge.json`` content of :meth:`MergeResult.record` with ``"options"`` added."""
        return {**super().record(), "options": dict(self.options)}

    def summary(self) -> str:
        """:meth:`MergeResult.summary` followed by the options, e.g. ``..., density=0.2``."""
        shown = ", ".join(f"{key}={value}" for key, value in self.options.items() if value is not None)
        return f"{super().summary()}, {shown}" if shown else super().summary()
