"""Structure-adaptive adapter merging: AdaMergeX, AriMerge and signed combinations, in memory.

AdaMergeX (Zhao et al., "AdaMergeX: Cross-Lingual Transfer with Large Language Models via Adaptive Adapter
Merging", arXiv 2402.18913) builds an adapter for task ``T`` in the target language from three adapters,
``T`` in the source language and the reference task ``R`` (causal LM on Wikipedia) in both languages:

    A(T,tgt) = A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))

with operators that follow how the adapter enters the model: LoRA is additive (``⊕ = +``, ``⊖ = −``, see
:mod:`adamergex_pl.merging.lora`), (IA)³ multiplicative (``⊕ = ⊙``, ``⊖ = ⊘``, see
:mod:`adamergex_pl.merging.ia3`). The AriMerge baseline is ``A(T,src) ⊕ t·A(R,tgt)``, and
:func:`combine_adapters` computes any signed combination ``Σ_i w_i·A_i``.

Everything here is pure: inputs are :class:`AdapterWeights` (or paths, loaded once) and are never changed,
results live in memory (:func:`adamergex_pl.merging.write_merged` writes one,
:func:`adamergex_pl.merging.add_to_peft_model` loads one into a live ``PeftModel``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

import torch

from adamergex_pl.errors import InvalidTypeError, InvalidValueError
from adamergex_pl.merging.adapters import (
    AdapterWeights,
    ia3_is_feedforward,
    lora_module_scaling,
    merged_ia3_config,
    merged_lora_config,
    refuse_nonfinite,
    targeting,
)
from adamergex_pl.merging.checks import check_mergeable, check_partial_modules
from adamergex_pl.merging.ia3 import ia3_adamergex, ia3_arimerge, ia3_product
from adamergex_pl.merging.lora import combine_factors, concat_factors, svd_record, truncate_factors
from adamergex_pl.merging.result import MergeResult

# The two formulas merge_adapters computes; the method registry (methods.py) maps every method onto them.
FORMULA_METHODS = ("adamergex", "arimerge")
LORA_MODES = ("exact", "factor", "svd")
IA3_MODES = ("paper", "loglinear")
AdapterInput = AdapterWeights | str | Path


def merge_adapters(
    task_src: AdapterInput,
    ref_src: AdapterInput | None,
    ref_tgt: AdapterInput,
    *,
    scale: float = 1.0,
    method: str = "adamergex",
    lora_mode: str = "exact",
    ia3_mode: str = "paper",
    svd_rank: int | None = None,
    eps: float = 1e-6,
    allow_partial_modules: bool = False,
    allow_different_base: bool = False,
) -> MergeResult:
    """AdaMergeX ``A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))`` or AriMerge ``A(T,src) ⊕ t·A(R,tgt)``.

    Args:
        task_src: the task adapter in the source language (its config is the template of the result).
        ref_src: the reference-task adapter in the source language; ``None`` for ``arimerge``, which does not
            use it.
        ref_tgt: the reference-task adapter in the target language.
        scale: ``t``, any finite number.
        method: ``"adamergex"`` or ``"arimerge"``.
        lora_mode: for LoRA inputs, ``"exact"`` (rank ``Σ r_i``), ``"factor"`` (the released code's
            element-wise approximation) or ``"svd"`` (exact, then compressed to ``svd_rank``).
        ia3_mode: for (IA)³ inputs, ``"paper"`` or ``"loglinear"``.
        svd_rank: the rank for ``lora_mode="svd"``.
        eps: (IA)³ divisors with ``|l| < eps`` are refused.
        allow_partial_modules: accept modules that only some inputs adapt, as no update where missing (refused
            by default; the result records it).
        allow_different_base: accept inputs trained on differently named base models.

    Returns:
        The merged adapter and its record.

    Raises:
        ValueError: a bad option or incompatible inputs (see :func:`check_mergeable`).
        FileNotFoundError: a path that holds no adapter.

    Example:
        >>> result = merge_adapters("xnli_en", "wiki_en", "wiki_de", scale=0.5)  # doctest: +SKIP
        >>> write_merged(result, "xnli_de_merged")  # doctest: +SKIP
    """
    if method not in FORMULA_METHODS:
        raise InvalidValueError(
            f"method={method!r} is not supported; expected one of {', '.join(FORMULA_METHODS)}"
        )
    if method == "adamergex" and ref_src is None:
        raise InvalidValueError(
            "method='adamergex' needs ref_src, the reference-task adapter in the source language"
        )
    if method == "arimerge" and ref_src is not None:
        raise InvalidValueError(
            "method='arimerge' computes A(T,src) ⊕ t·A(R,tgt) and does not use ref_src; pass None"
        )
    scale = checked_scale(scale)
    roles = {"task_src": task_src, "ref_tgt": ref_tgt}
    if method == "adamergex":
        roles["ref_src"] = ref_src
    named = {role: _as_adapter(value, role) for role, value in roles.items()}
    options = _Options(lora_mode, ia3_mode, svd_rank, eps, allow_partial_modules, allow_different_base)
    # LoRA: the signed combination Σ_i w_i·ΔW_i with w = (1, t) or (1, t, −t), in the order of `roles`
    return _merge(named, [1.0, scale, -scale][: len(named)], options, method=method, scale=scale)


def combine_adapters(
    adapters: Sequence[AdapterInput],
    weights: Sequence[float],
    *,
    names: Sequence[str] | None = None,
    lora_mode: str = "exact",
    svd_rank: int | None = None,
    eps: float = 1e-6,
    allow_partial_modules: bool = False,
    allow_different_base: bool = False,
) -> MergeResult:
    """The signed combination ``Σ_i w_i·A_i``: LoRA ``Σ_i w_i·ΔW_i``, (IA)³ ``Π_i l_i^{w_i}``.

    Args:
        adapters: the inputs (the first one's config is the template of the result).
        weights: ``w_i`` per input, any finite numbers.
        names: roles for messages and the record (default ``adapter_0``, ``adapter_1``, ...).
        lora_mode: ``"exact"``, ``"factor"`` or ``"svd"`` (see :func:`merge_adapters`).
        svd_rank: the rank for ``lora_mode="svd"``.
        eps: (IA)³ entries with ``|l| < eps`` under a negative weight are refused.
        allow_partial_modules: accept modules that only some inputs adapt (refused by default).
        allow_different_base: accept inputs trained on differently named base models.

    Raises:
        ValueError: mismatched lengths, a bad option or incompatible inputs.

    Example:
        >>> # the same update as merge_adapters(task, en, de, scale=0.5):
        >>> combine_adapters([task, de, en], [1.0, 0.5, -0.5])  # doctest: +SKIP
    """
    names = list(names) if names is not None else [f"adapter_{i}" for i in range(len(adapters))]
    if not adapters or len(adapters) != len(weights) or len(names) != len(adapters):
        raise InvalidValueError(
            f"need one weight and one name per adapter; got {len(adapters)} adapters, {len(weights)} "
            f"weights, {len(names)} names"
        )
    if len(set(names)) != len(names):
        raise InvalidValueError(f"names must be distinct; got {names}")
    weights = [checked_scale(w, "weight") for w in weights]
    named = {name: _as_adapter(value, name) for name, value in zip(names, adapters, strict=True)}
    options = _Options(lora_mode, "loglinear", svd_rank, eps, allow_partial_modules, allow_different_base)
    return _merge(named, weights, options, method="combination", scale=None)


@dataclass(frozen=True)
class _Options:
    """How to merge, as given to :func:`merge_adapters` / :func:`combine_adapters`."""

    lora_mode: str
    ia3_mode: str
    svd_rank: int | None
    eps: float
    allow_partial_modules: bool
    allow_different_base: bool


def _merge(
    named: Mapping[str, AdapterWeights],
    weights: Sequence[float],
    options: _Options,
    *,
    method: str,
    scale: float | None,
) -> MergeResult:
    """Merge ``named`` inputs: ``weights`` are each input's coefficient ``w_i`` (LoRA, the record, and (IA)³
    combinations); (IA)³ AdaMergeX and AriMerge use their own formulas at ``scale``."""
    check_mergeable(named, allow_different_base=options.allow_different_base)
    partial = check_partial_modules(named, allow_partial_modules=options.allow_partial_modules)
    if next(iter(named.values())).adapter_type == "lora":
        _check_choice("lora_mode", options.lora_mode, LORA_MODES)
        adapter, svd = _combine_lora(named, weights, options.lora_mode, options.svd_rank, partial)
        mode = options.lora_mode
    else:
        _check_choice("ia3_mode", options.ia3_mode, IA3_MODES)
        adapter = _merge_ia3(named, method, weights, scale, options.ia3_mode, options.eps, partial)
        svd, mode = None, options.ia3_mode
    return MergeResult(
        adapter,
        method,
        mode,
        scale,
        _provenance(named, weights),
        partial,
        svd,
        allow_partial_modules=options.allow_partial_modules,
    )


def checked_scale(value: float, what: str = "scale") -> float:
    """``value`` as a float if it is a finite number (a merge scale ``t`` or weight), else a one-line error.

    Raises:
        TypeError: not a number.
        ValueError: NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(f"{what}={value!r} must be a number, e.g. 0.5")
    if not math.isfinite(value):
        raise InvalidValueError(f"{what}={value!r} must be finite, e.g. 0.5")
    return float(value)


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InvalidValueError(f"{name}={value!r} is not supported; expected one of {', '.join(choices)}")


def _as_adapter(value: AdapterInput, role: str) -> AdapterWeights:
    if isinstance(value, AdapterWeights):
        return value
    if isinstance(value, (str, Path)):
        return AdapterWeights.load(value)
    raise InvalidTypeError(f"{role}={value!r} must be an AdapterWeights or an adapter directory path")


def _provenance(named: Mapping[str, AdapterWeights], weights: Sequence[float]) -> tuple[dict[str, Any], ...]:
    return tuple(
        {"role": role, "path": adapter.path, "sha256": adapter.sha256, "weight": weight}
        for (role, adapter), weight in zip(named.items(), weights, strict=True)
    )


def _union(named: Mapping[str, AdapterWeights]) -> list[str]:
    return sorted(set().union(*(adapter.tensors for adapter in named.values())))


def _result_dtype(named: Mapping[str, AdapterWeights]) -> torch.dtype:
    dtypes = {t.dtype for a in named.values() for parts in a.tensors.values() for t in parts.values()}
    return reduce(torch.promote_types, sorted(dtypes, key=str))


def _keep_targeting(named: Mapping[str, AdapterWeights], modules: Sequence[str], partial: Mapping) -> bool:
    configs = [a.config for a in named.values()]
    same = (
        len({targeting(c) for c in configs}) == 1
        and len({str(c.get("feedforward_modules")) for c in configs}) == 1
    )
    return same and not partial and sorted(modules) == _union(named)


def _combine_lora(
    named: Mapping[str, AdapterWeights],
    weights: Sequence[float],
    mode: str,
    svd_rank: int | None,
    partial: Mapping[str, list[str]],
) -> tuple[AdapterWeights, dict[str, Any] | None]:
    if mode == "svd" and (isinstance(svd_rank, bool) or not isinstance(svd_rank, int) or svd_rank < 1):
        raise InvalidValueError(
            f"lora_mode='svd' needs svd_rank, a positive integer (e.g. 8); got {svd_rank!r}"
        )
    if mode != "svd" and svd_rank is not None:
        raise InvalidValueError(
            f"svd_rank={svd_rank} only applies to lora_mode='svd' (got lora_mode={mode!r})"
        )
    dtype = _result_dtype(named)
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    errors: dict[str, float] = {}
    discarded = total = 0.0
    for module in _union(named):
        terms = []  # (role, A, B, scaling, weight) of the inputs adapting this module
        for (role, adapter), weight in zip(named.items(), weights, strict=True):
            if module in adapter.tensors:
                lora_A, lora_B = adapter.tensors[module]["lora_A"], adapter.tensors[module]["lora_B"]
                label = f"{role} ({adapter.label})"
                refuse_nonfinite(f"{label} LoRA module {module!r}: lora_A", lora_A)
                refuse_nonfinite(f"{label} LoRA module {module!r}: lora_B", lora_B)
                scaling = lora_module_scaling(adapter.config, module, lora_A.shape[0], label=label)
                terms.append((role, lora_A, lora_B, scaling, weight))
        if mode == "factor":
            ranks = {role: a.shape[0] for role, a, _, _, _ in terms}
            if len(set(ranks.values())) > 1:
                raise InvalidValueError(
                    f"lora_mode='factor' adds factors element-wise and needs equal ranks, but module "
                    f"{module!r} has ranks {ranks}; use lora_mode='exact' (or 'svd') for different ranks"
                )
            if any(not s > 0 for *_, s, _ in terms):
                raise InvalidValueError(
                    f"lora_mode='factor' needs positive scalings (lora_alpha > 0) at {module!r}"
                )
            merged = combine_factors(
                [(a, b) for _, a, b, _, _ in terms], [w for *_, w in terms], [s for *_, s, _ in terms], dtype
            )
        else:
            terms = [term for term in terms if term[4] != 0.0]
            if not terms:
                continue  # every contribution is zero: the merged adapter leaves this module alone
            merged = concat_factors([(a, b) for _, a, b, _, _ in terms], [s * w for *_, s, w in terms], dtype)
            if mode == "svd":
                new_A, new_B, lost, norm = truncate_factors(*merged, svd_rank)
                merged = (new_A, new_B)
                errors[module] = math.sqrt(lost / norm) if norm > 0 else 0.0
                discarded, total = discarded + float(lost), total + float(norm)
        refuse_nonfinite(f"LoRA module {module!r}: the merged lora_A", merged[0])
        refuse_nonfinite(f"LoRA module {module!r}: the merged lora_B", merged[1])
        tensors[module] = {"lora_A": merged[0], "lora_B": merged[1]}
    if not tensors:
        raise InvalidValueError(
            f"the combination is zero on every module (weights {list(weights)}); nothing to write"
        )
    ranks = {module: parts["lora_A"].shape[0] for module, parts in tensors.items()}
    template = next(iter(named.values())).config
    config = merged_lora_config(template, ranks, _keep_targeting(named, list(tensors), partial))
    svd = svd_record(svd_rank, discarded, total, errors) if mode == "svd" else None
    return AdapterWeights(config, tensors), svd


def _ia3_vectors(named: Mapping[str, AdapterWeights], module: str) -> list[torch.Tensor]:
    """Each input's vector for ``module``, the identity ``1`` where an input does not adapt it."""
    present = next(a.tensors[module]["ia3_l"] for a in named.values() if module in a.tensors)
    return [
        a.tensors[module]["ia3_l"] if module in a.tensors else torch.ones_like(present)
        for a in named.values()
    ]


def _merge_ia3(
    named: Mapping[str, AdapterWeights],
    method: str,
    weights: Sequence[float],
    scale: float | None,
    mode: str,
    eps: float,
    partial: Mapping[str, list[str]],
) -> AdapterWeights:
    if not eps > 0:
        raise InvalidValueError(f"eps={eps!r} must be positive, e.g. 1e-6")
    dtype = _result_dtype(named)
    vectors = {}
    for module in _union(named):
        found = [v.to(dtype) for v in _ia3_vectors(named, module)]
        if method == "adamergex":
            vectors[module] = ia3_adamergex(*found, scale, mode=mode, eps=eps, module=module)
        elif method == "arimerge":
            vectors[module] = ia3_arimerge(*found, scale, mode=mode, module=module)
        else:
            vectors[module] = ia3_product(found, weights, eps=eps, module=module)
    feedforward = [
        module
        for module in vectors
        if any(module in a.tensors and ia3_is_feedforward(a.config, module) for a in named.values())
    ]
    template = next(iter(named.values())).config
    config = merged_ia3_config(template, vectors, feedforward, _keep_targeting(named, list(vectors), partial))
    return AdapterWeights(config, {module: {"ia3_l": vector} for module, vector in vectors.items()})
