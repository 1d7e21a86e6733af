"""Refusing a merged adapter whose forward pass would overflow, although every one of its tensors is finite.

Finite tensors are not enough: ``adamergex merge --scale 1e30`` gives LoRA factors around ``1e28`` (finite in
float32, whose largest value is about ``3.4e38``), yet the adapted model's logits are all NaN. What matters is
what the adapter does to an activation. PEFT computes a LoRA update as ``s·B·(A·x)`` and an (IA)³ one as
``l ⊙ h``; for an input of unit-scale entries (what RMSNorm and LayerNorm hand to a layer, ``‖x‖ ≈ √d``) the
result is bounded by

    LoRA:   s·‖B‖_F·‖A‖_F·√d_in        (bounds ``A·x``, ``B·(A·x)`` and every entry of the dense ``s·B·A``)
    (IA)³:  max|l|·√d

and the next normalisation squares it. So a module whose bound reaches ``√3.4e38 ≈ 1.8e19`` makes float32
activations overflow into inf, then NaN. Legitimate merges are many orders of magnitude below: factors of
norm 10 on a 4096-wide layer with ``t = 10`` give about ``1e6``. The bound is computed in float64 from the
factors' norms, never from ``B·A`` itself (cheap for a 7B model's adapter, and it cannot overflow).
"""

from __future__ import annotations

import math

import torch

from adamergex_pl.errors import InvalidValueError

OVERFLOW_LIMIT = math.sqrt(torch.finfo(torch.float32).max)  # ≈ 1.84e19


def module_bounds(adapter) -> dict[str, float]:
    """Per adapted module, the bound above on what the adapter adds to a unit-scale input (float64).

    Args:
        adapter: an :class:`~adamergex_pl.merging.adapters.AdapterWeights`.

    Example:
        >>> import torch
        >>> from adamergex_pl.merging.adapters import AdapterWeights
        >>> ia3 = AdapterWeights({"peft_type": "IA3"}, {"m": {"ia3_l": torch.full((4, 1), 2.0)}})
        >>> module_bounds(ia3)
        {'m': 4.0}
    """
    from adamergex_pl.merging.adapter_config import lora_module_scaling

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
    """Raise unless every module's bound is finite and below :data:`OVERFLOW_LIMIT`.

    Args:
        adapter: the merged adapter.
        scale: the merge's ``t`` (named in the fix), ``None`` for a merge without one.
        method: the method, for the message.

    Raises:
        ValueError: naming the worst module, its bound, the limit, and the fix.
    """
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
