"""The result of a merge: the merged adapter and the record written to ``merge.json``."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from adamergex_pl.merging.adapters import AdapterWeights
from adamergex_pl.merging.checks import refuse_overflowing


@dataclass(frozen=True)
class MergeResult:
    """A merged adapter with the record of how it was made.

    Args:
        adapter: the merged adapter (scaling 1 for LoRA).
        method: ``"adamergex"``, ``"arimerge"`` or ``"combination"``.
        mode: the LoRA mode (``exact`` | ``factor`` | ``svd``) or (IA)³ mode (``paper`` | ``loglinear``) used.
        scale: ``t`` (``None`` for a combination).
        inputs: per input, ``{"role", "path", "sha256", "weight"}`` (``weight``: its coefficient ``w_i``).
        partial_modules: ``{module: [roles that lack it]}`` for modules that only some inputs adapt.
        svd: for ``svd`` mode, ``{"rank", "relative_error", "max_module_error", "per_module"}`` (errors of ``ΔW``).
        allow_partial_modules: the merge was allowed to count a module missing from some inputs as no update.

    Raises:
        ValueError: the merged adapter could overflow float32 activations.

    Example:
        >>> result = merge_adapters("task_en", "wiki_en", "wiki_de", scale=0.5)  # doctest: +SKIP
        >>> result.summary()  # doctest: +SKIP
        'adamergex merge of 3 lora adapters (exact, t=0.5): 14 modules, rank 24'
    """

    adapter: AdapterWeights
    method: str
    mode: str
    scale: float | None
    inputs: tuple[dict[str, Any], ...]
    partial_modules: dict[str, list[str]] = field(default_factory=dict)
    svd: dict[str, Any] | None = None
    allow_partial_modules: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        refuse_overflowing(self.adapter, self.scale, self.method)  # finite factors may still overflow

    def record(self, formula: str | None = None) -> dict[str, Any]:
        """The ``merge.json`` content, with the method registry's ``formula``."""
        try:
            version = metadata.version("adamergex-pl")
        except metadata.PackageNotFoundError:
            version = "unknown"
        ranks = [parts["lora_A"].shape[0] for parts in self.adapter.tensors.values() if "lora_A" in parts]
        return {
            "library": {"name": "adamergex-pl", "version": version},
            "adapter_type": self.adapter.adapter_type,
            "method": self.method,
            "formula": formula,
            "mode": self.mode,
            "scale": self.scale,
            "inputs": [dict(entry) for entry in self.inputs],
            "modules": len(self.adapter.tensors),
            "rank": {"min": min(ranks), "max": max(ranks)} if ranks else None,
            "allow_partial_modules": self.allow_partial_modules,
            "partial_modules": self.partial_modules,
            "svd": self.svd,
        }

    def summary(self) -> str:
        """One line for people."""
        scale = "" if self.scale is None else f", t={self.scale:g}"
        line = (
            f"{self.method} merge of {len(self.inputs)} {self.adapter.adapter_type} adapters "
            f"({self.mode}{scale}): {len(self.adapter.tensors)} modules"
        )
        rank = self.record()["rank"]
        if rank:
            line += (
                f", rank {rank['max']}"
                if rank["min"] == rank["max"]
                else f", ranks {rank['min']}-{rank['max']}"
            )
        if self.partial_modules:
            line += f", {len(self.partial_modules)} partial modules"
        if self.svd:
            line += f", svd relative error {self.svd['relative_error']:.3g}"
        return line


@dataclass(frozen=True)
class MethodResult(MergeResult):
    """A :class:`MergeResult` plus the method's own parameters.

    Args:
        options: JSON-serialisable parameters of the method beyond ``t`` (e.g. ``{"density": 0.2}``).

    Example:
        >>> result = ties_merge(task, en, de, scale=1.0, density=0.2, svd_rank=8)  # doctest: +SKIP
        >>> result.record()["options"]  # doctest: +SKIP
        {'density': 0.2, 'seed': None}
    """

    options: dict[str, Any] = field(default_factory=dict)

    def record(self, formula: str | None = None) -> dict[str, Any]:
        """:meth:`MergeResult.record` with ``"options"`` added."""
        return {**super().record(formula), "options": dict(self.options)}

    def summary(self) -> str:
        """:meth:`MergeResult.summary` followed by the options."""
        shown = ", ".join(f"{key}={value}" for key, value in self.options.items() if value is not None)
        return f"{super().summary()}, {shown}" if shown else super().summary()
