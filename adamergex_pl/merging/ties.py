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
a time: its two vectors and the merge are dense (three ``out × in`` tensors, kept for the next module; 0.5 GiB at
Llama-2-7B's MLP shape), and the element-wise work runs in two lanes of threads when torch may use two
(:class:`_Lanes`), which change no value (the matrix products and the SVD use torch's threads and may round
differently with another thread count).

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
from concurrent.futures import ThreadPoolExecutor
from functools import partial

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
from adamergex_pl.merging.checks import check_mergeable, check_partial_modules
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
_BLOCK, _CHUNK = 1 << 15, 32  # entries per block of a dense pass (torch's parallel grain); blocks per chunk
_SAMPLE = 1 << 18  # magnitudes sampled to bracket a threshold


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
    allow_partial_modules: bool = False,
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
        allow_partial_modules: accept modules that only some inputs adapt (a missing one counts as zero); the
            result records it. Refused by default (:func:`check_partial_modules`).

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
    check_partial_modules(named, allow_partial_modules=allow_partial_modules)
    drops = method.startswith("dare")
    options = {"density": float(density), "seed": seed if drops else None}
    provenance = _provenance(named, [1.0, scale, -scale])
    merge = _Merger(float(density), drops, seed)
    lora = next(iter(named.values())).adapter_type == "lora"

    def result(adapter: AdapterWeights, svd: dict | None = None, *, mode: str) -> MethodResult:
        record = (adapter, method, mode, scale, provenance, partial, svd, options)
        return MethodResult(*record, allow_partial_modules=allow_partial_modules)

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
        return result(_core_lora(named, scale, merge, partial), mode="core")
    if lora:
        if isinstance(svd_rank, bool) or not isinstance(svd_rank, int) or svd_rank < 1:
            raise InvalidValueError(
                f"svd_rank={svd_rank!r}: a LoRA TIES merge is stored by truncated SVD and needs svd_rank, a "
                "positive integer (e.g. 16)"
            )
        return result(*_ties_lora(named, scale, merge, svd_rank, partial), mode="svd")
    if svd_rank is not None:
        raise InvalidValueError(
            f"svd_rank={svd_rank!r} only applies to LoRA inputs; (IA)³ vectors are merged exactly: drop it"
        )
    return result(_ties_ia3(named, scale, merge, partial), mode="log")


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
    """``τ_T`` or ``τ_L`` of one module: a dense tensor or factors ``(B, A)`` of ``B·A``."""

    def __init__(self, dense: torch.Tensor | None = None, factors: tuple | None = None) -> None:
        self.dense, self.factors = dense, factors
        self.shape = dense.shape if dense is not None else (factors[0].shape[0], factors[1].shape[1])
        self.dtype = dense.dtype if dense is not None else torch.promote_types(*(f.dtype for f in factors))

    def scaled(self, factor: float) -> Vector:
        """``factor`` times this vector (its dense tensor, or its ``B`` factor)."""
        if self.dense is not None:
            return Vector(self.dense * factor)
        return Vector(factors=(self.factors[0] * factor, self.factors[1]))

    def rows(self, start: int, stop: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """Rows ``start:stop``, in a fresh tensor or in ``out`` (of their shape and dtype)."""
        if self.dense is not None:
            return self.dense[start:stop].clone() if out is None else out.copy_(self.dense[start:stop])
        if out is None:
            return self.factors[0][start:stop] @ self.factors[1]
        return torch.mm(self.factors[0][start:stop], self.factors[1], out=out)


class _Merger:
    """``merge(τ_T, τ_L)`` of one module: both vectors dense (one matrix product each from the factors, with
    torch's threads; kept for the threshold pass and the merge), then the rest in two :class:`_Lanes`, block
    by block: each vector's threshold pass or drop in a lane of its own (one generator's draws are serial),
    then the trims and the elected-sign mean (:func:`_elect_and_average`) by halves of the rows. The blocks
    never depend on the lanes: given the dense vectors, one lane or two give the same merge bit for bit. The
    dense vectors' memory is kept for the next module (two ``out × in`` of the largest).
    """

    def __init__(self, density: float, drops: bool, seed: int) -> None:
        self.density, self.drops, self.seed = density, drops, seed
        self.space = torch.empty(0)

    def __call__(
        self, task: Vector, gap: Vector, module: str, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The merged vector, in ``out`` if given (of ``task``'s shape and the vectors' promoted dtype)."""
        dtype, shape = torch.promote_types(task.dtype, gap.dtype), task.shape
        vectors, cuts = (task, gap), [None, None]
        if self.drops and self.density < 1.0:  # the kept entries are divided by density: divide the factors
            vectors = tuple(vector.scaled(1.0 / self.density) for vector in vectors)
        x, y = (v.rows(0, shape[0], out=d) for v, d in zip(vectors, self._dense(shape, dtype), strict=True))
        merged = torch.empty(shape, dtype=dtype) if out is None else out
        step = _row_blocks(shape)[0][1]
        with _Lanes() as lanes:
            if self.density < 1.0 and not self.drops:  # keep |τ| ≥ the k-th largest: |τ| > the float below it
                counts = [self._kept_count(v) for v in vectors]
                brackets = [_bracket(d, k) for d, k in zip((x, y), counts, strict=True)]
                bands = lanes.run([partial(_band, d, b) for d, b in zip((x, y), brackets, strict=True)])
                cuts = [
                    _float_below(_kth(d, k, b, band))
                    for d, k, b, band in zip((x, y), counts, brackets, bands, strict=True)
                ]
            elif self.density < 1.0:
                lanes.run(
                    [
                        partial(self._drop, d, module_generator(self.seed, f"{module}{part}"), step)
                        for d, part in ((x, ""), (y, ":gap"))
                    ]
                )
            half = (shape[0] // step + 1) // 2 * step  # whole blocks
            lanes.run(
                [
                    partial(_elect_rows, x, y, merged, cuts, step, a, b)
                    for a, b in ((0, half), (half, shape[0]))
                ]
            )
        return merged

    def _dense(self, shape: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Two tensors of ``shape``, in memory reused from one module to the next."""
        n = math.prod(shape)
        if self.space.dtype != dtype or self.space.numel() < 2 * n:
            self.space = torch.empty(0)  # freed before the larger one is allocated
            self.space = torch.empty(2 * n, dtype=dtype)
        return self.space[:n].view(shape), self.space[n : 2 * n].view(shape)

    def _drop(self, rows: torch.Tensor, generator: torch.Generator, step: int) -> None:
        """Zero each entry of ``rows`` whose float32 draw is ``≥ density`` (draws in order of rows)."""
        draw = torch.empty((step, *rows.shape[1:]), dtype=torch.float32)
        for start in range(0, rows.shape[0], step):
            block = rows[start : start + step]
            keep = torch.rand(block.shape, generator=generator, out=draw[: block.shape[0]])
            block.mul_(keep.lt_(self.density))

    def _kept_count(self, vector: Vector) -> int:
        return int(self.density * math.prod(vector.shape))


def _elect_rows(x, y, merged, cuts, step, start, stop) -> None:
    """Rows ``start:stop``, block by block: the trims at ``cuts`` (if any) of ``x`` and ``y``, then the mean."""
    total, sign = torch.empty((2, min(step, max(stop - start, 1)), *x.shape[1:]), dtype=x.dtype)
    sign.fill_(1.0)
    for a in range(start, stop, step):
        b = min(a + step, stop)
        blocks = [x[a:b], y[a:b]]
        if cuts[0] is not None:
            for block, cut in zip(blocks, cuts, strict=True):
                torch.hardshrink(block, cut, out=block)
        _elect_and_average(*blocks, total[: b - a], sign[: b - a], out=merged[a:b])


def _float_below(threshold: torch.Tensor | float) -> float:
    """The largest float of ``threshold``'s dtype below it: ``|τ| > that`` keeps ``|τ| ≥ threshold``."""
    threshold = torch.as_tensor(threshold)
    return float(torch.nextafter(threshold, threshold.new_zeros(())))


class _Lanes:
    """Two lanes of work: the calling thread, and a side thread when torch may use more than one
    (``torch.get_num_threads() > 1``; otherwise the tasks run one after the other).

    A lane's task runs element-wise operations on blocks of at most ``_BLOCK`` entries, which torch processes
    without starting threads of its own (its parallel grain is 32768 entries), and no matrix product (MKL
    would start threads for it): two lanes keep two cores busy with no synchronisation inside an operation.
    With torch's own threads on such small operations, on a shared machine, the threads waited for each
    other at every operation far longer than they worked (``bench/README.md``).
    """

    def __enter__(self) -> _Lanes:
        self.side = ThreadPoolExecutor(1, "ties-lane") if torch.get_num_threads() > 1 else None
        return self

    def __exit__(self, *exc) -> None:
        if self.side is not None:
            self.side.shutdown()

    def run(self, tasks: list) -> list:
        """The results of one or two tasks: the second on the side thread while the first runs here."""
        if self.side is None or len(tasks) < 2:
            return [task() for task in tasks]
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def in_callers_mode():  # a thread starts without the caller's autograd modes (Lightning's validate
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):  # runs in inference mode)
                return tasks[1]()

        later = self.side.submit(in_callers_mode)
        try:
            first = tasks[0]()
        finally:
            second = later.result()  # wait even if the first raised: both use the caller's tensors
        return [first, second]


def _elect_and_average(
    x: torch.Tensor, y: torch.Tensor, total: torch.Tensor, sign: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """TIES's elect and disjoint mean of two kept vectors into ``out`` (``x``, ``y``, ``total`` are overwritten;
    ``sign`` must hold ones of any sign).

    With ``s = x + y`` and ``c = ±1`` the sign bit of ``s`` (``x + (−x) = +0`` in IEEE arithmetic: a tie
    elects ``+``): where both entries have the elected sign (``f = [min(c·x, c·y) > 0]``) their mean ``s/2``,
    elsewhere the entry of the elected sign, ``m = c·max(c·x, c·y)`` (0 where both are 0). The blend
    ``m − f·m + ½·f·s`` with ``f ∈ {0, 1}`` is exact: the result equals the branching definition bit for bit,
    in element-wise passes that vectorize (a ``torch.where`` on an unpredictable mask branches per entry).
    """
    torch.add(x, y, out=total)
    torch.copysign(sign, total, out=sign)
    x.mul_(sign)
    y.mul_(sign)
    torch.maximum(x, y, out=out)
    torch.minimum(x, y, out=y)
    y.sign_().clamp_(min=0)  # f: 1 where both agree with the elected sign
    out.mul_(sign)
    out.addcmul_(y, out, value=-1.0)
    return out.addcmul_(y, total, value=0.5)


def _row_blocks(shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """``(start, stop)`` of blocks of rows of at most ``_BLOCK`` entries (one row at least; one block for a 1-D
    vector)."""
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
    dense = vector.rows(0, vector.shape[0])
    return _kth(dense, k, _bracket(dense, k))


def _bracket(dense: torch.Tensor, k: int) -> tuple[float, float] | None:
    """``(low, high)`` around the ``k``-th largest magnitude of ``dense`` from a seeded sample of its entries
    (``None``: too few entries)."""
    n = dense.numel()
    if k == 0 or n <= _SAMPLE:
        return None
    generator = torch.Generator().manual_seed(0)
    sample = dense.reshape(-1)[torch.randint(n, (_SAMPLE,), generator=generator)].abs_()
    rank = (n - k + 0.5) / n * _SAMPLE  # the answer's position among the sorted sample
    margin = 6.0 * math.sqrt(_SAMPLE * (k / n) * (1 - k / n)) + 8.0
    low, high = (  # the sorted sample's entries at these positions
        float(sample.kthvalue(max(0, min(_SAMPLE - 1, int(position))) + 1).values)
        for position in (rank - margin, rank + margin)
    )
    return low, high


def _kth(dense: torch.Tensor, k: int, bracket: tuple[float, float] | None, band: tuple | None = None):
    """The ``k``-th largest magnitude of ``dense``: from its ``band`` inside ``bracket`` if it lies there (the
    band's ``kthvalue``), else from all magnitudes (``inf`` for ``k = 0``)."""
    if k == 0:
        return math.inf
    if bracket is not None:
        above, inside = _band(dense, bracket) if band is None else band
        if above < k <= above + inside.numel():
            return inside.kthvalue(inside.numel() - (k - above) + 1).values
    every = dense.abs().reshape(-1)
    return every.kthvalue(every.numel() - k + 1).values


def _band(dense: torch.Tensor, bracket: tuple[float, float] | None) -> tuple[int, torch.Tensor] | None:
    """One pass by blocks: how many magnitudes of ``dense`` lie above ``bracket``, and those inside it."""
    if bracket is None:
        return None
    low, high = bracket
    above, inside = 0, []
    blocks = _row_blocks(dense.shape)
    block_shape = (blocks[0][1], *dense.shape[1:])
    magnitudes = torch.empty(block_shape, dtype=dense.dtype)
    over, flags = torch.empty((2, *block_shape), dtype=torch.bool)
    for start, stop in blocks:
        magnitude = torch.abs(dense[start:stop], out=magnitudes[: stop - start])
        mask, band = over[: stop - start], flags[: stop - start]
        above += int(torch.count_nonzero(torch.gt(magnitude, high, out=mask)))
        inside.append(magnitude[torch.ge(magnitude, low, out=band).logical_xor_(mask)])  # low ≤ |τ| ≤ high
    return above, torch.cat(inside)


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
    workspace = torch.empty(0, dtype=compute)  # the merged ΔW, reused: one allocation of the largest module
    for module in _union(named):
        terms = _lora_terms(named, module, scale)
        task = _low_rank([t for t in terms if t[0] == "task_src"], terms, compute)
        gap = _low_rank([t for t in terms if t[0] != "task_src"], terms, compute)
        if workspace.numel() < math.prod(task.shape):
            workspace = None  # freed before the larger one is allocated
            workspace = torch.empty(math.prod(task.shape), dtype=compute)
        merged = merge(task, gap, module, out=workspace[: math.prod(task.shape)].view(task.shape))
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
