"""CrossX cross-lingual consistency: accuracy, Consistency_k and AC3_k over parallel multiple-choice items.

Definitions (SeaEval, Wang et al., 2023, arXiv:2309.04766; used by CrossIn, arXiv:2404.11932). For
languages ``L``, items ``i = 1..N`` asked in every language with the same gold option, prediction
``â_i^l`` and gold ``a_i^l`` compared by option letter:

* ``Acc_l = mean_i 1[â_i^l = a_i^l]`` and ``Acc = mean_l Acc_l``.
* For ``S ⊆ L`` with ``|S| = k``: ``M_S = mean_i 1[â_i^l is the same option for all l ∈ S]``, right or
  wrong; ``Consistency_k = mean of M_S over all C(|L|, k) subsets S``, for ``k = 2..|L|``.
* ``AC3_k = 2·Acc·Consistency_k / (Acc + Consistency_k + 1e-10)``.

CrossIn reports ``k = 3`` over en, zh, vi, es; a uniformly random answerer over 4 options scores
``Consistency_3 = 1/16`` in expectation. SeaEval's scorer compares full choice strings for accuracy and the
first three characters (the ``"(A)"`` tag) for consistency; when every extracted answer is one of the item's
choices, as there, comparing option letters gives the same numbers.

Conventions beyond the paper (SeaEval never meets these cases):

* No answer (``None`` prediction, e.g. the extractor found no option): wrong, and agrees with nothing, not
  even another ``None``, so a model that refuses everything scores 0 consistency, not 1.
* Missing cell (the item was not evaluated in that language, e.g. a partial validation run): the item is
  left out of ``Acc_l`` for that language and of ``M_S`` for every subset ``S`` containing that language;
  the denominators count the items present. A language with no item gives NaN accuracy (hence NaN
  ``Acc`` and ``AC3_k``), a subset with no complete item gives NaN ``M_S``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations

import torch
from torch import Tensor

from adamergex_pl.errors import InvalidTypeError, InvalidValueError
from adamergex_pl.metrics.options import option_index

__all__ = [
    "MISSING",
    "NO_ANSWER",
    "check_languages",
    "consistency_from_codes",
    "consistency_scores",
    "encode_gold",
    "encode_pred",
]

MISSING = -1  # gold code of a missing (item, language) cell
NO_ANSWER = 26  # prediction code for "no valid option"; it sorts after every letter (0-25)
_EPSILON = 1e-10


def encode_pred(pred: str | None, num_options: int) -> int:
    """Code of a predicted option: its 0-based index, or :data:`NO_ANSWER` for None.

    Args:
        pred: ``"B"``, ``"(B)"``, ``"(B) text"``, or None when no option was extracted.
        num_options: Number of options per item; a letter beyond them is refused.

    Returns:
        The code.

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
    """The metrics of the module docstring from dense code matrices.

    Args:
        pred: ``[N, |L|]`` integer tensor of prediction codes (option index or :data:`NO_ANSWER`).
        gold: ``[N, |L|]`` integer tensor of gold codes, :data:`MISSING` for a missing cell.
        languages: The ``|L|`` language labels, in column order (at least 2).

    Returns:
        Float64 scalar tensors ``<language>/accuracy``, ``accuracy``, and ``consistency_k``, ``ac3_k`` for
        ``k = 2..|L|``.
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
    pred: Mapping[str, Sequence[str | None]],
    gold: Mapping[str, Sequence[str | None]],
    num_options: int = 4,
) -> dict[str, float]:
    """Accuracy, Consistency_k and AC3_k of in-memory predictions (the reference implementation).

    Args:
        pred: Per language (in the order of the output), the predicted option of items ``0..N-1``: ``"B"``,
            ``"(B)"`` or ``"(B) text"``, or None for no answer. The same item index means the same question
            in every language.
        gold: Per language (same keys), the gold options of the same items; None marks an item missing in
            that language (its prediction must then be None too).
        num_options: Number of options per item.

    Returns:
        Floats ``<language>/accuracy``, ``accuracy``, ``consistency_k`` and ``ac3_k`` for ``k = 2..|L|``.

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If the languages differ between ``pred`` and ``gold``, lengths differ, a letter is
            malformed or outside the option set, or a prediction has no gold.

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
