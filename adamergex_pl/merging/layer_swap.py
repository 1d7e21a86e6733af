"""Layer swapping: the task adapter's middle layers with the language adapter's bottom and top layers.

Bandarkar et al. (ICLR 2025, arXiv 2410.01335) keep a task expert's middle transformer layers and a language
expert's bottom and top layers. On adapters, for ``L`` layers and counts ``K_bottom``, ``K_top``:

    ΔW_i = ΔW(R,tgt)_i   for layers i < K_bottom or i ≥ L − K_top,
    ΔW_i = ΔW(T,src)_i   otherwise (and for every module outside the layers, e.g. ``lm_head``),

exactly, module by module (LoRA with scaling 1); no blending at the seams. A module's layer is the first
``.layers.<i>.`` in its name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from adamergex_pl.errors import InvalidTypeError, InvalidValueError
from adamergex_pl.merging.adapters import (
    AdapterWeights,
    ia3_is_feedforward,
    lora_module_scaling,
    merged_ia3_config,
    merged_lora_config,
    refuse_nonfinite,
)
from adamergex_pl.merging.checks import check_mergeable, check_partial_modules
from adamergex_pl.merging.lora import concat_factors
from adamergex_pl.merging.merge import AdapterInput, _as_adapter, _keep_targeting, _result_dtype, _union
from adamergex_pl.merging.result import MethodResult

METHOD = "layer_swap"

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_index(module: str) -> int | None:
    """The transformer layer ``module`` belongs to (the first ``.layers.<i>.`` of its name), else ``None``.

    Example:
        >>> layer_index("model.layers.12.mlp.down_proj"), layer_index("lm_head")
        (12, None)
    """
    match = _LAYER.search(module)
    return int(match.group(1)) if match else None


def layer_swap(
    task_src: AdapterInput,
    ref_tgt: AdapterInput,
    *,
    swap_bottom: int,
    swap_top: int,
    num_layers: int | None = None,
    allow_partial_modules: bool = False,
) -> MethodResult:
    """Layer swapping: ``A(R,tgt)``'s bottom ``swap_bottom`` and top ``swap_top`` layers, ``A(T,src)``'s rest.

    ``task_src`` (the config template) gives the middle layers and other modules; ``num_layers`` (``L``)
    defaults to the largest layer index plus 1. Returns the adapter and its record (each input's ``layers``).
    Modules only one input adapts are refused unless ``allow_partial_modules`` (then the other's is no update).

    Raises:
        TypeError: A layer count that is not an integer.
        ValueError: A negative count, ``K_bottom + K_top > L``, disagreeing ``L``, or unmergeable inputs.
    """
    swap_bottom = _count("swap_bottom", swap_bottom)
    swap_top = _count("swap_top", swap_top)
    if num_layers is not None and _count("num_layers", num_layers) < 1:
        raise InvalidValueError(f"num_layers={num_layers} must be at least 1 (the base model's layer count)")
    named = {"task_src": _as_adapter(task_src, "task_src"), "ref_tgt": _as_adapter(ref_tgt, "ref_tgt")}
    check_mergeable(named)
    partial = check_partial_modules(named, allow_partial_modules=allow_partial_modules)
    layers = _layer_count(named, num_layers)
    if swap_bottom + swap_top > layers:
        raise InvalidValueError(
            f"swap_bottom={swap_bottom} + swap_top={swap_top} exceeds the {layers} layers of the model; "
            f"choose counts whose sum is at most {layers}"
        )
    swapped = set(range(swap_bottom)) | set(range(layers - swap_top, layers))
    chosen: dict[str, str] = {}  # module -> the role whose update it gets
    for module in _union(named):
        index = layer_index(module)
        role = "ref_tgt" if index in swapped else "task_src"
        if module in named[role].tensors:
            chosen[module] = role
    if not chosen:
        raise InvalidValueError(
            f"ref_tgt adapts no module in the swapped layers {sorted(swapped)} and task_src none outside "
            "them: the swapped adapter would be empty; swap fewer layers"
        )
    adapter = _copy_lora(named, chosen, partial) if _is_lora(named) else _copy_ia3(named, chosen, partial)
    inputs = tuple(
        {
            "role": role,
            "path": a.path,
            "sha256": a.sha256,
            "weight": 1.0,
            "layers": sorted({layer_index(m) for m, r in chosen.items() if r == role} - {None}),
        }
        for role, a in named.items()
    )
    options = {"swap_bottom": swap_bottom, "swap_top": swap_top, "num_layers": layers}
    return MethodResult(
        adapter,
        METHOD,
        "exact",
        None,
        inputs,
        partial,
        None,
        options,
        allow_partial_modules=allow_partial_modules,
    )


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"{name}={value!r} must be an integer number of layers, e.g. 2")
    if value < 0:
        raise InvalidValueError(f"{name}={value} must be ≥ 0 (a number of layers); use 0 to swap none")
    return value


def _layer_count(named: Mapping[str, AdapterWeights], num_layers: int | None) -> int:
    highest = {role: max(_indices(a), default=None) for role, a in named.items()}
    if all(top is None for top in highest.values()):
        raise InvalidValueError(
            "no module of task_src or ref_tgt lies inside a '.layers.<i>.' block (e.g. "
            f"{next(iter(_union(named)), 'none')!r}); layer swapping needs a decoder whose layers are "
            "named model.layers.<i>"
        )
    if num_layers is not None:
        for role, top in highest.items():
            if top is not None and top >= num_layers:
                raise InvalidValueError(
                    f"{role} ({named[role].label}) adapts layer {top} but num_layers={num_layers}; pass the "
                    "base model's num_hidden_layers"
                )
        return num_layers
    counts = {role: (0 if top is None else top + 1) for role, top in highest.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{role} {n}" for role, n in counts.items())
        raise InvalidValueError(
            f"the adapters disagree about the layer count (largest adapted layer + 1: {listed}); if one of "
            "them leaves the top layers unadapted, pass num_layers=<the base model's num_hidden_layers>"
        )
    return next(iter(counts.values()))


def _indices(adapter: AdapterWeights) -> set[int]:
    return {i for i in map(layer_index, adapter.tensors) if i is not None}


def _is_lora(named: Mapping[str, AdapterWeights]) -> bool:
    return next(iter(named.values())).adapter_type == "lora"


def _copy_lora(
    named: Mapping[str, AdapterWeights], chosen: Mapping[str, str], partial: Mapping[str, list[str]]
) -> AdapterWeights:
    dtype = _result_dtype(named)
    tensors = {}
    for module, role in sorted(chosen.items()):
        adapter = named[role]
        lora_A, lora_B = adapter.tensors[module]["lora_A"], adapter.tensors[module]["lora_B"]
        label = f"{role} ({adapter.label})"
        refuse_nonfinite(f"{label} LoRA module {module!r}: lora_A", lora_A)
        refuse_nonfinite(f"{label} LoRA module {module!r}: lora_B", lora_B)
        scaling = lora_module_scaling(adapter.config, module, lora_A.shape[0], label=label)
        new_A, new_B = concat_factors([(lora_A, lora_B)], [scaling], dtype)  # B·s, so the scaling is 1
        refuse_nonfinite(f"{label} LoRA module {module!r}: lora_B times its scaling {scaling:g}", new_B)
        tensors[module] = {"lora_A": new_A, "lora_B": new_B}
    ranks = {module: parts["lora_A"].shape[0] for module, parts in tensors.items()}
    config = merged_lora_config(
        named["task_src"].config, ranks, _keep_targeting(named, list(tensors), partial)
    )
    return AdapterWeights(config, tensors)


def _copy_ia3(
    named: Mapping[str, AdapterWeights], chosen: Mapping[str, str], partial: Mapping[str, list[str]]
) -> AdapterWeights:
    dtype = _result_dtype(named)
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    feedforward = []
    for module, role in sorted(chosen.items()):
        adapter = named[role]
        vector = adapter.tensors[module]["ia3_l"]
        refuse_nonfinite(f"{role} ({adapter.label}) (IA)³ module {module!r}: ia3_l", vector)
        tensors[module] = {"ia3_l": vector.to(dtype).clone()}
        if ia3_is_feedforward(adapter.config, module):
            feedforward.append(module)
    config = merged_ia3_config(
        named["task_src"].config, tensors, feedforward, _keep_targeting(named, list(tensors), partial)
    )
    return AdapterWeights(config, tensors)
