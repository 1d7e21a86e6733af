"""Greedy decoding that returns only what the model generated, never the prompt.

Decoding is set explicitly through a fresh ``GenerationConfig``, since some checkpoints ship sampling defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from adamergex_pl.evaluation.language_modeling import Evaluator
from adamergex_pl.metrics.item_scores import ItemScoreMetric, ItemScores
from adamergex_pl.metrics.numbers import NumberMatchAccuracy, extract_final_number
from adamergex_pl.metrics.rouge import RougeLMetric
from adamergex_pl.metrics.squad import SquadMetric


@torch.no_grad()
def greedy_generate(model: nn.Module, tokenizer, batch: dict[str, Tensor], max_new_tokens: int) -> Tensor:
    """The generated token ids ``[batch, <= max_new_tokens]`` (prompt removed; padding after EOS).

    Raises:
        ValueError: the prompts are right-padded (decoding would continue after pad tokens).
    """
    from transformers import GenerationConfig

    input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
    if (attention_mask[:, -1] == 0).any():
        raise ValueError(
            "greedy decoding needs left-padded prompts; build the batch with padding_side='left'"
        )
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    return output[:, input_ids.shape[1] :]


def greedy_completions(
    model: nn.Module, tokenizer, batch: dict[str, Tensor], max_new_tokens: int
) -> list[str]:
    """Greedy completions of a left-padded batch of prompts, decoded from the generated tokens only."""
    generated = greedy_generate(model, tokenizer, batch, max_new_tokens)
    return tokenizer.batch_decode(generated, skip_special_tokens=True)


_METRICS = {"final_number": NumberMatchAccuracy, "squad": SquadMetric, "rouge_l": RougeLMetric}


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string, stripped.

    Example:
        >>> cut_at_stops(" Paris\\nQuestion: and Rome?", ["\\n"])
        'Paris'
    """
    end = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=len(text))
    return text[:end].strip()


class GenerationEvaluator(Evaluator):
    """Greedy completions of the prompts, scored by the task's text metric per language.

    ``compute()`` returns ``<task>/<lang>/<metric>`` and the macro average ``<task>/<metric>``.

    Args:
        task: The task name, the first part of the keys (``mgsm``).
        languages: The validation languages, in dataloader order.
        tokenizer: Decodes the generated tokens (and gives pad/EOS ids to ``generate``).
        max_new_tokens: Greedy decoding length.
        metric: ``final_number``, ``squad`` or ``rouge_l``.
        stops: A completion ends at the first of these strings.

    Raises:
        ValueError: An unknown metric, a non-positive ``max_new_tokens``, or bad languages.

    Example:
        >>> evaluator = GenerationEvaluator("mgsm", ["de", "zh"], tokenizer, 256, "final_number")  # doctest: +SKIP
        >>> # validation_step: evaluator.update(model, batch, "de")   (batch from TaskCollator("generation", ...))
        >>> # epoch end: evaluator.compute() -> {"mgsm/de/accuracy": ..., "mgsm/de/no_number_rate": ..., ...}
    """

    def __init__(
        self,
        task: str,
        languages: list[str],
        tokenizer,
        max_new_tokens: int,
        metric: Literal["final_number", "squad", "rouge_l"],
        stops: Sequence[str] = (),
    ) -> None:
        super().__init__(languages)
        if metric not in _METRICS:
            raise ValueError(f"metric={metric!r}; expected one of {', '.join(_METRICS)}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be a positive integer")
        self.task = task
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.stops = tuple(stops)
        self.metric = metric
        self.scores = _METRICS[metric](languages=self.languages)
        self.items = ItemScoreMetric(self.languages, list(self.scores.score_names))

    def answers(self, model: nn.Module, batch: dict[str, Tensor]) -> list[str]:
        """The model's answers to a batch: generated text only, cut at the first stop string."""
        return [cut_at_stops(c, self.stops) for c in self._completions(model, batch)]

    def _completions(self, model: nn.Module, batch: dict[str, Tensor]) -> list[str]:
        return greedy_completions(model, self.tokenizer, batch, self.max_new_tokens)

    @torch.no_grad()
    def update(self, model: nn.Module, batch: dict[str, Tensor], language: str) -> None:
        completions = self._completions(model, batch)
        answers = [cut_at_stops(c, self.stops) for c in completions]
        rows = self.scores.score_items(answers, batch["references"], language)
        self.scores.update(answers, batch["references"], language, scores=rows)
        self.items.update(language, batch.get("index"), rows)
        if self.records.enabled:
            self._record(batch, language, completions, answers, rows)

    def _record(self, batch, language: str, completions: list[str], answers: list[str], rows) -> None:
        ids = batch["index"].tolist() if "index" in batch else [None] * len(answers)
        names = self.scores.score_names
        for item, completion, answer, gold, scores in zip(
            ids, completions, answers, batch["references"], rows, strict=True
        ):
            if self.metric == "final_number":
                number = extract_final_number(
                    answer, self.scores.language_codes[self.languages.index(language)]
                )
                parsed, correct = (None if number is None else str(number)), bool(scores[0])
            else:  # the answer as scored; exact match is the right-or-wrong of extractive QA, ROUGE has none
                parsed, correct = answer, (bool(scores[0]) if self.metric == "squad" else None)
            self.records.add(
                id=item,
                language=language,
                output=completion,
                parsed=parsed,
                gold=list(gold),
                correct=correct,
                scores={name: round(float(value), 6) for name, value in zip(names, scores, strict=True)},
            )

    def item_scores(self) -> dict[str, ItemScores]:
        """``<task>/<lang>/<score>`` for every score of the metric: each item's score, by item id."""
        scores: dict[str, ItemScores] = {}
        for lang, (ids, values) in self.items.per_language().items():
            for j, name in enumerate(self.scores.score_names):
                scores[f"{self.task}/{lang}/{name}"] = ItemScores(ids, values[:, j])
        return scores

    def compute(self) -> dict[str, Tensor]:
        return {
            f"{self.task}/{key}": value.float()
            for key, value in self.scores.compute().items()
            if not value.isnan()
        }
