"""Accuracy of multiple-choice tasks (XNLI, XCOPA, PAWS-X) by option log-likelihood, per language.

For an example with prompt ``x``, options ``o_1 … o_K`` and gold option ``y``, the prediction is

    ŷ = argmax_k Σ_t log p(o_k,t | x, o_k,<t)        (or the mean over the option's tokens, length-normalised)

and ``accuracy_l = mean_i 1[ŷ_i = y_i]`` over the examples of language ``l``; ``accuracy`` is the macro average
over languages. The score reads only the model's probabilities of option tokens (batches built by
:class:`~data_modules.task_collator.TaskCollator`, scored by
:func:`~adamergex_pl.evaluation.shared_prompt_scoring.shared_prompt_scores`, which computes each prompt once, or by
:func:`~adamergex_pl.evaluation.option_scoring.choice_scores` for one row of prompt + option per option):
no text is generated and nothing is parsed, so a prompt that contains every label word gives every option the
same context and cannot score. Ties go to the first option.

States are torchmetrics ``MulticlassAccuracy`` counters (integers, summed across DDP ranks).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from adamergex_pl.evaluation.language_modeling import Evaluator
from adamergex_pl.evaluation.option_scoring import choice_scores
from adamergex_pl.evaluation.shared_prompt_scoring import shared_prompt_scores


class ChoiceEvaluator(Evaluator):
    """Per-language accuracy of the option with the highest log-likelihood.

    ``compute()`` returns ``<task>/<lang>/accuracy`` for every language and ``<task>/accuracy``, their mean;
    the module logs them under ``val/``.

    Args:
        task: the task name, the first part of the keys (``xnli``).
        languages: the validation languages, in dataloader order.
        num_options: options per example (2 for XCOPA and PAWS-X, 3 for XNLI).
        length_normalized: rank by mean instead of summed token log-likelihood.

    Raises:
        ValueError: no languages, a language twice, or fewer than two options.

    Example:
        >>> evaluator = ChoiceEvaluator("xnli", ["de", "zh"], num_options=3)
        >>> # validation_step: evaluator.update(model, batch, "de")   (batch from TaskCollator("choice", ...))
        >>> # epoch end: evaluator.compute() -> {"xnli/de/accuracy": ..., "xnli/zh/accuracy": ..., "xnli/accuracy": ...}
    """

    def __init__(
        self, task: str, languages: list[str], num_options: int, length_normalized: bool = False
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

    def predict(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """The index of the best-scoring option of every example, ``[B]``."""
        if "prompt_input_ids" in batch:  # each prompt once (SharedPromptCollator)
            return shared_prompt_scores(model, batch, self.length_normalized).argmax(dim=-1)
        rows = {**batch, "labels": batch["option_labels"]}  # option tokens only (see TaskCollator)
        return choice_scores(model, rows, self.length_normalized).argmax(dim=-1)

    @torch.no_grad()
    def update(self, model: nn.Module, batch: dict[str, Tensor], language: str) -> None:
        self.accuracy[language].update(self.predict(model, batch), batch["label"])

    def compute(self) -> dict[str, Tensor]:
        results: dict[str, Tensor] = {}
        for lang in self.languages:  # every rank computes every language: compute() is a collective under DDP
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*was called before the ``update``.*")
                results[f"{self.task}/{lang}/accuracy"] = self.accuracy[lang].compute().float()
        results[f"{self.task}/accuracy"] = torch.stack(list(results.values())).mean()
        return results
