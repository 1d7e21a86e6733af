"""The method registry: every method a comparison can name, in one place.

``adamergex merge``, :class:`~adamergex_pl.merging.merge_module.MergeModule` and the pipeline read it. A method
is a **merge** (``build`` is set; ``sweep`` names the parameter it varies) or a **fixed** point of comparison
(``base``, ``zero_shot``, ``oracle``).

Example:
    >>> from adamergex_pl.merging.methods import METHODS, merge_method_names
    >>> merge_method_names()[:6]
    ('arimerge', 'adamergex', 'adamergex_factor', 'layer_swap', 'ties', 'dare_ties')
    >>> METHODS["arimerge"].formula
    'A(T,tgt) = A(T,src) ⊕ t·A(R,tgt)'
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adamergex_pl.errors import InvalidValueError

# Roles of the adapters a method may need; a build function receives them by these names.
TASK_SRC, REF_SRC, REF_TGT = "task_src", "ref_src", "ref_tgt"
TASK_SRC_STACKED = "task_src_stacked"  # the task adapter trained stacked on A(R,src) (the ``stack`` baseline)


@dataclass(frozen=True)
class Method:
    """One method of the comparison.

    Args:
        name: the name configs and the CLI use (``adamergex``).
        formula: what it computes, in the paper's notation.
        source: where it comes from (paper and arXiv id).
        needs: the adapter roles ``build`` takes (``task_src``, ``ref_src``, ``ref_tgt``).
        sweep: the parameter a comparison varies for it (``scale`` for ``t``), ``None`` for a fixed method.
        adapter_types: the adapter types it supports.
        limitation: why it supports only those, for the message that refuses it.
        build: ``build(adapters_by_role, swept_value, merge_options) -> MergeResult``.
    """

    name: str
    formula: str
    source: str
    needs: tuple[str, ...] = ()
    sweep: str | None = None
    adapter_types: tuple[str, ...] = ("lora", "ia3")
    limitation: str = ""
    build: Callable[[Mapping[str, Any], float, Mapping[str, Any]], Any] | None = field(
        default=None, compare=False
    )

    @property
    def is_merge(self) -> bool:
        return self.build is not None


def _checks(options: Mapping[str, Any]) -> dict[str, Any]:
    """The input checks' options a comparison may set (``eps``, ``allow_partial_modules``,
    ``allow_different_base``)."""
    keys = ("eps", "allow_partial_modules", "allow_different_base")
    return {key: options[key] for key in keys if key in options}


def _adamergex(adapters, scale, options, *, lora_mode: str | None = None):
    from adamergex_pl.merging.merge import merge_adapters

    return merge_adapters(
        adapters[TASK_SRC],
        adapters[REF_SRC],
        adapters[REF_TGT],
        scale=scale,
        method="adamergex",
        lora_mode=lora_mode or options.get("lora_mode", "exact"),
        ia3_mode=options.get("ia3_mode", "paper"),
        svd_rank=options.get("svd_rank") if (lora_mode or options.get("lora_mode")) == "svd" else None,
        **_checks(options),
    )


def _adamergex_factor(adapters, scale, options):
    return _adamergex(adapters, scale, options, lora_mode="factor")


def _arimerge(adapters, scale, options):
    from adamergex_pl.merging.merge import merge_adapters

    return merge_adapters(
        adapters[TASK_SRC],
        None,
        adapters[REF_TGT],
        scale=scale,
        method="arimerge",
        lora_mode=options.get("lora_mode", "exact"),
        ia3_mode=options.get("ia3_mode", "paper"),
        svd_rank=options.get("svd_rank") if options.get("lora_mode") == "svd" else None,
        **_checks(options),
    )


def _layer_swap(adapters, value, options):
    from adamergex_pl.merging.layer_swap import layer_swap

    bottom, top = options.get("swap_bottom"), options.get("swap_top")
    if bottom is None and top is None and value is not None:  # a comparison's sweep: K layers at each end
        bottom = top = int(value)
    if bottom is None or top is None:
        raise InvalidValueError(
            "method 'layer_swap' needs swap_bottom and swap_top (layer counts, e.g. 2 and 2)"
        )
    return layer_swap(
        adapters[TASK_SRC],
        adapters[REF_TGT],
        swap_bottom=bottom,
        swap_top=top,
        allow_partial_modules=options.get("allow_partial_modules", False),
    )


def _stack(adapters, value, options):
    from adamergex_pl.merging.merge import combine_adapters

    _check_trained_stacked(adapters[TASK_SRC_STACKED])

    # both adapters active at once is, in every adapted layer, the sum of the two LoRA updates (the product of
    # the two (IA)³ vectors): exactly the signed combination with weights (1, 1)
    return combine_adapters(
        [adapters[TASK_SRC_STACKED], adapters[REF_TGT]],
        [1.0, 1.0],
        names=[TASK_SRC_STACKED, REF_TGT],
        **_checks(options),
    )


def _check_trained_stacked(adapter) -> None:
    """Refuse, for ``stack``, a task adapter whose ``snapshot.json`` says it was not trained stacked (an adapter
    without one cannot be checked): ``T + A(R,tgt)`` of a plain ``T`` is no MAD-X baseline."""
    from callbacks.adapter_snapshot import SNAPSHOT_JSON, read_snapshot_info

    info = read_snapshot_info(adapter.path) if adapter.path else {}
    if not info:
        return
    model = info.get("config", {}).get("model", {})
    stack_on = model.get("init_args", model).get("stack_on")
    if not stack_on:
        raise InvalidValueError(
            f"method 'stack' needs the task adapter trained stacked on A(R,src), but {adapter.path}/"
            f"{SNAPSHOT_JSON} records stack_on: {json.dumps(stack_on)}; give the one fitted with "
            "--model.init_args.stack_on <A(R,src)> (the pipeline's task_<src>_stacked stage), or drop 'stack'"
        )


def _ties(adapters, scale, options, *, method: str = "ties"):
    from adamergex_pl.merging.ties import ties_merge

    return ties_merge(
        adapters[TASK_SRC],
        adapters[REF_SRC],
        adapters[REF_TGT],
        scale=scale,
        density=options.get("density", 0.2),
        method=method,
        svd_rank=None if method.endswith("_core") else options.get("svd_rank"),
        seed=options.get("seed", 0),
        allow_partial_modules=options.get("allow_partial_modules", False),
    )


_PAPER = "Zhao et al., AdaMergeX, arXiv 2402.18913"
_REGISTRY = (
    Method("base", "the base model, no adapter", _PAPER),
    Method("zero_shot", "A(T,src) applied to the target language as it is", _PAPER),
    Method(
        "arimerge",
        "A(T,tgt) = A(T,src) ⊕ t·A(R,tgt)",
        f"{_PAPER} (arithmetic-merging baseline)",
        needs=(TASK_SRC, REF_TGT),
        sweep="scale",
        build=_arimerge,
    ),
    Method(
        "adamergex",
        "A(T,tgt) = A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))",
        f"{_PAPER}; LoRA exact (rank concatenation) or svd, (IA)³ paper or loglinear",
        needs=(TASK_SRC, REF_SRC, REF_TGT),
        sweep="scale",
        build=_adamergex,
    ),
    Method(
        "adamergex_factor",
        "A = A_T + t·(A_tgt − A_src), B = B_T + t·(B_tgt − B_src) (per factor)",
        f"{_PAPER}, as the released code merges LoRA (an approximation)",
        needs=(TASK_SRC, REF_SRC, REF_TGT),
        sweep="scale",
        adapter_types=("lora",),
        limitation="merges LoRA factors element-wise",
        build=_adamergex_factor,
    ),
    Method(
        "layer_swap",
        "A_i = A(R,tgt)_i for layers i < K_bottom or i ≥ L − K_top, else A(T,src)_i",
        "Bandarkar et al., layer swapping, ICLR 2025, arXiv 2410.01335",
        needs=(TASK_SRC, REF_TGT),
        sweep="swap",
        build=_layer_swap,
    ),
    Method(
        "ties",
        "A(T,tgt) = TIES(τ_T = A(T,src), τ_L = t·(A(R,tgt) ⊖ A(R,src)))",
        "Yadav et al., TIES-merging, NeurIPS 2023, arXiv 2306.01708 (LoRA stored by SVD at svd_rank)",
        needs=(TASK_SRC, REF_SRC, REF_TGT),
        sweep="scale",
        build=_ties,
    ),
    Method(
        "dare_ties",
        "A(T,tgt) = DARE-TIES(τ_T = A(T,src), τ_L = t·(A(R,tgt) ⊖ A(R,src)))",
        "Yu et al., DARE, ICML 2024, arXiv 2311.03099, then TIES (LoRA stored by SVD at svd_rank)",
        needs=(TASK_SRC, REF_SRC, REF_TGT),
        sweep="scale",
        build=lambda adapters, scale, options: _ties(adapters, scale, options, method="dare_ties"),
    ),
    Method(
        "ties_core",
        "A(T,tgt) = Q_B·TIES(C_T, C_L)·Q_Aᵀ, C = Q_Bᵀ·ΔW·Q_A in the bases of the stacked factors",
        "Panariello et al., core-space merging, NeurIPS 2025, arXiv 2509.17786 (exact LoRA of rank Σ r_i)",
        needs=(TASK_SRC, REF_SRC, REF_TGT),
        sweep="scale",
        adapter_types=("lora",),
        limitation="merges LoRA factors in core space",
        build=lambda adapters, scale, options: _ties(adapters, scale, options, method="ties_core"),
    ),
    Method(
        "dare_ties_core",
        "A(T,tgt) = Q_B·DARE-TIES(C_T, C_L)·Q_Aᵀ, C = Q_Bᵀ·ΔW·Q_A in the bases of the stacked factors",
        "Panariello et al., core-space merging, NeurIPS 2025, arXiv 2509.17786 (exact LoRA of rank Σ r_i)",
        needs=(TASK_SRC, REF_SRC, REF_TGT),
        sweep="scale",
        adapter_types=("lora",),
        limitation="merges LoRA factors in core space",
        build=lambda adapters, scale, options: _ties(adapters, scale, options, method="dare_ties_core"),
    ),
    Method(
        "stack",
        "A(T,src) trained on top of a frozen A(R,src), evaluated on top of A(R,tgt) instead",
        "Pfeiffer et al., MAD-X, EMNLP 2020, arXiv 2005.00052 (the AdaMergeX paper's main baseline)",
        needs=(TASK_SRC_STACKED, REF_TGT),
        build=_stack,
    ),
    Method("oracle", "A(T,tgt) trained on target-language task data (a ceiling)", _PAPER),
)
METHODS: dict[str, Method] = {method.name: method for method in _REGISTRY}


COMBINATION_FORMULA = "Σ_i w_i·A_i"  # what a signed combination (``combine_adapters``) computes


def formula(method: str) -> str:
    """What ``method`` computes (written to ``merge.json``): the registry's formula, or a combination's."""
    return METHODS[method].formula if method in METHODS else COMBINATION_FORMULA


def merge_method_names() -> tuple[str, ...]:
    """The methods that build a merged adapter, in registry order."""
    return tuple(name for name, method in METHODS.items() if method.is_merge)


def swept_method_names(sweep: str | None = None) -> tuple[str, ...]:
    """The merge methods that sweep ``sweep`` (``scale``: a ``t``; ``swap``: layer_swap's ``K``), or any
    parameter when ``sweep`` is ``None``: the methods a comparison reports at their best setting."""
    return tuple(
        name for name, method in METHODS.items() if method.sweep is not None and sweep in (None, method.sweep)
    )


def reference_method_names() -> tuple[str, ...]:
    """The methods that use the reference adapters (``A(R,src)`` or ``A(R,tgt)``): their results depend on the
    reference task, so a comparison of several reference tasks has them once per reference."""
    return tuple(name for name, method in METHODS.items() if {REF_SRC, REF_TGT} & set(method.needs))


def fixed_method_names() -> tuple[str, ...]:
    """The fixed points of comparison (no merge): ``base``, ``zero_shot``, ``oracle``."""
    return tuple(name for name, method in METHODS.items() if not method.is_merge)


def check_methods(methods: Iterable[str], what: str = "methods") -> list[str]:
    """``methods`` as a list, each checked against the registry.

    Raises:
        ValueError: a name that is not a registered method.
    """
    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InvalidValueError(f"{what} {unknown} are not known; expected some of {', '.join(METHODS)}")
    return methods


def check_sweeps(methods: Iterable[str], supported: tuple[str, ...], where: str) -> None:
    """Refuse merge methods whose swept parameter ``where`` cannot sweep (e.g. ``layer_swap``'s K).

    Raises:
        ValueError: naming the method, what it sweeps, and where it runs instead.
    """
    for name in methods:
        sweep = METHODS[name].sweep
        if sweep is not None and sweep not in supported:
            raise InvalidValueError(
                f"method {name!r} sweeps {sweep}, which {where} does not sweep yet; run it with "
                f"'adamergex merge --method {name}' or drop it from methods"
            )


def check_adapter_type(methods: Iterable[str], adapter_type: str) -> None:
    """Refuse methods that do not support ``adapter_type`` (``lora`` or ``ia3``).

    Raises:
        ValueError: e.g. ``adamergex_factor`` with (IA)³ adapters.
    """
    for name in methods:
        method = METHODS[name]
        if adapter_type not in method.adapter_types:
            label = {"lora": "LoRA", "ia3": "(IA)³"}[adapter_type]
            why = method.limitation or f"supports {'/'.join(method.adapter_types)} adapters only"
            raise InvalidValueError(
                f"method {name!r} {why}; these are {label} adapters: drop it from methods (or use "
                "'adamergex', which merges both types)"
            )
