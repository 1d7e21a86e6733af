"""Finiteness checks for merge inputs and outputs: NaN or inf is never merged silently nor written."""

from __future__ import annotations

import torch

from adamergex_pl.errors import InvalidValueError


def count_nonfinite(tensor: torch.Tensor) -> int:
    """How many entries of ``tensor`` are NaN or ±inf.

    The common all-finite case costs one reduction without a temporary: a sum is finite only when every entry
    is (NaN and inf propagate); an overflowing sum of finite entries falls back to the exact count.
    """
    if tensor.numel() == 0 or bool(torch.isfinite(tensor.sum())):
        return 0
    return int((~torch.isfinite(tensor)).sum())


def refuse_nonfinite(what: str, tensor: torch.Tensor) -> None:
    """Raise ``ValueError("<what> has N of M entries NaN or inf")`` unless every entry is finite."""
    bad = count_nonfinite(tensor)
    if bad:
        raise InvalidValueError(f"{what} has {bad} of {tensor.numel()} entries NaN or inf")
