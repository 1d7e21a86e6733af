"""TIES and DARE-TIES merging of the task vector with the AdaMergeX language vector, dense or in core space.

TIES-merging (Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023, arXiv
2306.01708) and DARE (Yu et al., "Language Models are Super Mario", ICML 2024, arXiv 2311.03099) merge task
vectors entry by entry. Here the two vectors of one module are the task update and the language gap of
AdaMergeX (Zhao et al., arXiv 2402.18913):

    τ_T = ΔW(T,src),    τ_L = t·(ΔW(R,tgt) − ΔW(R,src)),    ΔW = merge(τ_T, τ_L),

with ``ΔW = s·B·A`` per input (0 where an input does not adapt the module):

* ``ties``: trim each ``τ`` to its ``k = ⌊density·n⌋`` entries of largest magnitude (ties at the ``k``-th
  magnitude are all kept), elect per entry the sign of ``Σ τ`` (``+`` on a tie), and take the disjoint mean of
  the entries of the elected sign (0 where none is kept).
* ``dare_ties``: keep each entry with probability ``density`` and divide it by ``density``, then elect and
  average likewise. Per module a ``torch.Generator`` seeded with the first 8 bytes (little-endian) of
  ``sha256(f"{seed}:{module}")`` draws ``torch.rand(shape, dtype=float32)`` for ``τ_T`` then ``τ_L``; an entry
  is kept where the draw is ``< density``. ``density = 1`` makes both methods coincide.

**Dense LoRA**: the merged ``ΔW`` is stored as its rank-``k`` truncated SVD, ``k = min(svd_rank, out, in)``,
``B = U_k S_k^½``, ``A = S_k^½ V_kᵀ``, scaling 1 (:func:`adamergex_pl.merging.lora.low_rank_factors`); the record
keeps the relative error ``‖ΔW − B·A‖_F / ‖ΔW‖_F`` per module and overall. Float32 arithmetic, one module at
a time.

**Core space** (``ties_core``, ``dare_ties_core``; Panariello et al., "Accurate and Efficient Low-Rank Model
Merging in Core Space", NeurIPS 2025, arXiv 2509.17786): with ``Q_B = U`` of the thin SVD of
``[c_T B_T, c_tgt B_tgt, c_src B_src]`` (``c = s_T``, ``t·s_tgt``, ``−t·s_src``) and ``Q_A = V`` of that of
``[A_T; A_tgt; A_src]``, each update is a core ``C_i = (Q_Bᵀ c_i B_i)(A_i Q_A)`` (``R × R``, ``R = Σ r_i``) with
``c_i B_i A_i = Q_B C_i Q_Aᵀ`` exactly. The cores are merged as above and mapped back as
``B = Q_B·merge(C_T, C_L)``, ``A = Q_Aᵀ``: a LoRA of rank ``R`` with no truncation (mode ``"core"``, float64).
This is a different, basis-dependent method from dense TIES.

(IA)³ merges log-vectors, ``τ_T = log l_T``, ``τ_L = t·(log l_tgt − log l_src)``, ``l = exp(merge(τ_T, τ_L))``
(float64; a missing module is ``l = 1``, every vector must be positive). Core space is LoRA only.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import torch

from adamergex_pl.errors import InvalidTypeError, InvalidValueError
from adamergex_pl.merging.adapters import (
    AdapterWeights,
    checked_lora_factors,
    ia3_is_feedforward,
    merged_ia3_config,
    merged_lora_config,
    refuse_nonfinite,
)
from adamergex_pl.merging.checks import check_mergeable
from adamergex_pl.merging.ia3 import checked_log
from adamergex_pl.merging.lora import low_rank_factors, svd_record
from adamergex_pl.merging.merge import (
    AdapterInput,
    _as_adapter,
    _keep_targeting,
    _provenance,
    _result_dtype,
    _union,
    checked_scale,
)
from adamergex_pl.merging.result import MethodResult

DENSE_METHODS = ("ties", "dare_ties")
CORE_METHODS = ("ties_core", "dare_ties_core")
TIES_METHODS = DENSE_METHODS + CORE_METHODS
_BLOCK, _SAMPLE = 1 << 16, 1 << 18  # entries per block of a dense pass; magnitudes sampled for a threshold


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
        method: ``"ties"`` (trim by magnitude), ``"dare_ties"`` (random drop and rescale), or either in core
            space (``"ties_core"``, ``"dare_ties_core"``; LoRA only, exact rank ``Σ r_i``).
        svd_rank: dense LoRA merges only, required: the rank of the stored result.
        seed: the DARE methods only: the seed of the random drop.

    Returns:
        The merged adapter and its record (mode ``"svd"``, ``"core"`` or ``"log"``).

    Raises:
        TypeError: a parameter of the wrong type.
        ValueError: an unknown method, ``density`` outside ``(0, 1]``, a missing or non-positive
            ``svd_rank`` (or one given where nothing is truncated), a core-space method on (IA)³ inputs, a
            non-positive (IA)³ entry, non-finite inputs or results, or inputs that :func:`check_mergeable`
            refuses.

    Example:
        >>> result = ties_merge("xnli_en", "wiki_en", "wiki_de", scale=1.0, density=0.2,  # doctest: +SKIP
        ...                     method="dare_ties", svd_rank=16, seed=1)
        >>> write_merged(result, "xnli_de_dare")  # doctest: +SKIP
    """
    if method not in TIES_METHODS:
        raise InvalidValueError(
            f"method={method!r} is not supported; expected one of {', '.join(TIES_METHODS)}"
        )
    scale = checked_scale(scale)
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
    drops = method.startswith("dare")
    options = {"density": float(density), "seed": seed if drops else None}
    provenance = _provenance(named, [1.0, scale, -scale])
    merge = _Merger(float(density), drops, seed)
    lora = next(iter(named.values())).adapter_type == "lora"
    if method in CORE_METHODS:
        if not lora:
            raise InvalidValueError(
                f"method={method!r} merges LoRA factors in core space; these are (IA)³ adapters: use "
                f"{method.removesuffix('_core')!r}"
            )
        if svd_rank is not None:
            raise InvalidValueError(
                f"svd_rank={svd_rank!r}: method={method!r} stores its result exactly at rank Σ r_i; drop it"
            )
        adapter = _core_lora(named, scale, merge, partial)
        return MethodResult(adapter, method, "core", scale, provenance, partial, None, options)
    if lora:
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


def module_generator(seed: int, module: str, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of ``module``'s random draws: seeded by ``sha256(f"{seed}:{module}")``'s first 8 bytes.

    Example:
        >>> g = module_generator(0, "model.layers.0.self_attn.q_proj")
        >>> torch.rand(2, generator=g).shape
        torch.Size([2])
    """
    digest = hashlib.sha256(f"{seed}:{module}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little"))


class Vector:
    """``τ_T`` or ``τ_L`` of one module, read by blocks of rows: a dense tensor or factors ``(B, A)`` of ``B·A``."""

    def __init__(self, dense: torch.Tensor | None = None, factors: tuple | None = None) -> None:
        self.dense, self.factors = dense, factors
        self.shape = dense.shape if dense is not None else (factors[0].shape[0], factors[1].shape[1])

    def scaled(self, factor: float) -> Vector:
        """``factor`` times this vector (its dense tensor, or its ``B`` factor)."""
        if self.dense is not None:
            return Vector(self.dense * factor)
        return Vector(factors=(self.factors[0] * factor, self.factors[1]))

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """A fresh tensor of rows ``start:stop``."""
        if self.dense is not None:
            return self.dense[start:stop].clone()
        return self.factors[0][start:stop] @ self.factors[1]

    def entries(self, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """The entries at ``(rows[i], columns[i])``."""
        if self.dense is not None:
            return self.dense.reshape(self.dense.shape[0], -1)[rows, columns]
        return (self.factors[0][rows] * self.factors[1].T[columns]).sum(dim=1)


class _Merger:
    """``merge(τ_T, τ_L)`` of one module, by blocks of about ``_BLOCK`` entries (cache-sized)."""

    def __init__(self, density: float, drops: bool, seed: int) -> None:
        self.density, self.drops, self.seed = density, drops, seed

    def __call__(self, task: Vector, gap: Vector, module: str) -> torch.Tensor:
        vectors, cuts, generators = (task, gap), [None, None], [None, None]
        if self.density < 1.0 and not self.drops:  # keep |τ| ≥ the k-th largest: |τ| > the float below it
            for i, vector in enumerate(vectors):
                threshold = torch.as_tensor(kth_largest_magnitude(vector, self._kept_count(vector)))
                cuts[i] = float(torch.nextafter(threshold, threshold.new_zeros(())))
        elif self.density < 1.0:  # the kept entries are divided by density: divide the factors once
            generators = [module_generator(self.seed, f"{module}{part}") for part in ("", ":gap")]
            vectors = tuple(vector.scaled(1.0 / self.density) for vector in vectors)
        merged = None
        for start, stop in _row_blocks(task.shape):
            x, y = (
                self._kept(v.rows(start, stop), c, g)
                for v, c, g in zip(vectors, cuts, generators, strict=True)
            )
            if merged is None:
                merged = torch.empty(task.shape, dtype=x.dtype, device=x.device)
            # two vectors: where both are nonzero with one sign, their mean; otherwise the entry of the elected
            # sign (the sign of the sum; + on a tie), which is the larger (+) or the smaller (−) of the two
            total = x + y
            single = torch.where(total >= 0, torch.maximum(x, y), torch.minimum(x, y))
            torch.where(x * y > 0, total.mul_(0.5), single, out=merged[start:stop])
        return merged

    def _kept(
        self, block: torch.Tensor, cut: float | None, generator: torch.Generator | None
    ) -> torch.Tensor:
        if cut is not None:
            return torch.nn.functional.hardshrink(block, cut)
        if generator is not None:
            draw = torch.rand(block.shape, generator=generator, dtype=torch.float32, device=block.device)
            return block.mul_(draw.lt_(self.density))
        return block

    def _kept_count(self, vector: Vector) -> int:
        return int(self.density * math.prod(vector.shape))


def _row_blocks(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(start, stop)`` of blocks of rows of about ``_BLOCK`` entries (one block for a 1-D vector)."""
    step = max(1, _BLOCK // math.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return [(start, min(start + step, shape[0])) for start in range(0, shape[0], step)]


def kth_largest_magnitude(vector: Vector, k: int) -> torch.Tensor | float:
    """The ``k``-th largest magnitude of ``vector``'s entries (``inf`` for ``k = 0``), exactly.

    A sample brackets the answer, one pass gathers the entries inside the bracket, and a ``kthvalue`` of those
    gives it (of all magnitudes if the bracket misses).

    Example:
        >>> kth_largest_magnitude(Vector(torch.tensor([3.0, -5.0, 1.0, 4.0])), 2)
        tensor(4.)
    """
    n = math.prod(vector.shape)
    if k == 0:
        return math.inf
    if n > _SAMPLE:
        rows, columns = vector.shape[0], n // vector.shape[0]
        generator = torch.Generator().manual_seed(0)
        sample = vector.entries(
            torch.randint(rows, (_SAMPLE,), generator=generator),
            torch.randint(columns, (_SAMPLE,), generator=generator),
        )
        sample = sample.abs().sort().values
        rank = (n - k + 0.5) / n * _SAMPLE  # the answer's position among the sorted sample
        margin = 6.0 * math.sqrt(_SAMPLE * (k / n) * (1 - k / n)) + 8.0
        low = sample[max(0, min(_SAMPLE - 1, int(rank - margin)))]
        high = sample[max(0, min(_SAMPLE - 1, int(rank + margin)))]
        above, inside = 0, []
        for start, stop in _row_blocks(vector.shape):
            magnitude = vector.rows(start, stop).abs_()
            above += int((magnitude > high).sum())
            inside.append(magnitude[(magnitude >= low) & (magnitude <= high)])
        band = torch.cat(inside)
        if above < k <= above + band.numel():
            return band.kthvalue(band.numel() - (k - above) + 1).values
    every = torch.cat([vector.rows(a, b).abs_().reshape(-1) for a, b in _row_blocks(vector.shape)])
    return every.kthvalue(n - k + 1).values


def _ties_lora(
    named: Mapping[str, AdapterWeights],
    scale: float,
    merge: _Merger,
    svd_rank: int,
    partial: Mapping[str, list[str]],
) -> tuple[AdapterWeights, dict]:
    dtype = _result_dtype(named)
    compute = torch.promote_types(dtype, torch.float32)
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    errors: dict[str, float] = {}
    discarded = total = 0.0
    for module in _union(named):
        terms = _lora_terms(named, module, scale)
        task = _low_rank([t for t in terms if t[0] == "task_src"], terms, compute)
        gap = _low_rank([t for t in terms if t[0] != "task_src"], terms, compute)
        merged = merge(task, gap, module)
        refuse_nonfinite(f"LoRA module {module!r}: the merged ΔW", merged)
        generator = module_generator(0, f"svd:{module}", merged.device)
        new_A, new_B, lost, norm = low_rank_factors(merged, svd_rank, generator)
        del merged
        new_A, new_B = new_A.to(dtype), new_B.to(dtype)
        refuse_nonfinite(f"LoRA module {module!r}: the truncated lora_A", new_A)
        refuse_nonfinite(f"LoRA module {module!r}: the truncated lora_B", new_B)
        tensors[module] = {"lora_A": new_A, "lora_B": new_B}
        errors[module] = math.sqrt(lost / norm) if norm > 0 else 0.0
        discarded, total = discarded + lost, total + norm
    return _lora_adapter(named, tensors, partial), svd_record(svd_rank, discarded, total, errors)


def _lora_terms(named: Mapping[str, AdapterWeights], module: str, scale: float) -> list[tuple]:
    """``(role, c·B, A)`` of each input adapting ``module``, ``c`` its coefficient in ``τ_T`` or ``τ_L``
    (``s_T``, ``t·s_tgt``, ``−t·s_src``; ``s`` the input's LoRA scaling), in float64."""
    weight = {"task_src": 1.0, "ref_tgt": scale, "ref_src": -scale}
    terms = []
    for role, adapter in named.items():
        if module not in adapter.tensors:
            continue
        lora_A, lora_B, scaling = checked_lora_factors(adapter, module, role)
        terms.append((role, lora_B.double() * (weight[role] * scaling), lora_A.double()))
    return terms


def _low_rank(terms: list[tuple], every: list[tuple], dtype: torch.dtype) -> Vector:
    """``Σ c_i·B_i·A_i`` over ``terms`` as the factors of one :class:`Vector` in ``dtype`` (zero factors of rank 1
    if ``terms`` is empty)."""
    _, some_B, some_A = every[0]
    if not terms:
        zeros = (some_B.new_zeros(some_B.shape[0], 1), some_A.new_zeros(1, some_A.shape[1]))
        return Vector(factors=tuple(z.to(dtype) for z in zeros))
    lora_B = torch.cat([b for _, b, _ in terms], dim=1).to(dtype)
    lora_A = torch.cat([a for _, _, a in terms], dim=0).to(dtype)
    return Vector(factors=(lora_B, lora_A))


def core_bases(terms: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Q_B, Q_A)``: the left singular vectors of the stacked ``[c_i·B_i]`` (``out × R``) and the right ones
    of the stacked ``[A_i]`` (``in × R``), from thin SVDs, for the ``(role, c·B, A)`` terms of one module."""
    q_b = torch.linalg.svd(torch.cat([b for _, b, _ in terms], dim=1), full_matrices=False).U
    q_a = torch.linalg.svd(torch.cat([a for _, _, a in terms], dim=0), full_matrices=False).Vh.T
    return q_b, q_a


def _core_lora(
    named: Mapping[str, AdapterWeights], scale: float, merge: _Merger, partial: Mapping[str, list[str]]
) -> AdapterWeights:
    dtype = _result_dtype(named)
    tensors: dict[str, dict[str, torch.Tensor]] = {}
    for module in _union(named):
        terms = _lora_terms(named, module, scale)
        q_b, q_a = core_bases(terms)
        cores = {"task": torch.zeros(q_b.shape[1], q_a.shape[1], dtype=torch.float64)}
        cores["gap"] = cores["task"].clone()
        for role, lora_B, lora_A in terms:
            cores["task" if role == "task_src" else "gap"] += (q_b.T @ lora_B) @ (lora_A @ q_a)
        merged = merge(Vector(cores["task"]), Vector(cores["gap"]), module)
        new_B, new_A = (q_b @ merged).to(dtype), q_a.T.contiguous().to(dtype)
        refuse_nonfinite(f"LoRA module {module!r}: the core-space lora_B", new_B)
        tensors[module] = {"lora_A": new_A, "lora_B": new_B}
    return _lora_adapter(named, tensors, partial)


def _lora_adapter(
    named: Mapping[str, AdapterWeights], tensors: dict, partial: Mapping[str, list[str]]
) -> AdapterWeights:
    ranks = {module: parts["lora_A"].shape[0] for module, parts in tensors.items()}
    template = named["task_src"].config
    return AdapterWeights(
        merged_lora_config(template, ranks, _keep_targeting(named, list(tensors), partial)), tensors
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
        merged = merge(Vector(task), Vector(scale * (tgt - src)), module).exp().to(dtype)
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
