"""Checks, before any arithmetic, that adapters ``{role: AdapterWeights}`` can be merged.

Inputs must share the peft type, the base model, and per module the tensor shapes (LoRA ranks may differ) and,
for (IA)³, whether it is feedforward. A module only some inputs adapt counts as zero (LoRA) or ``1`` ((IA)³)
in the others; :func:`check_partial_modules` refuses such modules unless ``allow_partial_modules`` is set
(every merge method calls it: on a module only ``A(R,src)`` adapts, AdaMergeX would compute ``T − t·R_src``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import torch

from adamergex_pl.errors import InvalidTypeError, InvalidValueError
from adamergex_pl.merging.adapters import AdapterWeights, ia3_is_feedforward, lora_module_scaling

OVERFLOW_LIMIT = math.sqrt(torch.finfo(torch.float32).max)  # ≈ 1.84e19


def module_bounds(adapter) -> dict[str, float]:
    """Per adapted module of an ``AdapterWeights``, a bound on what it adds to a unit-scale input (float64).

    Example:
        >>> ia3 = AdapterWeights({"peft_type": "IA3"}, {"m": {"ia3_l": torch.full((4, 1), 2.0)}})
        >>> module_bounds(ia3)
        {'m': 4.0}
    """
    bounds = {}
    for module, parts in adapter.tensors.items():
        if "ia3_l" in parts:
            vector = parts["ia3_l"].detach().to(torch.float64)
            bounds[module] = float(vector.abs().max()) * math.sqrt(vector.numel()) if vector.numel() else 0.0
            continue
        lora_a, lora_b = (parts[name].detach().to(torch.float64) for name in ("lora_A", "lora_B"))
        scaling = lora_module_scaling(adapter.config, module, lora_a.shape[0], label=adapter.label)
        norms = float(torch.linalg.vector_norm(lora_b)) * float(torch.linalg.vector_norm(lora_a))
        bounds[module] = abs(scaling) * norms * math.sqrt(lora_a.shape[1])
    return bounds


def refuse_overflowing(adapter, scale: float | None, method: str) -> None:
    """Raise ValueError unless every module's bound is finite and below :data:`OVERFLOW_LIMIT`."""
    bounds = module_bounds(adapter)
    bad = {module: bound for module, bound in bounds.items() if not bound < OVERFLOW_LIMIT}
    if not bad:
        return
    worst = max(bad, key=lambda module: bad[module] if math.isfinite(bad[module]) else math.inf)
    fix = f"use a smaller |t| than scale={scale:g}" if scale is not None else "check the inputs' weights"
    raise InvalidValueError(
        f"the {method} merge could overflow: module {worst!r} (and {len(bad) - 1} more) can add up to "
        f"{bad[worst]:.3g} to a unit-scale activation, beyond {OVERFLOW_LIMIT:.3g}, where float32 activations "
        f"can overflow to inf and the logits become NaN; {fix}"
    )


def check_mergeable(
    adapters: Mapping[str, AdapterWeights],
    *,
    allow_different_base: bool = False,
) -> dict[str, list[str]]:
    """Run every compatibility check; return the partial modules as ``{module: [roles that lack it]}``.

    Whether partial modules are accepted is :func:`check_partial_modules`' decision, made by each merge.

    Args:
        adapters: ``{role: adapter}``, at least one.
        allow_different_base: accept inputs whose ``base_model_name_or_path`` differ.

    Raises:
        ValueError: the first failed check.
    """
    if not adapters:
        raise InvalidValueError("no adapters to merge")
    check_same_type(adapters)
    check_same_layout(adapters)
    check_same_base(adapters, allow_different_base=allow_different_base)
    partial = module_coverage(adapters)
    if next(iter(adapters.values())).adapter_type == "ia3":
        check_feedforward(adapters)
    check_shapes(adapters)
    return partial


def check_partial_modules(
    adapters: Mapping[str, AdapterWeights], *, allow_partial_modules: bool = False
) -> dict[str, list[str]]:
    """Refuse modules that only some inputs adapt, unless ``allow_partial_modules``; return them.

    Args:
        adapters: ``{role: adapter}``.
        allow_partial_modules: accept them (a missing module counts as no update); the result records it.

    Returns:
        ``{module: [roles that lack it]}`` (empty when every input adapts the same modules).

    Raises:
        TypeError: ``allow_partial_modules`` is not a bool.
        ValueError: partial modules without ``allow_partial_modules``, naming them, the inputs that lack them
            (by directory) and the fix.

    Example:
        >>> a = AdapterWeights({"peft_type": "IA3"}, {"m": {"ia3_l": torch.ones(4, 1)}})
        >>> check_partial_modules({"task_src": a, "ref_tgt": a})
        {}
    """
    if not isinstance(allow_partial_modules, bool):
        raise InvalidTypeError(f"allow_partial_modules={allow_partial_modules!r} must be true or false")
    partial = module_coverage(adapters)
    if partial and not allow_partial_modules:
        lacking = {
            role: [module for module, roles in partial.items() if role in roles]
            for role in adapters
            if any(role in roles for roles in partial.values())
        }
        listed = "; ".join(
            f"{role} ({adapters[role].label}) lacks {_some(modules)}" for role, modules in lacking.items()
        )
        raise InvalidValueError(
            f"allow_partial_modules=false: the inputs adapt different modules ({listed}), and a merge would "
            "count a missing module as no update (e.g. T − t·R_src on a module A(R,tgt) lacks); train the "
            "adapters with the same target_modules, or pass allow_partial_modules=True "
            "(--allow_partial_modules true) to accept it"
        )
    return partial


def _some(modules: list[str], shown: int = 3) -> str:
    """``'a', 'b', 'c' and 7 more`` for a message."""
    names = ", ".join(repr(module) for module in modules[:shown])
    return f"{names} and {len(modules) - shown} more" if len(modules) > shown else names


def check_same_type(adapters: Mapping[str, AdapterWeights]) -> None:
    """All inputs LoRA, or all (IA)³."""
    types = {role: adapter.peft_type for role, adapter in adapters.items()}
    if len(set(types.values())) > 1:
        listed = ", ".join(f"{role} is {t} ({adapters[role].label})" for role, t in types.items())
        raise InvalidValueError(
            f"cannot merge adapters of different peft types: {listed}; pass adapters of one type"
        )


def check_same_layout(adapters: Mapping[str, AdapterWeights]) -> None:
    """Inputs agree on ``fan_in_fan_out``."""
    fan_in_fan_out = {role: bool(a.config.get("fan_in_fan_out", False)) for role, a in adapters.items()}
    if len(set(fan_in_fan_out.values())) > 1:
        raise InvalidValueError(
            f"inputs disagree on fan_in_fan_out ({fan_in_fan_out}); they adapt different layouts"
        )


def _same_base(first: str, other: str) -> bool:
    if first == other:
        return True
    if os.path.isdir(first) and os.path.isdir(other):
        return os.path.realpath(first) == os.path.realpath(other)
    return first.rstrip("/") == other.rstrip("/")


def check_same_base(adapters: Mapping[str, AdapterWeights], *, allow_different_base: bool = False) -> None:
    """Every input's ``base_model_name_or_path`` names the same model (unless ``allow_different_base``)."""
    if allow_different_base:
        return
    bases = {role: str(adapter.base_model) for role, adapter in adapters.items()}
    first_role, first = next(iter(bases.items()))
    for role, base in bases.items():
        if not _same_base(first, base):
            raise InvalidValueError(
                f"{role} was trained on base model {base!r} but {first_role} on {first!r}; merged adapters "
                "only make sense on one base. If these name the same weights (e.g. a moved copy), pass "
                "allow_different_base=True (--allow_different_base true)"
            )


def module_coverage(adapters: Mapping[str, AdapterWeights]) -> dict[str, list[str]]:
    """``{module: [roles that lack it]}`` for every module that only some inputs adapt."""
    every = sorted(set().union(*(adapter.tensors for adapter in adapters.values())))
    missing = {module: [role for role, a in adapters.items() if module not in a.tensors] for module in every}
    return {module: roles for module, roles in missing.items() if roles}


def check_shapes(adapters: Mapping[str, AdapterWeights]) -> None:
    """Per module, every input adapts a layer of the same size (LoRA ranks may differ)."""
    seen: dict[str, tuple[str, tuple]] = {}
    for role, adapter in adapters.items():
        for module, parts in adapter.tensors.items():
            if adapter.adapter_type == "lora":
                lora_A, lora_B = parts["lora_A"], parts["lora_B"]
                if lora_A.dim() != 2 or lora_B.dim() != 2 or lora_A.shape[0] != lora_B.shape[1]:
                    raise InvalidValueError(
                        f"{role} ({adapter.label}) module {module!r}: lora_A {tuple(lora_A.shape)} and "
                        f"lora_B {tuple(lora_B.shape)} are not the factors of a linear LoRA (r × in, "
                        "out × r); convolution LoRA is not supported"
                    )
                shape = ("out × in", (lora_B.shape[0], lora_A.shape[1]))
            else:
                shape = ("ia3_l", tuple(parts["ia3_l"].shape))
            other, expected = seen.setdefault(module, (role, shape))
            if expected != shape:
                raise InvalidValueError(
                    f"module {module!r} has {shape[0]} {shape[1]} in {role} ({adapter.label}) but "
                    f"{expected[1]} in {other}; the adapters were trained on differently shaped models"
                )


def check_feedforward(adapters: Mapping[str, AdapterWeights]) -> None:
    """(IA)³: a module is feedforward in every input that adapts it, or in none."""
    status: dict[str, tuple[str, bool]] = {}
    for role, adapter in adapters.items():
        for module in adapter.tensors:
            feedforward = ia3_is_feedforward(adapter.config, module)
            other, first = status.setdefault(module, (role, feedforward))
            if first != feedforward:
                yes, no = (role, other) if feedforward else (other, role)
                raise InvalidValueError(
                    f"(IA)³ module {module!r} is a feedforward module (scales its input) in {yes} but not in "
                    f"{no} (scales its output): their feedforward_modules differ, so the vectors do not "
                    "compose; retrain with the same feedforward_modules"
                )
