"""Checking a batch of predictions against its gold references, for the metrics' ``update`` methods."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from adamergex_pl.errors import InvalidTypeError, InvalidValueError

__all__ = ["check_predictions", "reference_lists"]


def _is_sequence(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def check_predictions(preds: Sequence[str]) -> list[str]:
    """Return ``preds`` (generated texts, one per example) as a list after checking it is a sequence of strings.

    Raises:
        TypeError: If ``preds`` is a single string, not a sequence, or holds a non-string.
    """
    if not _is_sequence(preds):
        raise InvalidTypeError(
            f"preds must be a list of generated strings, one per example, got {type(preds).__name__}; "
            "wrap a single prediction in a list"
        )
    preds = list(preds)
    for pred in preds:
        if not isinstance(pred, str):
            raise InvalidTypeError(
                f"prediction {pred!r} is a {type(pred).__name__}; decode generated token ids to text first"
            )
    return preds


def reference_lists(
    preds: Sequence[str], targets: Sequence[Any], is_reference: Callable[[object], bool], expected: str
) -> list[list[Any]]:
    """Pair a batch: each example's references as a non-empty list.

    Args:
        preds: Generated texts (already checked by :func:`check_predictions`).
        targets: Per example, one reference or a non-empty sequence of references.
        is_reference: Whether a value is a single reference.
        expected: Description of a single reference for error messages (e.g. ``"a string"``).

    Raises:
        TypeError: If ``targets`` or one of its entries has the wrong type.
        ValueError: If the lengths differ or an example has an empty list of references.
    """
    if not _is_sequence(targets):
        raise InvalidTypeError(
            f"targets must be a list with one entry per prediction (each {expected} or a list of them), "
            f"got {type(targets).__name__}"
        )
    if len(targets) != len(preds):
        raise InvalidValueError(
            f"got {len(preds)} predictions but {len(targets)} targets; pass exactly one target "
            "(or one list of acceptable targets) per prediction"
        )
    lists: list[list[Any]] = []
    for position, target in enumerate(targets):
        if is_reference(target):
            lists.append([target])
            continue
        if not _is_sequence(target) or not all(is_reference(ref) for ref in target):
            raise InvalidTypeError(
                f"targets[{position}]={target!r} must be {expected} or a list of them (several golds)"
            )
        if len(target) == 0:
            raise InvalidValueError(f"targets[{position}] is an empty list; give at least one gold reference")
        lists.append(list(target))
    return lists
