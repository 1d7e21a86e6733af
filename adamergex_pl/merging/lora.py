"""LoRA merging maths: signed combinations of additive low-rank updates, as small pure tensor functions.

An input ``i`` adapts a linear layer ``W0`` by ``ΔW_i = s_i·B_i·A_i`` (``A_i``: ``r_i × in``, ``B_i``:
``out × r_i``, ``s_i = alpha_i / r_i`` or ``alpha_i / sqrt(r_i)`` with rsLoRA, per module).

AdaMergeX (Zhao et al., arXiv 2402.18913) merges ``A(T,tgt) = A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))``; LoRA is
additive, so ``⊕ = +`` and ``⊖ = −``:

    ΔW = s_T·B_T·A_T + t·(s_tgt·B_tgt·A_tgt − s_src·B_src·A_src),

the signed combination ``Σ_i w_i·ΔW_i`` with weights ``w = (1, t, −t)`` (AriMerge: ``w = (1, t)``). An input
that does not adapt a module contributes ``ΔW_i = 0`` there (zero factors). Modes:

* ``exact`` (:func:`concat_factors`): ``A = [A_1; …; A_n]`` (rows), ``B = [c_1·B_1, …, c_n·B_n]``
  (columns) with ``c_i = w_i·s_i``, so that ``B·A = Σ_i w_i·s_i·B_i·A_i`` exactly; rank ``Σ r_i``, scaling 1.
  The coefficient goes to ``B`` alone: every ``A_i`` is copied bit for bit and each ``B_i`` entry is rounded
  once (not at all when ``c_i`` is a power of two), where splitting ``sqrt(|c_i|)`` over both factors would
  round twice.
* ``factor`` (:func:`combine_factors`, the paper's released code): ``A = Σ_i w_i·A_i``, ``B = Σ_i w_i·B_i``
  element-wise. The update is ``(Σ_i w_i B_i)(Σ_j w_j A_j)``, which has the cross terms ``w_i w_j B_i A_j``
  (``i ≠ j``) between independently trained, unaligned factors: an approximation of the formula above, and
  only defined for equal ranks. Scalings are folded first, ``A_i ← sqrt(s_i)·A_i``, ``B_i ← sqrt(s_i)·B_i``
  (so each input alone is unchanged), and the result has scaling 1; with equal scalings (same ``r`` and
  ``alpha``, the usual case) this is exactly the released code's ``s·(B_T + tΔB)(A_T + tΔA)``.
* ``svd`` (:func:`truncate_factors`): the exact factors compressed to rank ``k`` without forming ``ΔW``:
  ``B = Q_B R_B``, ``Aᵀ = Q_A R_A`` (thin QR), ``R_B R_Aᵀ = U S Vᵀ`` (a small ``Σr × Σr`` SVD), then
  ``B' = Q_B U_k S_k^½`` and ``A' = S_k^½ V_kᵀ Q_Aᵀ``. This is the best rank-``k`` approximation of ``ΔW``
  (Eckart–Young); its relative Frobenius error is ``sqrt(Σ_{j>k} S_j²) / sqrt(Σ_j S_j²)``.

A merge whose result is a dense ``ΔW`` (TIES, DARE-TIES) stores it at rank ``k`` by :func:`low_rank_factors`:
for a large module a randomized range finder (Halko, Martinsson and Tropp, SIAM Review 2011, arXiv 0909.4061):
``Y = ΔW·Ω`` for a seeded Gaussian ``Ω`` (``in × (k + p)``, oversampling ``p``), one power iteration
``Q = qr(ΔW·qr(ΔWᵀ·qr(Y)))``, then the SVD of the small ``QᵀΔW = Ũ S Vᵀ`` and ``U = Q Ũ``; small modules take the
exact thin SVD. Either way ``B'A' = U_k U_kᵀ ΔW`` is an orthogonal projection of ``ΔW``, so its error is
exactly ``‖ΔW − B'A'‖_F² = ‖ΔW‖_F² − Σ_{j≤k} S_j²``, which is what is recorded; the randomized basis only makes
it somewhat larger than the best rank-``k`` error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from adamergex_pl.errors import InvalidValueError

Factors = tuple[torch.Tensor, torch.Tensor]  # (A: r × in, B: out × r)


def lora_delta(lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float = 1.0) -> torch.Tensor:
    """The dense update ``scaling·B·A`` in float64 (for references and small checks; ``out × in`` memory).

    Example:
        >>> lora_delta(torch.ones(1, 3), torch.ones(2, 1), 0.5)
        tensor([[0.5000, 0.5000, 0.5000],
                [0.5000, 0.5000, 0.5000]], dtype=torch.float64)
    """
    return scaling * (lora_B.double() @ lora_A.double())


def concat_factors(factors: Sequence[Factors], coefficients: Sequence[float], dtype: torch.dtype) -> Factors:
    """Exact signed sum of low-rank updates: ``B·A = Σ_i c_i·B_i·A_i`` by concatenating factors.

    Args:
        factors: ``(A_i, B_i)`` pairs with equal ``in`` and ``out`` sizes; ranks may differ.
        coefficients: ``c_i`` per pair (weight times the input's scaling).
        dtype: dtype of the result.

    Returns:
        ``(A, B)`` of rank ``Σ r_i``.

    Example:
        >>> A, B = concat_factors([(A1, B1), (A2, B2)], [2.0, -0.5], torch.float32)  # doctest: +SKIP
    """
    if len(factors) != len(coefficients) or not factors:
        raise InvalidValueError(
            f"need one coefficient per factor pair; got {len(factors)} pairs, {len(coefficients)}"
        )
    lora_A = torch.cat([a.to(dtype) for a, _ in factors], dim=0)
    lora_B = torch.cat(
        [(b.double() * c).to(dtype) for (_, b), c in zip(factors, coefficients, strict=True)], dim=1
    )
    return lora_A, lora_B


def combine_factors(
    factors: Sequence[Factors], weights: Sequence[float], scalings: Sequence[float], dtype: torch.dtype
) -> Factors:
    """The released code's element-wise merge: ``A = Σ w_i·sqrt(s_i)·A_i``, ``B = Σ w_i·sqrt(s_i)·B_i``.

    Args:
        factors: ``(A_i, B_i)`` pairs, all of the same shapes (equal ranks).
        weights: ``w_i`` per pair.
        scalings: ``s_i > 0`` per pair, folded into both factors.
        dtype: dtype of the result (which has scaling 1).

    Raises:
        ValueError: shapes differ or a scaling is not positive.

    Example:
        >>> A, B = combine_factors([(A_T, B_T), (A_tgt, B_tgt), (A_src, B_src)],  # doctest: +SKIP
        ...                        [1.0, t, -t], [2.0, 2.0, 2.0], torch.float32)
    """
    if not (len(factors) == len(weights) == len(scalings)) or not factors:
        raise InvalidValueError("need one weight and one scaling per factor pair")
    shapes = {(tuple(a.shape), tuple(b.shape)) for a, b in factors}
    if len(shapes) != 1:
        raise InvalidValueError(f"element-wise merging needs equal factor shapes; got {sorted(shapes)}")
    if any(not s > 0 for s in scalings):
        raise InvalidValueError(
            f"element-wise merging folds sqrt(scaling) into the factors; got scalings {scalings}"
        )
    lora_A = sum(
        w * math.sqrt(s) * a.double() for (a, _), w, s in zip(factors, weights, scalings, strict=True)
    )
    lora_B = sum(
        w * math.sqrt(s) * b.double() for (_, b), w, s in zip(factors, weights, scalings, strict=True)
    )
    return lora_A.to(dtype), lora_B.to(dtype)


def truncate_factors(lora_A: torch.Tensor, lora_B: torch.Tensor, rank: int) -> tuple[torch.Tensor, ...]:
    """Best rank-``rank`` factors of ``B·A`` via thin QR of each factor and an SVD of the small core.

    Never forms the ``out × in`` matrix: cost ``O((out + in)·r²)`` for ``r = A.shape[0]``.

    Args:
        lora_A: ``r × in``.
        lora_B: ``out × r``.
        rank: the rank to keep (``≥ 1``); at most ``min(r, out, in)`` is kept.

    Returns:
        ``(A', B', discarded, total)``: the factors in the input dtype, and ``‖ΔW − B'A'‖_F²`` and ``‖ΔW‖_F²``
        as float64 scalars, so that errors can be aggregated over modules.

    Raises:
        ValueError: ``rank < 1``.

    Example:
        >>> A8, B8, lost, total = truncate_factors(A24, B24, 8)  # doctest: +SKIP
        >>> relative_error = (lost / total).sqrt()  # doctest: +SKIP
    """
    if rank < 1:
        raise InvalidValueError(f"svd rank={rank} must be at least 1")
    q_b, r_b = torch.linalg.qr(lora_B.double())
    q_a, r_a = torch.linalg.qr(lora_A.double().T)
    u, s, vh = torch.linalg.svd(r_b @ r_a.T)
    keep = min(rank, s.numel())
    root = s[:keep].sqrt()
    new_B = (q_b @ u[:, :keep]) * root
    new_A = (root[:, None] * vh[:keep]) @ q_a.T
    squares = s.square()
    return new_A.to(lora_A.dtype), new_B.to(lora_B.dtype), squares[keep:].sum(), squares.sum()


OVERSAMPLE, POWER_ITERATIONS = 8, 1  # of the randomized range finder (bench/bench_merge.py measures both)


def low_rank_factors(
    matrix: torch.Tensor, rank: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Rank-``rank`` LoRA factors of a dense ``out × in`` matrix, without its full decomposition.

    Args:
        matrix: the dense update (float32 or float64; the factors have its dtype).
        rank: the rank to keep (``≥ 1``); at most ``min(out, in)`` is kept.
        generator: seeds the random probe (the result is deterministic for a given generator state).

    Returns:
        ``(A', B', discarded, total)``: ``B'·A' = U_k S_k V_kᵀ``, and ``‖matrix − B'A'‖_F²`` and ``‖matrix‖_F²``
        as floats.

    Raises:
        ValueError: ``rank < 1``.

    Example:
        >>> A, B, lost, total = low_rank_factors(torch.eye(3), 2, torch.Generator().manual_seed(0))
        >>> A.shape, B.shape, round(lost / total, 6)
        (torch.Size([2, 3]), torch.Size([3, 2]), 0.333333)
    """
    if rank < 1:
        raise InvalidValueError(f"svd rank={rank} must be at least 1")
    keep = min(rank, *matrix.shape)
    width = keep + OVERSAMPLE
    if 2 * width >= min(matrix.shape):
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        squares = s.double().square()
        lost, total = float(squares[keep:].sum()), float(squares.sum())
    else:
        probe = torch.randn(matrix.shape[1], width, generator=generator, dtype=matrix.dtype)
        basis = torch.linalg.qr(matrix @ probe).Q
        for _ in range(POWER_ITERATIONS):
            basis = torch.linalg.qr(matrix @ torch.linalg.qr(matrix.T @ basis).Q).Q
        u, s, vh = torch.linalg.svd(basis.T @ matrix, full_matrices=False)
        u = basis @ u
        total = float(torch.linalg.vector_norm(matrix)) ** 2
        lost = max(total - float(s[:keep].double().square().sum()), 0.0)
    root = s[:keep].sqrt()
    return root[:, None] * vh[:keep], u[:, :keep] * root, lost, total


def svd_record(rank: int, discarded: float, total: float, errors: dict[str, float]) -> dict:
    """What ``merge.json`` records of a merge stored by truncated SVD: the rank, the relative Frobenius error of
    all modules together (``sqrt(Σ discarded / Σ total)`` of squared singular values), the largest and every
    module's own error."""
    return {
        "rank": rank,
        "relative_error": math.sqrt(discarded / total) if total > 0 else 0.0,
        "max_module_error": max(errors.values()),
        "per_module": errors,
    }
