"""Accuracy of multiple-choice tasks (XNLI, XCOPA, PAWS-X) by option log-likelihood, per language.

For an example with prompt ``x``, options ``o_1 … o_K`` and gold option ``y``, the prediction is

    ŷ = argmax_k Σ_t log p(o_k,t | x, o_k,<t)        (or the mean over the option's tokens, length-normalised)

and ``accuracy_l = mean_i 1[ŷ_i = y_i]``; ``accuracy`` is the macro average. Nothing is generated or parsed;
ties go to the first option.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from adamergex_pl.evaluation.language_modeling import Evaluator
from adamergex_pl.evaluation.option_scoring import choice_scores
from adamergex_pl.evaluation.shared_prompt_scoring import shared_prompt_scores
from adamergex_pl.metrics.item_scores import ItemScoreMetric, ItemScores


class ChoiceEvaluator(Evaluator):
    """Per-language accuracy of the option with the highest log-likelihood.

    ``compute()`` returns ``<task>/<lang>/accuracy`` for every language and their mean ``<task>/accuracy``.

    Args:
        task: The task name, the first part of the keys (``xnli``).
        languages: The validation languages, in dataloader order.
        num_options: Options per example (2 for XCOPA and PAWS-X, 3 for XNLI).
        length_normalized: Rank by mean instead of summed token log-likelihood.
        tokenizer: Optional; decodes the chosen option into prediction records.

    Raises:
        ValueError: No languages, a language twice, or fewer than two options.

    Example:
        >>> evaluator = ChoiceEvaluator("xnli", ["de", "zh"], num_options=3)
        >>> # validation_step: evaluator.update(model, batch, "de")   (batch from TaskCollator("choice", ...))
        >>> # epoch end: evaluator.compute() -> {"xnli/de/accuracy": ..., "xnli/zh/accuracy": ..., "xnli/accuracy": ...}
    """

    def __init__(
        self,
        task: str,
        languages: list[str],
        num_options: int,
        length_normalized: bool = False,
        tokenizer=None,
    ) -> None:
        super().__init__(languages)
        if num_options < 2:
            raise ValueError(f"num_options={num_options}; a multiple-choice task needs at least two options")
        self.task = task
        self.num_options = num_options
        self.length_normalized = length_normalized
        self.accuracy = nn.ModuleDict(
            {lang: MulticlassAccuracy(num_classes=num_options, average="micro") for lang in self.languages}
        )
        self.items = ItemScoreMetric(self.languages, ["accuracy"])
        self.tokenizer = tokenizer

    def option_scores(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """The (summed or mean) log-likelihood of every option of every example, ``[B, K]``."""
        if "prompt_input_ids" in batch:  # each prompt once (SharedPromptCollator)
            return shared_prompt_scores(model, batch, self.length_normalized)
        rows = {**batch, "labels": batch["option_labels"]}  # option tokens only (see TaskCollator)
        return choice_scores(model, rows, self.length_normalized)

    def predict(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """The index of the best-scoring option of every example, ``[B]``."""
        return self.option_scores(model, batch).argmax(dim=-1)

    @torch.no_grad()
    def update(self, model: nn.Module, batch: dict[str, Tensor], language: str) -> None:
        scores = self.option_scores(model, batch)
        predicted = scores.argmax(dim=-1)
        self.accuracy[language].update(predicted, batch["label"])
        correct = (predicted == batch["label"]).to(torch.float64)
        correct[~scores.isfinite().all(dim=-1)] = torch.nan  # no option wins on non-finite scores
        self.items.update(language, batch.get("index"), correct.unsqueeze(1))
        if self.records.enabled:
            self._record(batch, language, scores, predicted)

    def _record(self, batch: dict[str, Tensor], language: str, scores: Tensor, predicted: Tensor) -> None:
        gold = batch["label"].tolist()
        ids = batch["index"].tolist() if "index" in batch else [None] * len(gold)
        for e, (item, choice) in enumerate(zip(ids, predicted.tolist(), strict=True)):
            self.records.add(
                id=item,
                language=language,
                output=self._option_text(batch, e, choice),
                parsed=choice,
                gold=gold[e],
                correct=choice == gold[e],
                scores={"option_log_likelihoods": [round(float(v), 6) for v in scores[e].tolist()]},
            )

    def _option_text(self, batch: dict[str, Tensor], example: int, option: int) -> str | None:
        """The text of one option of one example (None without a tokenizer)."""
        if self.tokenizer is None:
            return None
        row = int(((batch["row_example"] == example) & (batch["row_option"] == option)).nonzero()[0])
        if "option_input_ids" in batch:
            tokens = batch["option_input_ids"][row][batch["option_attention_mask"][row] == 1]
        else:
            tokens = batch["input_ids"][row][batch["option_labels"][row] != -100]
        return self.tokenizer.decode(tokens.tolist(), skip_special_tokens=True)

    def item_scores(self) -> dict[str, ItemScores]:
        """``<task>/<lang>/accuracy``: every item's 0/1 correctness, by item id."""
        return {
            f"{self.task}/{lang}/accuracy": ItemScores(ids, values[:, 0])
            for lang, (ids, values) in self.items.per_language().items()
        }

    def compute(self) -> dict[str, Tensor]:
        """Accuracy per language and their mean; NaN for a language where an item's option scores were not
        finite (a diverged model is never scored by the arbitrary option ``argmax`` picks)."""
        results: dict[str, Tensor] = {}
        items = self.items.per_language()
        for lang in self.languages:  # every rank computes every language: compute() is a collective under DDP
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*was called before the ``update``.*")
                accuracy = self.accuracy[lang].compute().float()
            if lang in items and bool(items[lang][1].isnan().any()):
                accuracy = torch.full_like(accuracy, torch.nan)
            results[f"{self.task}/{lang}/accuracy"] = accuracy
        results[f"{self.task}/accuracy"] = torch.stack(list(results.values())).mean()
        return results
