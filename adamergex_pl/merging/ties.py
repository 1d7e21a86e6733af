"""TIES and DARE-TIES merging of the task vector with the AdaMergeX language vector, module by module.

TIES-merging (Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023, arXiv
2306.01708) and DARE (Yu et al., "Language Models are Super Mario", ICML 2024, arXiv 2311.03099) merge task
vectors entry by entry. Here the two vectors of one module are the task update and the language gap of
AdaMergeX (Zhao et al., arXiv 2402.18913):

    τ_T = ΔW(T,src),    τ_L = t·(ΔW(R,tgt) − ΔW(R,src)),    ΔW = merge(τ_T, τ_L),

with ``ΔW = s·B·A`` per input (an input that does not adapt the module contributes 0), in float64:

* ``ties``: trim each ``τ`` to its ``⌊density·n⌋`` entries of largest magnitude (the rest set to 0), elect
  per entry the sign of ``Σ τ`` over the trimmed vectors (``+`` on a tie), and average, per entry, only the
  nonzero entries of the elected sign (the disjoint mean; an entry no vector keeps is 0). Where both vectors
  agree this is their mean, not their sum, as in TIES.
* ``dare_ties``: instead of trimming by magnitude, keep each entry with probability ``density`` and divide
  the kept ones by ``density``, then the same sign election and disjoint mean. The drop is deterministic:
  per module a ``torch.Generator`` seeded with the first 8 bytes (little-endian) of
  ``sha256(f"{seed}:{module}")`` draws ``torch.rand(shape, dtype=float64)`` once for ``τ_T`` and then once for
  ``τ_L``, and an entry is kept where the draw is ``< density``.

``density = 1`` keeps every entry (TIES and DARE-TIES then coincide). The sign election and disjoint mean are
``peft.utils.merge_utils``' ``calculate_majority_sign_mask`` (``"total"``) and ``disjoint_merge``; the
magnitude trim is its ``magnitude_based_pruning``.

The merged ``ΔW`` is dense and no longer low-rank, so a LoRA result is its truncated SVD at ``svd_rank``:
``ΔW = U S Vᵀ`` (``torch.linalg.svd``), ``B = U_k S_k^½``, ``A = S_k^½ V_kᵀ``, scaling 1, with
``k = min(svd_rank, out, in)``; the record keeps the relative Frobenius error
``sqrt(Σ_{j>k} S_j²) / sqrt(Σ_j S_j²)`` per module and over all modules together. The dense ``out × in``
float64 matrices of one module at a time are held (about 0.4 GB each for a 4096 × 11008 projection).

(IA)³ is multiplicative, so the same merge runs on log-vectors, ``τ_T = log l_T``,
``τ_L = t·(log l_tgt − log l_src)``, and the result is ``l = exp(merge(τ_T, τ_L))`` (no SVD; a missing
module is ``l = 1``, every vector must be positive).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import torch
from peft.utils.merge_utils import calculate_majority_sign_mask, disjoint_merge, magnitude_based_pruning

from adamergex_pl.errors import InvalidTypeError, InvalidValueError
from adamergex_pl.merging.adapters import (
    AdapterWeights,
    ia3_is_feedforward,
    lora_module_scaling,
    merged_ia3_config,
    merged_lora_config,
    refuse_nonfinite,
)
from adamergex_pl.merging.checks import check_mergeable
from adamergex_pl.merging.ia3 import checked_log
from adamergex_pl.merging.lora import lora_delta, svd_record
from adamergex_pl.merging.merge import (
    AdapterInput,
    _as_adapter,
    _checked_scale,
    _keep_targeting,
    _provenance,
    _result_dtype,
    _union,
)
from adamergex_pl.merging.result import MethodResult

TIES_METHODS = ("ties", "dare_ties")


def ties_merge(
    task_src: AdapterInput,
    ref_src: AdapterInput,
    ref_tgt: AdapterInput,
    *,
    scale: float,
    density: float,
    method: str = "ties",
    svd_rank: int | None = None,
    seed: int = 0,
) -> MethodResult:
    """TIES (or DARE-TIES) merge of ``τ_T = A(T,src)`` and ``τ_L = t·(A(R,tgt) ⊖ A(R,src))``.

    Args:
        task_src: the task adapter in the source language (its config is the template of the result).
        ref_src: the reference-task adapter in the source language.
        ref_tgt: the reference-task adapter in the target language.
        scale: ``t``, any finite number.
        density: the fraction of each vector's entries kept, in ``(0, 1]``.
        method: ``"ties"`` (trim by magnitude) or ``"dare_ties"`` (random drop and rescale).
        svd_rank: LoRA only, required: the rank of the stored result (a truncated SVD of the merged ``ΔW``).
        seed: ``dare_ties`` only: the seed of the random drop (each module draws from its own generator).

    Returns:
        The merged adapter and its record (mode ``"svd"`` for LoRA, ``"log"`` for (IA)³; ``svd`` errors;
        options ``density`` and ``seed``).

    Raises:
        TypeError: a parameter of the wrong type.
        ValueError: an unknown method, ``density`` outside ``(0, 1]``, a missing or non-positive
            ``svd_rank`` (or one given for (IA)³), a non-positive (IA)³ entry, non-finite inputs or results,
            or inputs that :func:`check_mergeable` refuses.

    Example:
        >>> result = ties_merge("xnli_en", "wiki_en", "wiki_de", scale=1.0, density=0.2,  # doctest: +SKIP
        ...                     method="dare_ties", svd_rank=16, seed=1)
        >>> write_merged(result, "xnli_de_dare")  # doctest: +SKIP
    """
    if method not in TIES_METHODS:
        raise InvalidValueError(
            f"method={method!r} is not supported; expected one of {', '.join(TIES_METHODS)}"
        )
    scale = _checked_scale(scale)
    if isinstance(density, bool) or not isinstance(density, (int, float)):
        raise InvalidTypeError(f"density={density!r} must be a number in (0, 1], e.g. 0.2")
    if not 0.0 < density <= 1.0:
        raise InvalidValueError(
            f"density={density!r} must be in (0, 1], the fraction of entries each vector keeps (e.g. 0.2)"
        )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidTypeError(f"seed={seed!r} must be an integer, e.g. 0")
    named = {
        "task_src": _as_adapter(task_src, "task_src"),
        "ref_tgt": _as_adapter(ref_tgt, "ref_tgt"),
        "ref_src": _as_adapter(ref_src, "ref_src"),
    }
    partial = check_mergeable(named)
    options = {"density": float(density), "seed": seed if method == "dare_ties" else None}
    provenance = _provenance(named, [1.0, scale, -scale])
    merge = _Merger(float(density), method, seed)
    if next(iter(named.values())).adapter_type == "lora":
        if isinstance(svd_rank, bool) or not isinstance(svd_rank, int) or svd_rank < 1:
            raise InvalidValueError(
                f"svd_rank={svd_rank!r}: a LoRA TIES merge is stored by truncated SVD and needs svd_rank, a "
                "positive integer (e.g. 16)"
            )
        adapter, svd = _ties_lora(named, scale, merge, svd_rank, partial)
        return MethodResult(adapter, method, "svd", scale, provenance, partial, svd, options)
    if svd_rank is not None:
        raise InvalidValueError(
            f"svd_rank={svd_rank!r} only applies to LoRA inputs; (IA)³ vectors are merged exactly: drop it"
        )
    adapter = _ties_ia3(named, scale, merge, partial)
    return MethodResult(adapter, method, "log", scale, provenance, partial, None, options)


def dare_generator(seed: int, module: str, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of ``module``'s random drop: seeded by ``sha256(f"{seed}:{module}")``'s first 8 bytes.

    Example:
        >>> g = dare_generator(0, "model.layers.0.self_attn.q_proj")
        >>> torch.rand(2, generator=g, dtype=torch.float64).shape
        torch.Size([2])
    """
    digest = hashlib.sha256(f"{seed}:{module}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little"))


class _Merger:
    """``merge(τ_T, τ_L)`` of one module: trim or drop each vector, elect signs, take the disjoint mean."""

    def __init__(self, density: float, method: str, seed: int) -> None:
        self.density, self.method, self.seed = density, method, seed

    def __call__(self, vectors: list[torch.Tensor], module: str) -> torch.Tensor:
        if self.method == "ties":
            kept = [self._trim(v) for v in vectors]
        else:
            generator = dare_generator(self.seed, module, vectors[0].device)
            kept = [self._drop(v, generator) for v in vectors]
        stacked = torch.stack(kept)
        return disjoint_merge(stacked, calculate_majority_sign_mask(stacked, method="total"))

    def _trim(self, vector: torch.Tensor) -> torch.Tensor:
        return vector if self.density >= 1.0 else magnitude_based_pruning(vector, self.density)

    def _drop(self, vector: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.density >= 1.0:
            return vector
        draw = torch.rand(vector.shape, generator=generator, dtype=torch.float64, device=vector.device)
        return torch.where(draw < self.density, vector / self.density, torch.zeros_like(vector))


def _ties_lora(
    named: Mapping[str, AdapterWeights],
    scale: float,
    merge: _Merger,
    svd_rank: int,
    partial: Mapping[str, list[str]],
) -> tuple[AdapterWeights, dict]:
    dtype = _result_dtype(named)
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    errors: dict[str, float] = {}
    discarded = total = 0.0
    for module in _union(named):
        delta = {role: _lora_delta(adapter, role, module) for role, adapter in named.items()}
        shape = next(d.shape for d in delta.values() if d is not None)
        zero = torch.zeros(shape, dtype=torch.float64)
        task = delta["task_src"] if delta["task_src"] is not None else zero
        gap = (delta["ref_tgt"] if delta["ref_tgt"] is not None else zero) - (
            delta["ref_src"] if delta["ref_src"] is not None else zero
        )
        merged = merge([task, scale * gap], module)
        refuse_nonfinite(f"LoRA module {module!r}: the merged ΔW", merged)
        u, s, vh = torch.linalg.svd(merged, full_matrices=False)
        keep = min(svd_rank, s.numel())
        root = s[:keep].sqrt()
        new_B, new_A = (u[:, :keep] * root).to(dtype), (root[:, None] * vh[:keep]).to(dtype)
        refuse_nonfinite(f"LoRA module {module!r}: the truncated lora_A", new_A)
        refuse_nonfinite(f"LoRA module {module!r}: the truncated lora_B", new_B)
        tensors[module] = {"lora_A": new_A, "lora_B": new_B}
        squares = s.square()
        lost, norm = float(squares[keep:].sum()), float(squares.sum())
        errors[module] = math.sqrt(lost / norm) if norm > 0 else 0.0
        discarded, total = discarded + lost, total + norm
    ranks = {module: parts["lora_A"].shape[0] for module, parts in tensors.items()}
    template = named["task_src"].config
    config = merged_lora_config(template, ranks, _keep_targeting(named, list(tensors), partial))
    return AdapterWeights(config, tensors), svd_record(svd_rank, discarded, total, errors)


def _lora_delta(adapter: AdapterWeights, role: str, module: str) -> torch.Tensor | None:
    if module not in adapter.tensors:
        return None
    lora_A, lora_B = adapter.tensors[module]["lora_A"], adapter.tensors[module]["lora_B"]
    label = f"{role} ({adapter.label})"
    refuse_nonfinite(f"{label} LoRA module {module!r}: lora_A", lora_A)
    refuse_nonfinite(f"{label} LoRA module {module!r}: lora_B", lora_B)
    return lora_delta(
        lora_A, lora_B, lora_module_scaling(adapter.config, module, lora_A.shape[0], label=label)
    )


def _ties_ia3(
    named: Mapping[str, AdapterWeights], scale: float, merge: _Merger, partial: Mapping[str, list[str]]
) -> AdapterWeights:
    dtype = _result_dtype(named)
    vectors = {}
    for module in _union(named):
        logs = {role: _log_vector(adapter, role, module) for role, adapter in named.items()}
        shape = next(v.shape for v in logs.values() if v is not None)
        zero = torch.zeros(shape, dtype=torch.float64)
        task, tgt, src = (
            logs[r] if logs[r] is not None else zero for r in ("task_src", "ref_tgt", "ref_src")
        )
        merged = merge([task, scale * (tgt - src)], module).exp().to(dtype)
        refuse_nonfinite(f"(IA)³ module {module!r}: the merged vector (in {dtype})", merged)
        vectors[module] = merged
    feedforward = [
        module
        for module in vectors
        if any(module in a.tensors and ia3_is_feedforward(a.config, module) for a in named.values())
    ]
    template = named["task_src"].config
    config = merged_ia3_config(template, vectors, feedforward, _keep_targeting(named, list(vectors), partial))
    return AdapterWeights(config, {module: {"ia3_l": vector} for module, vector in vectors.items()})


def _log_vector(adapter: AdapterWeights, role: str, module: str) -> torch.Tensor | None:
    if module not in adapter.tensors:
        return None  # the identity l = 1, log l = 0
    what = f"{role} ({adapter.label}) (IA)³ module {module!r}"
    purpose = "TIES merges (IA)³ vectors as log-vectors (or use merge_adapters with ia3_mode='paper')"
    return checked_log(adapter.tensors[module]["ia3_l"], what, purpose)
