"""LoRA merging maths: signed combinations of additive low-rank updates, as small pure tensor functions.

An input ``i`` adapts a linear layer ``W0`` by ``ΔW_i = s_i·B_i·A_i`` (``A_i``: ``r_i × in``, ``B_i``:
``out × r_i``, ``s_i = alpha_i / r_i`` or ``alpha_i / sqrt(r_i)`` with rsLoRA, per module).

AdaMergeX (Zhao et al., arXiv 2402.18913) merges ``A(T,tgt) = A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))``; LoRA is
additive, so ``⊕ = +`` and ``⊖ = −``:

    ΔW = s_T·B_T·A_T + t·(s_tgt·B_tgt·A_tgt − s_src·B_src·A_src),

i.e. ``Σ_i w_i·ΔW_i`` with ``w = (1, t, −t)`` (AriMerge: ``(1, t)``); a missing module has ``ΔW_i = 0``. Modes:

* ``exact`` (:func:`concat_factors`): ``A = [A_1; …; A_n]``, ``B = [c_1·B_1, …, c_n·B_n]`` with
  ``c_i = w_i·s_i``; rank ``Σ r_i``, scaling 1, every ``A_i`` copied bit for bit.
* ``factor`` (:func:`combine_factors`, the released code): ``A = Σ_i w_i·A_i``, ``B = Σ_i w_i·B_i`` after
  folding ``sqrt(s_i)`` into both; equal ranks only, and the cross terms ``w_i w_j B_i A_j`` make it approximate.
* ``svd`` (:func:`truncate_factors`): the best rank-``k`` approximation of the exact factors (Eckart–Young),
  relative Frobenius error ``sqrt(Σ_{j>k} S_j²) / sqrt(Σ_j S_j²)``.

A dense ``ΔW`` (TIES, DARE-TIES) is stored at rank ``k`` by :func:`low_rank_factors`: for a large module a
randomized range finder (Halko, Martinsson and Tropp, arXiv 0909.4061; seeded Gaussian probe of ``k + p`` columns,
one power iteration), else the exact thin SVD. Either way ``B'A' = U_k U_kᵀ ΔW`` is an orthogonal projection, so
its error ``‖ΔW − B'A'‖_F² = ‖ΔW‖_F² − Σ_{j≤k} S_j²`` is exact, and at least the best rank-``k`` error.
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

    ``factors`` are ``(A_i, B_i)`` pairs with equal ``in`` and ``out`` sizes (ranks may differ); ``c_i`` is the
    weight times the input's scaling. Returns ``(A, B)`` of rank ``Σ r_i`` in ``dtype``.
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

    Raises:
        ValueError: Shapes differ or a scaling is not positive.
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

    Never forms ``ΔW``; at most ``min(r, out, in)`` is kept. Returns
    ``(A', B', discarded, total)``: the factors in the input dtype, ``‖ΔW − B'A'‖_F²`` and ``‖ΔW‖_F²`` (float64).

    Raises:
        ValueError: ``rank < 1``.
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
    """``merge.json``'s record of an SVD merge: rank, relative Frobenius errors (total, largest, per module)."""
    return {
        "rank": rank,
        "relative_error": math.sqrt(discarded / total) if total > 0 else 0.0,
        "max_module_error": max(errors.values()),
        "per_module": errors,
    }
