"""(IA)³ merging maths: multiplicative combinations of learned scaling vectors, as small pure functions.

(IA)³ rescales a module element-wise (``l ⊙ (W x)``), so adapters compose by multiplication (identity ``l = 1``).
AdaMergeX (Zhao et al., arXiv 2402.18913) takes ``⊕ = ⊙`` and ``⊖ = ⊘`` in
``A(T,tgt) = A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))``; with ``D = l_tgt ⊘ l_src``, "``t·D``" is either

* ``paper`` (the released code): ``l = l_T ⊙ (t·(D − 1) + 1)``, a fraction ``t`` of the way to ``D``; or
* ``loglinear``: ``l = l_T ⊙ D^t`` (``exp(t·log D)``), which needs ``D > 0``.

Both agree at ``t = 0``, ``t = 1`` and to first order around ``D = 1``; ``loglinear`` keeps every entry's sign.
AriMerge reads ``t·l_tgt`` the same two ways; a signed combination ``Σ_i w_i·A_i`` is ``Π_i l_i^{w_i}``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.merging.adapters import refuse_nonfinite


def _refuse_nonfinite(vector: torch.Tensor, what: str, module: str) -> None:
    refuse_nonfinite(f"(IA)³ module {module!r}: {what}", vector)


def _refuse_small(divisor: torch.Tensor, what: str, module: str, eps: float) -> None:
    bad = int((divisor.abs() < eps).sum())
    if bad:
        raise InvalidValueError(
            f"(IA)³ module {module!r}: {what} has {bad} of {divisor.numel()} entries with |l| < eps={eps:g}, "
            "so dividing by it would blow up; pass a smaller eps only if these entries are meaningful"
        )


def _refuse_nonpositive(base: torch.Tensor, what: str, module: str) -> None:
    bad = int((base <= 0).sum())
    if bad:
        raise InvalidValueError(
            f"(IA)³ module {module!r}: {what} has {bad} of {base.numel()} entries ≤ 0, so its real power is "
            "undefined; use ia3_mode='paper' (linear interpolation), which allows sign changes"
        )


def _finished(result: torch.Tensor, dtype: torch.dtype, module: str) -> torch.Tensor:
    out = result.to(dtype)
    _refuse_nonfinite(out, f"the merged vector (in {dtype})", module)
    return out


def ia3_adamergex(
    l_task: torch.Tensor,
    l_tgt: torch.Tensor,
    l_src: torch.Tensor,
    scale: float,
    *,
    mode: str = "paper",
    eps: float = 1e-6,
    module: str = "?",
) -> torch.Tensor:
    """AdaMergeX for one (IA)³ vector: ``l_T ⊙ (t·(D − 1) + 1)`` (paper) or ``l_T ⊙ D^t`` (loglinear).

    ``scale`` is ``t`` and ``D = l_tgt ⊘ l_src``; divisor entries with ``|l_src| < eps`` are refused.

    Raises:
        ValueError: An unknown mode, non-finite input or result, a near-zero divisor, or loglinear ``D ≤ 0``.

    Example:
        >>> ia3_adamergex(torch.ones(4), 2 * torch.ones(4), torch.ones(4), 0.5)
        tensor([1.5000, 1.5000, 1.5000, 1.5000])
    """
    for what, vector in (("l_task", l_task), ("l_tgt", l_tgt), ("l_src", l_src)):
        _refuse_nonfinite(vector, what, module)
    _refuse_small(l_src, "the divisor l_src", module, eps)
    gap = l_tgt.double() / l_src.double()
    if mode == "paper":
        factor = scale * (gap - 1.0) + 1.0
    elif mode == "loglinear":
        _refuse_nonpositive(gap, "the gap l_tgt ⊘ l_src", module)
        factor = gap.pow(scale)
    else:
        raise InvalidValueError(f"ia3_mode={mode!r} is not supported; expected 'paper' or 'loglinear'")
    return _finished(l_task.double() * factor, l_task.dtype, module)


def ia3_arimerge(
    l_task: torch.Tensor, l_tgt: torch.Tensor, scale: float, *, mode: str = "paper", module: str = "?"
) -> torch.Tensor:
    """AriMerge for one (IA)³ vector: ``l_T ⊙ (t·(l_tgt − 1) + 1)`` (paper) or ``l_T ⊙ l_tgt^t`` (loglinear).

    Raises:
        ValueError: an unknown mode, non-finite inputs, ``l_tgt ≤ 0`` in loglinear mode, or a non-finite result.

    Example:
        >>> ia3_arimerge(torch.ones(2), torch.full((2,), 3.0), 0.5)
        tensor([2., 2.])
    """
    _refuse_nonfinite(l_task, "l_task", module)
    _refuse_nonfinite(l_tgt, "l_tgt", module)
    if mode == "paper":
        factor = scale * (l_tgt.double() - 1.0) + 1.0
    elif mode == "loglinear":
        _refuse_nonpositive(l_tgt, "l_tgt", module)
        factor = l_tgt.double().pow(scale)
    else:
        raise InvalidValueError(f"ia3_mode={mode!r} is not supported; expected 'paper' or 'loglinear'")
    return _finished(l_task.double() * factor, l_task.dtype, module)


def ia3_product(
    vectors: Sequence[torch.Tensor], weights: Sequence[float], *, eps: float = 1e-6, module: str = "?"
) -> torch.Tensor:
    """The signed combination ``Σ_i w_i·A_i`` of (IA)³ adapters: ``Π_i l_i^{w_i}``.

    A negative weight divides (``|l_i| < eps`` refused); a non-integer weight needs ``l_i > 0``.

    Raises:
        ValueError: Mismatched lengths, non-finite values, near-zero divisors, or bad non-integer powers.

    Example:
        >>> ia3_product([torch.full((2,), 4.0), torch.full((2,), 2.0)], [0.5, -1.0])
        tensor([1., 1.])
    """
    if len(vectors) != len(weights) or not vectors:
        raise InvalidValueError(
            f"need one weight per vector; got {len(vectors)} vectors and {len(weights)} weights"
        )
    result = torch.ones_like(vectors[0], dtype=torch.float64)
    for index, (vector, weight) in enumerate(zip(vectors, weights, strict=True)):
        what = f"input {index} (weight {weight:g})"
        _refuse_nonfinite(vector, what, module)
        if weight < 0:
            _refuse_small(vector, what, module, eps)
        if float(weight) != int(weight):
            _refuse_nonpositive(vector, what, module)
        result = result * vector.double().pow(weight)
    return _finished(result, vectors[0].dtype, module)


def checked_log(vector: torch.Tensor, what: str, purpose: str) -> torch.Tensor:
    """``log l`` in float64, for methods that work on (IA)³ log-vectors (TIES, the gap diagnosis).

    Raises:
        ValueError: A non-finite entry, or an entry ≤ 0.
    """
    refuse_nonfinite(f"{what}: ia3_l", vector)
    bad = int((vector <= 0).sum())
    if bad:
        raise InvalidValueError(
            f"{what} has {bad} of {vector.numel()} entries ≤ 0, so its logarithm is undefined; {purpose} and "
            "needs l > 0"
        )
    return vector.double().log()
