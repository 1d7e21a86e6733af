"""``CrossLingualConsistency``: CrossX accuracy, Consistency_k and AC3_k as a DDP-safe torchmetrics metric.

Formulas and conventions (no answer, missing cells): :mod:`adamergex_pl.metrics.consistency`.

State design. Consistency couples the languages of an item, and under DDP the items, and even one language's
items, are sharded across ranks, so partial sums cannot be reduced. Each ``update`` appends records
``(item_index, language_index, pred_code, gold_code)`` to four list states reduced with ``"cat"``; a sync
gathers every rank's records, and ``compute`` builds the dense ``[N, |L|]`` matrices from them. A cell
recorded more than once (``DistributedSampler`` pads the last ranks with repeats of the first items) counts
once. Duplicates whose gold differs are an indexing bug and raise; duplicates whose prediction differs (a
padded repeat generated in another batch can differ under low precision) keep the earliest letter and warn.

Each list state starts with an empty int64 tensor (also after ``reset``): torchmetrics stands in a float32
empty tensor for a rank that has no record, and gathering it next to other ranks' int64 tensors aborts a
gloo/NCCL all-gather (``Received data size doesn't match expected size``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat, rank_zero_warn

from adamergex_pl.errors import InvalidTypeError, InvalidValueError
from adamergex_pl.metrics.consistency import (
    MISSING,
    NO_ANSWER,
    check_languages,
    consistency_from_codes,
    encode_gold,
    encode_pred,
)

__all__ = ["CrossLingualConsistency"]

_STATES = ("item_index", "language_index", "pred_code", "gold_code")
_ABOVE_ALL = NO_ANSWER + 1  # neutral element of amin over codes


class CrossLingualConsistency(Metric):
    """Per-language accuracy, ``accuracy``, ``consistency_k`` and ``ac3_k`` of parallel multiple-choice items.

    ``compute()`` returns float64 scalars ``<language>/accuracy`` for every language, ``accuracy``, and
    ``consistency_k``, ``ac3_k`` for ``k = 2..len(languages)``; the caller adds ``val/<benchmark>/``.

    Args:
        languages: Language labels in output order, at least two (``["en", "zh", "vi", "es"]``).
        num_items: Number of parallel items, if known (150 for Cross-MMLU): item indices must then be below
            it, and ``missing="error"`` checks all of them. None: the items are those recorded.
        num_options: Options per item (letters ``A`` to the ``num_options``-th letter).
        missing: What a missing (item, language) cell does at ``compute``: ``"exclude"`` leaves the item out
            of that language's accuracy and of the subsets containing that language; ``"error"`` raises.
        **kwargs: Passed to :class:`torchmetrics.Metric`.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If ``languages`` has fewer than two distinct labels, or another argument is out of range.

    Example:
        >>> metric = CrossLingualConsistency(languages=["en", "zh"], num_items=2)
        >>> metric.update(["A", "B"], ["A", "B"], language="en", item_index=[0, 1])
        >>> metric.update(["(A) yes", "C"], ["(A) 是", "(B) 否"], language="zh", item_index=[0, 1])
        >>> {key: round(float(value), 4) for key, value in metric.compute().items()}
        {'en/accuracy': 1.0, 'zh/accuracy': 0.5, 'accuracy': 0.75, 'consistency_2': 0.5, 'ac3_2': 0.6}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    item_index: list[Tensor]
    language_index: list[Tensor]
    pred_code: list[Tensor]
    gold_code: list[Tensor]

    def __init__(
        self,
        languages: list[str],
        num_items: int | None = None,
        num_options: int = 4,
        missing: Literal["exclude", "error"] = "exclude",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.languages = check_languages(languages)
        if num_items is not None and (isinstance(num_items, bool) or not isinstance(num_items, int)):
            raise InvalidTypeError(f"num_items={num_items!r} must be an int or None")
        if num_items is not None and num_items < 1:
            raise InvalidValueError(
                f"num_items={num_items} must be at least 1, or None to use the recorded items"
            )
        if isinstance(num_options, bool) or not isinstance(num_options, int) or not 2 <= num_options <= 26:
            raise InvalidValueError(f"num_options={num_options!r} must be an int from 2 to 26")
        if missing not in ("exclude", "error"):
            raise InvalidValueError(f"missing={missing!r} is not supported; expected 'exclude' or 'error'")
        self.num_items = num_items
        self.num_options = num_options
        self.missing = missing
        self._positions = {label: position for position, label in enumerate(self.languages)}
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._seed_states()

    def _seed_states(self) -> None:
        for name in _STATES:
            getattr(self, name).append(torch.zeros(0, dtype=torch.long, device=self.device))

    def reset(self) -> None:
        """Clear the records (keeping the typed empty tensor each list state starts with)."""
        super().reset()
        self._seed_states()

    def _language_positions(self, language: str | Sequence[str], count: int) -> list[int]:
        labels = [language] * count if isinstance(language, str) else list(language)
        if len(labels) != count:
            raise InvalidValueError(
                f"got {count} predictions but {len(labels)} languages; pass one language for the batch "
                "or one per prediction"
            )
        positions = []
        for label in labels:
            position = self._positions.get(label)
            if position is None:
                raise InvalidValueError(
                    f"language={label!r} is not one of this metric's languages {self.languages}; pass one of "
                    "them, or add it to `languages` when creating the metric"
                )
            positions.append(position)
        return positions

    def _item_indices(self, item_index: Sequence[int] | Tensor, count: int) -> list[int]:
        if isinstance(item_index, Tensor):
            if item_index.is_floating_point() or item_index.is_complex() or item_index.dim() > 1:
                raise InvalidTypeError(
                    f"item_index must be a 1-D integer tensor, got {item_index.dtype} {item_index.shape}"
                )
            indices = [int(value) for value in item_index.reshape(-1).tolist()]
        elif isinstance(item_index, Sequence) and not isinstance(item_index, str):
            indices = list(item_index)
            for value in indices:
                if isinstance(value, bool) or not hasattr(value, "__index__"):
                    raise InvalidTypeError(
                        f"item_index holds {value!r}; item indices must be ints (dataset positions)"
                    )
            indices = [int(value) for value in indices]
        else:
            raise InvalidTypeError(
                f"item_index must be a list of ints or an integer tensor, got {type(item_index).__name__}"
            )
        if len(indices) != count:
            raise InvalidValueError(
                f"got {count} predictions but {len(indices)} item indices; pass one index per prediction"
            )
        for value in indices:
            if value < 0 or (self.num_items is not None and value >= self.num_items):
                bound = f"below num_items={self.num_items}" if self.num_items is not None else "non-negative"
                raise InvalidValueError(
                    f"item_index {value} is out of range; item indices must be {bound} (the position of the "
                    "item in the parallel benchmark, the same in every language)"
                )
        return indices

    def update(
        self,
        preds: Sequence[str | None],
        targets: Sequence[str],
        language: str | Sequence[str],
        item_index: Sequence[int] | Tensor,
    ) -> None:
        """Record predicted and gold options of a batch of (item, language) cells.

        Args:
            preds: Predicted options, ``"B"``, ``"(B)"`` or ``"(B) text"``, or None when no option was
                extracted (counted wrong and never consistent).
            targets: Gold options in the same forms (not None).
            language: The batch's language label, or one label per prediction.
            item_index: Per prediction, the item's index in the parallel benchmark (the same question has
                the same index in every language).

        Raises:
            TypeError: If an input has the wrong type.
            ValueError: If lengths differ, a language is not the metric's, an item index is out of range, or
                a letter is malformed or outside the option set.
        """
        if isinstance(preds, str) or not isinstance(preds, Sequence):
            raise InvalidTypeError(
                f"preds must be a list of option letters (or None), got {type(preds).__name__}"
            )
        if isinstance(targets, str) or not isinstance(targets, Sequence) or len(targets) != len(preds):
            raise InvalidValueError(
                f"targets must be a list with one gold option per prediction ({len(preds)}), got {targets!r}"
            )
        positions = self._language_positions(language, len(preds))
        indices = self._item_indices(item_index, len(preds))
        pred_codes = [encode_pred(pred, self.num_options) for pred in preds]
        gold_codes = []
        for gold in targets:
            if gold is None:
                raise InvalidValueError(
                    "a gold option is None; every recorded cell needs its gold option letter"
                )
            gold_codes.append(encode_gold(gold, self.num_options))
        for name, values in zip(_STATES, (indices, positions, pred_codes, gold_codes), strict=True):
            getattr(self, name).append(torch.tensor(values, dtype=torch.long, device=self.device))

    def _dense_codes(self) -> tuple[Tensor, Tensor]:
        """``[N, |L|]`` prediction and gold codes from the (synced) records, each cell counted once."""
        items, langs, preds, golds = (dim_zero_cat(getattr(self, name)).long() for name in _STATES)
        width = len(self.languages)
        num_items = (
            self.num_items if self.num_items is not None else int(items.max()) + 1 if items.numel() else 0
        )
        size = num_items * width
        cells = items * width + langs
        filled = torch.bincount(cells, minlength=size) > 0

        def reduce(values: Tensor, how: str, start: int) -> Tensor:
            return torch.full((size,), start, dtype=torch.long, device=values.device).scatter_reduce(
                0, cells, values, how
            )

        gold_low, gold_high = reduce(golds, "amin", _ABOVE_ALL), reduce(golds, "amax", MISSING)
        pred_low, pred_high = reduce(preds, "amin", _ABOVE_ALL), reduce(preds, "amax", MISSING)
        for kind, low, high in (("gold", gold_low, gold_high), ("pred", pred_low, pred_high)):
            clashes = torch.nonzero(filled & (low != high)).flatten()
            if clashes.numel() == 0:
                continue
            cell = int(clashes[0])
            where = f"item {cell // width} in {self.languages[cell % width]!r}"
            if kind == "gold":
                raise InvalidValueError(
                    f"{clashes.numel()} (item, language) cells were recorded with different gold options, "
                    f"e.g. {where}; item_index must identify the same question in every update"
                )
            rank_zero_warn(
                f"{clashes.numel()} (item, language) cells were predicted twice with different options, e.g. "
                f"{where} (a repeated item from DistributedSampler padding generated in another batch); the "
                "earliest letter is kept"
            )
        if self.missing == "error" and not bool(filled.all()):
            absent = torch.nonzero(~filled).flatten()
            cell = int(absent[0])
            raise InvalidValueError(
                f"{absent.numel()} of {size} (item, language) cells have no prediction, e.g. item "
                f"{cell // width} in {self.languages[cell % width]!r}; evaluate every item in every "
                "language, or use missing='exclude'"
            )
        pred = torch.where(filled, pred_low, torch.full_like(pred_low, NO_ANSWER)).reshape(num_items, width)
        gold = torch.where(filled, gold_high, torch.full_like(gold_high, MISSING)).reshape(num_items, width)
        return pred, gold

    def compute(self) -> dict[str, Tensor]:
        """Accuracy, consistency and AC3 over all recorded cells (after the DDP sync).

        Returns:
            ``<language>/accuracy``, ``accuracy``, ``consistency_k`` and ``ac3_k`` (float64 scalars).

        Raises:
            ValueError: If a cell was recorded with two different golds, or ``missing="error"`` and a cell is
                missing.
        """
        pred, gold = self._dense_codes()
        return consistency_from_codes(pred, gold, self.languages)
