"""Evaluation inside the validation loop: the protocol, and causal-LM loss and perplexity per language.

A DataModule's ``build_evaluator()`` gives an :class:`Evaluator`; the module calls ``update(model, batch, language)``
per batch and logs ``compute()`` under ``val/``. Causal-LM loss over labelled tokens, summed per language:

    loss = − Σ_t log p(y_t | y_<t) / #labelled tokens,        perplexity = exp(loss)

An item's score is its summed NLL ``v_i`` and token count ``w_i`` (a ratio: no bootstrap interval).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric, SumMetric

from adamergex_pl.evaluation.prediction_records import PredictionRecords
from adamergex_pl.metrics.item_scores import ItemScoreMetric, ItemScores

IGNORE_INDEX = -100


def causal_lm_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Summed next-token negative log-likelihood and the number of labelled tokens, both 0-d.

    ``logits`` is ``[batch, seq, vocab]``; ``labels`` is ``[batch, seq]`` with ``-100`` where no loss is taken.
    """
    # shift the labels, not the logits: slicing the logits would copy the step's largest tensor
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return nll, (targets != IGNORE_INDEX).sum()


def causal_lm_nll_per_row(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`causal_lm_nll` per row of the batch: ``(nll [batch], n_tokens [batch])``."""
    targets = F.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(targets.shape)
    return nll.sum(dim=1), (targets != IGNORE_INDEX).sum(dim=1)


def model_inputs(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The keys of a batch that a causal LM's forward takes.

    A packed batch passes ``position_ids`` and no attention mask (see :mod:`data_modules.packing`).
    """
    if "position_ids" in batch:
        return {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def forward_logits(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """Logits of a causal LM for a padded or packed batch, without building a key/value cache."""
    return model(**model_inputs(batch), use_cache=False).logits


class Evaluator(nn.Module):
    """Base class: metric states for a fixed list of languages.

    Args:
        languages: The validation languages, in dataloader order.

    Raises:
        ValueError: No languages, or the same language twice.
    """

    across_languages = False
    """Whether some score combines one item's results in several languages (every language needs every item)."""

    def __init__(self, languages: list[str]) -> None:
        super().__init__()
        if not languages:
            raise ValueError("an evaluator needs at least one validation language")
        if len(set(languages)) != len(languages):
            raise ValueError(f"validation languages must be distinct, got {languages}")
        self.languages = list(languages)
        self.records = PredictionRecords()

    def update(self, model: nn.Module, batch: dict[str, Tensor], language: str) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, Tensor]:
        raise NotImplementedError

    def item_scores(self) -> dict[str, ItemScores]:
        """The per-item scores behind :meth:`compute`'s per-language keys, by key; a DDP collective."""
        return {}

    def keep_predictions(self, prompt_id: str | None = None) -> None:
        """Record every item's prediction from now on (for ``predictions.jsonl``), under ``prompt_id``."""
        self.records.enable(prompt_id)

    def predictions(self) -> list[dict]:
        """The prediction records since the last :meth:`reset` (all ranks'; empty unless kept)."""
        return self.records.gathered()

    def reset(self) -> None:
        for module in self.modules():
            if isinstance(module, Metric):
                module.reset()
        self.records.clear()


class LanguageModelingEvaluator(Evaluator):
    """Token-weighted causal-LM loss and perplexity per language, plus the overall ``loss``.

    Example:
        >>> evaluator = LanguageModelingEvaluator(["en", "es"])
        >>> # in validation_step: evaluator.update(model, batch, "es")
        >>> # at epoch end: evaluator.compute() -> {"en/loss": ..., "en/perplexity": ..., "loss": ...}
    """

    def __init__(self, languages: list[str]) -> None:
        super().__init__(languages)
        # NaN is kept (torchmetrics drops it by default): a diverged model's loss is NaN, never a good number
        self.nll = nn.ModuleDict({lang: SumMetric(nan_strategy="disable") for lang in self.languages})
        self.tokens = nn.ModuleDict({lang: SumMetric() for lang in self.languages})
        self.items = ItemScoreMetric(self.languages, ["nll", "tokens"])

    @torch.no_grad()
    def update(self, model: nn.Module, batch: dict[str, Tensor], language: str) -> None:
        nll, count = causal_lm_nll_per_row(forward_logits(model, batch), batch["labels"])
        self.nll[language].update(nll.sum())
        self.tokens[language].update(count.sum().float())
        if "position_ids" not in batch:  # a packed row holds several examples: no per-item scores
            self.items.update(language, batch.get("index"), torch.stack([nll, count.float()], dim=1))

    def item_scores(self) -> dict[str, ItemScores]:
        """``<lang>/loss`` and ``<lang>/perplexity`` per example (token-weighted: no interval of a mean)."""
        scores: dict[str, ItemScores] = {}
        for lang, (ids, values) in self.items.per_language().items():
            labelled = values[:, 1] > 0  # an example without a labelled token adds nothing to the loss
            ids, nll, tokens = ids[labelled], values[labelled, 0], values[labelled, 1]
            scores[f"{lang}/loss"] = ItemScores(ids, nll, tokens)
            scores[f"{lang}/perplexity"] = ItemScores(ids, nll, tokens, transform="exp")
        return scores

    def compute(self) -> dict[str, Tensor]:
        results: dict[str, Tensor] = {}
        total_nll, total_tokens = 0.0, 0.0
        for lang in self.languages:
            # every rank computes every language (compute() is a collective under DDP), then drops empty ones
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*was called before the ``update``.*")
                nll, tokens = self.nll[lang].compute(), self.tokens[lang].compute()
            if tokens == 0:
                continue
            loss = nll / tokens.clamp_min(1)
            results[f"{lang}/loss"] = loss
            results[f"{lang}/perplexity"] = torch.exp(loss)
            total_nll, total_tokens = total_nll + nll, total_tokens + tokens
        if results:
            results["loss"] = total_nll / max(total_tokens, 1)
        return results
