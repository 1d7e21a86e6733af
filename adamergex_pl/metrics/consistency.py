"""CrossX cross-lingual consistency: accuracy, Consistency_k and AC3_k over parallel multiple-choice items.

Definitions (SeaEval, arXiv:2309.04766; CrossIn, arXiv:2404.11932) for languages ``L``, parallel items
``i = 1..N``, prediction ``â_i^l`` and gold ``a_i^l`` (option letters):

* ``Acc_l = mean_i 1[â_i^l = a_i^l]`` and ``Acc = mean_l Acc_l``.
* For ``S ⊆ L`` with ``|S| = k``: ``M_S = mean_i 1[â_i^l is the same option for all l ∈ S]``, right or
  wrong; ``Consistency_k = mean of M_S over all C(|L|, k) subsets S``, for ``k = 2..|L|``.
* ``AC3_k = 2·Acc·Consistency_k / (Acc + Consistency_k + 1e-10)``.

CrossIn reports ``k = 3`` over en, zh, vi, es. No answer (``None``) is wrong and agrees with nothing; a missing
(item, language) cell is left out of ``Acc_l`` and every ``M_S`` with that language (NaN when nothing is left).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any, Literal

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat, rank_zero_warn

from adamergex_pl.errors import InvalidTypeError, InvalidValueError
from adamergex_pl.metrics.options import option_index

MISSING = -1  # gold code of a missing (item, language) cell
NO_ANSWER = 26  # prediction code for "no valid option"; it sorts after every letter (0-25)
_EPSILON = 1e-10


def encode_pred(pred: str | None, num_options: int) -> int:
    """Code of a predicted option (``"B"``, ``"(B)"``, ``"(B) text"``): its index, or :data:`NO_ANSWER` for None.

    Raises:
        TypeError, ValueError: As :func:`adamergex_pl.metrics.options.option_index`.
    """
    return NO_ANSWER if pred is None else option_index(pred, num_options)


def encode_gold(gold: str, num_options: int) -> int:
    """Code of a gold option: its 0-based index (see :func:`encode_pred` for the accepted forms).

    Raises:
        TypeError, ValueError: As :func:`adamergex_pl.metrics.options.option_index`.
    """
    return option_index(gold, num_options)


def consistency_from_codes(pred: Tensor, gold: Tensor, languages: Sequence[str]) -> dict[str, Tensor]:
    """The module docstring's metrics as float64 scalars from ``[N, |L|]`` code matrices.

    ``pred`` holds option indices or :data:`NO_ANSWER`, ``gold`` :data:`MISSING` for a missing cell.
    """
    present = gold >= 0
    answered = present & (pred >= 0) & (pred < NO_ANSWER)
    correct = answered & (pred == gold)
    per_language = correct.sum(0).to(torch.float64) / present.sum(0).to(torch.float64)
    accuracy = per_language.mean()
    result = {f"{label}/accuracy": per_language[column] for column, label in enumerate(languages)}
    result["accuracy"] = accuracy
    for k in range(2, len(languages) + 1):
        agreement = []
        for subset in combinations(range(len(languages)), k):
            columns = list(subset)
            complete = present[:, columns].all(dim=1)
            agree = answered[:, columns].all(dim=1) & (pred[:, columns] == pred[:, columns[:1]]).all(dim=1)
            agreement.append(agree.sum().to(torch.float64) / complete.sum().to(torch.float64))
        consistency = torch.stack(agreement).mean()
        result[f"consistency_{k}"] = consistency
        result[f"ac3_{k}"] = 2 * accuracy * consistency / (accuracy + consistency + _EPSILON)
    return result


def check_languages(languages: Sequence[str]) -> list[str]:
    """Return ``languages`` as a list after checking it holds at least two distinct non-empty strings.

    Raises:
        TypeError: If it is not a sequence of strings.
        ValueError: If it has fewer than two entries, an empty one, or a duplicate.
    """
    if isinstance(languages, str) or not isinstance(languages, Sequence):
        raise InvalidTypeError(
            f"languages={languages!r} must be a list of language labels, e.g. ['en', 'zh', 'vi', 'es']"
        )
    labels = list(languages)
    if len(labels) < 2:
        raise InvalidValueError(
            f"languages={labels!r} has fewer than 2 languages; consistency compares at least two languages "
            "(for one language use an accuracy metric)"
        )
    for position, label in enumerate(labels):
        if not isinstance(label, str) or not label:
            raise InvalidTypeError(f"languages[{position}]={label!r} must be a non-empty string")
        if label in labels[:position]:
            raise InvalidValueError(f"languages lists {label!r} twice; list each language once")
    return labels


def consistency_scores(
    pred: Mapping[str, Sequence[str | None]], gold: Mapping[str, Sequence[str | None]], num_options: int = 4
) -> dict[str, float]:
    """Accuracy, Consistency_k and AC3_k of in-memory predictions (the reference implementation).

    ``pred`` and ``gold`` map each language (in output order) to items ``0..N-1``, the same index being the
    same question; a None gold marks an item missing there (its prediction must be None too).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If languages or lengths differ, a letter is malformed, or a prediction has no gold.

    Example:
        >>> pred = {"en": ["A", "B"], "zh": ["A", "C"]}
        >>> scores = consistency_scores(pred, gold={"en": ["A", "B"], "zh": ["A", "B"]})
        >>> scores["en/accuracy"], scores["zh/accuracy"], scores["consistency_2"], round(scores["ac3_2"], 4)
        (1.0, 0.5, 0.5, 0.6)
    """
    if not isinstance(pred, Mapping) or not isinstance(gold, Mapping):
        raise InvalidTypeError(
            "pred and gold must be dicts mapping each language to a list of option letters"
        )
    languages = check_languages(list(pred))
    if set(gold) != set(languages):
        raise InvalidValueError(
            f"pred has languages {sorted(pred)} but gold has {sorted(gold)}; give both the same languages"
        )
    num_items = len(pred[languages[0]])
    pred_codes: list[list[int]] = []
    gold_codes: list[list[int]] = []
    for language in languages:
        preds, golds = pred[language], gold[language]
        if len(preds) != num_items or len(golds) != num_items:
            raise InvalidValueError(
                f"language {language!r} has {len(preds)} predictions and {len(golds)} golds, expected "
                f"{num_items} of each (the item count of {languages[0]!r}); align items by index"
            )
        column_pred, column_gold = [], []
        for item, (one_pred, one_gold) in enumerate(zip(preds, golds, strict=True)):
            if one_gold is None:
                if one_pred is not None:
                    raise InvalidValueError(
                        f"item {item} in {language!r} has prediction {one_pred!r} but no gold; give its gold "
                        "answer or set the prediction to None too"
                    )
                column_pred.append(NO_ANSWER)
                column_gold.append(MISSING)
            else:
                column_pred.append(encode_pred(one_pred, num_options))
                column_gold.append(encode_gold(one_gold, num_options))
        pred_codes.append(column_pred)
        gold_codes.append(column_gold)
    pred_matrix = torch.tensor(pred_codes, dtype=torch.long).reshape(len(languages), num_items).T
    gold_matrix = torch.tensor(gold_codes, dtype=torch.long).reshape(len(languages), num_items).T
    scores = consistency_from_codes(pred_matrix, gold_matrix, languages)
    return {key: float(value) for key, value in scores.items()}


_STATES = ("item_index", "language_index", "pred_code", "gold_code")
_ABOVE_ALL = NO_ANSWER + 1  # neutral element of amin over codes


class CrossLingualConsistency(Metric):
    """Per-language accuracy, ``accuracy``, ``consistency_k`` and ``ac3_k`` of parallel multiple-choice items.

    Args:
        languages: Language labels in output order, at least two.
        num_items: Number of parallel items (150 for Cross-MMLU), or None: the items are those recorded.
        num_options: Options per item (letters ``A`` onwards).
        missing: ``"exclude"`` a missing (item, language) cell at ``compute`` or raise (``"error"``).
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

        ``preds`` and ``targets`` as in :func:`encode_pred` (no None target); ``language`` is one label or one
        per prediction; ``item_index`` is each prediction's item in the parallel benchmark.

        Raises:
            TypeError: If an input has the wrong type.
            ValueError: If lengths differ, or a language, item index or letter is out of range.
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
        """``<language>/accuracy``, ``accuracy``, ``consistency_k`` and ``ac3_k`` over all recorded cells.

        Raises:
            ValueError: If a cell was recorded with two different golds, or ``missing="error"`` and a cell is missing.
        """
        pred, gold = self._dense_codes()
        return consistency_from_codes(pred, gold, self.languages)
