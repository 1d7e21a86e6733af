"""CrossX evaluation: multiple choice by option log-likelihood, scored for accuracy and cross-lingual consistency.

Predicted letters go to one :class:`~adamergex_pl.metrics.consistency.CrossLingualConsistency` per benchmark.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.evaluation.language_modeling import Evaluator
from adamergex_pl.evaluation.option_scoring import choice_scores
from adamergex_pl.metrics.consistency import CrossLingualConsistency
from adamergex_pl.metrics.item_scores import ItemScoreMetric, ItemScores
from adamergex_pl.metrics.options import index_to_letter

# Not ``labels``: AdapterModule rewrites those for ``loss_on_prompt``, which would score the prompt.
OPTION_LABELS = "option_labels"


class CrossXEvaluator(Evaluator):
    """Accuracy, Consistency_k and AC3_k of CrossX benchmarks, per benchmark.

    Dataloader labels (``language`` in :meth:`update`) are ``<benchmark>/<lang>``.

    Args:
        benchmarks: Per benchmark name, ``(num_items, num_options)`` of its file.
        languages: The language codes, in output order (at least two).
        length_normalized: Divide each option's log-likelihood by its number of tokens.

    Raises:
        InvalidValueError: No benchmark, a benchmark name with ``/`` or ``.``, or fewer than two languages.

    Example:
        >>> evaluator = CrossXEvaluator({"cross_mmlu": (150, 4)}, ["en", "zh", "vi", "es"])
        >>> evaluator.languages[:2]
        ['cross_mmlu/en', 'cross_mmlu/zh']
        >>> # validation_step: evaluator.update(model, batch, "cross_mmlu/zh"); at epoch end: compute() ->
        >>> # {"cross_mmlu/en/accuracy": ..., "cross_mmlu/accuracy": ..., "cross_mmlu/consistency_3": ..., ...}
    """

    across_languages = True  # Consistency_k and AC3_k compare one item's answers across languages

    def __init__(
        self,
        benchmarks: Mapping[str, tuple[int, int]],
        languages: Sequence[str],
        length_normalized: bool = False,
    ) -> None:
        if not benchmarks:
            raise InvalidValueError("CrossXEvaluator needs at least one benchmark")
        bad = [name for name in benchmarks if not name or "/" in name or "." in name]
        if bad:
            raise InvalidValueError(f"benchmark names {bad} may not be empty or contain '/' or '.'")
        if len(languages) < 2:
            raise InvalidValueError(
                f"languages={list(languages)}: cross-lingual consistency needs at least two languages"
            )
        super().__init__([f"{name}/{lang}" for name in benchmarks for lang in languages])
        self.length_normalized = length_normalized
        self.metrics = nn.ModuleDict(
            {
                name: CrossLingualConsistency(list(languages), num_items=num_items, num_options=num_options)
                for name, (num_items, num_options) in benchmarks.items()
            }
        )
        self.items = ItemScoreMetric(self.languages, ["accuracy"])

    @torch.no_grad()
    def update(self, model: nn.Module, batch: dict[str, Tensor], language: str) -> None:
        """Score the options of a batch of one (benchmark, language) and record the predictions."""
        labels = batch[OPTION_LABELS] if OPTION_LABELS in batch else batch["labels"]
        scores = choice_scores(model, {**batch, "labels": labels}, self.length_normalized)
        self.update_predictions(scores.argmax(dim=-1), batch, language)

    def update_predictions(
        self, predicted: Tensor | Sequence[int], batch: dict[str, Tensor], language: str
    ) -> None:
        """Record predicted option indices for the items of ``batch`` (``index`` and gold ``label``).

        Raises:
            InvalidValueError: A label that is not ``<benchmark>/<lang>`` of this evaluator.
        """
        if language not in self.languages:
            raise InvalidValueError(
                f"dataloader label {language!r} is not one of this evaluator's {self.languages}"
            )
        benchmark, lang = language.rsplit("/", 1)
        predicted = predicted.tolist() if isinstance(predicted, Tensor) else list(predicted)
        gold = batch["label"].tolist()
        correct = [float(int(p) == int(g)) for p, g in zip(predicted, gold, strict=True)]
        self.items.update(language, batch["index"], [[c] for c in correct])
        for item, p, g in zip(torch.as_tensor(batch["index"]).tolist(), predicted, gold, strict=True):
            letter = index_to_letter(int(p))
            self.records.add(
                id=item, language=language, output=letter, parsed=letter, gold=index_to_letter(int(g)),
                correct=int(p) == int(g),
            )  # fmt: skip
        self.metrics[benchmark].update(
            [index_to_letter(int(p)) for p in predicted],
            [index_to_letter(int(g)) for g in gold],
            language=lang,
            item_index=batch["index"],
        )

    def compute(self) -> dict[str, Tensor]:
        results: dict[str, Tensor] = {}
        for name, metric in self.metrics.items():
            # every rank computes every benchmark (compute() is a collective under DDP)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*was called before the ``update``.*")
                values = metric.compute()
            if all(torch.isnan(values[f"{lang}/accuracy"]) for lang in metric.languages):
                continue  # nothing of this benchmark was evaluated (e.g. limit_val_batches)
            results.update({f"{name}/{key}": value for key, value in values.items()})
        return results

    def item_scores(self) -> dict[str, ItemScores]:
        """``<benchmark>/<lang>/accuracy``: each item's 0/1 correctness, by item index."""
        return {
            f"{label}/accuracy": ItemScores(ids, values[:, 0])
            for label, (ids, values) in self.items.per_language().items()
        }
