"""Multiple-choice scoring by the model's log-likelihood of each option given the prompt.

For a prompt ``x`` and options ``o_1 … o_K`` (token sequences), the score of option ``k`` is

    s_k = Σ_t log p(o_k,t | x, o_k,<t)            (sum)        or        s_k / |o_k|        (length-normalised)

and the prediction is ``argmax_k s_k``. Only option tokens are scored, so a prompt holding every label word
cannot bias the choice. Options are flattened into ``B·K`` rows of ``prompt + option`` for one forward pass;
examples with fewer options get ``-inf`` scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from adamergex_pl.evaluation.language_modeling import IGNORE_INDEX


class ChoiceCollator:
    """Flattens examples ``{"prompt_ids", "option_ids", "label", "index"}`` into right-padded ``prompt + option`` rows.

    Args:
        pad_token_id: the tokenizer's pad token.
        max_length: rows longer than this lose prompt tokens from the left (options are never cut).
    """

    def __init__(self, pad_token_id: int, max_length: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.max_length = max_length

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        rows, row_example, row_option = [], [], []
        for e, example in enumerate(examples):
            for k, option in enumerate(example["option_ids"]):
                prompt = example["prompt_ids"]
                if self.max_length is not None and len(prompt) + len(option) > self.max_length:
                    prompt = prompt[len(prompt) + len(option) - self.max_length :]
                rows.append((prompt, option))
                row_example.append(e)
                row_option.append(k)
        length = max(len(p) + len(o) for p, o in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        for r, (prompt, option) in enumerate(rows):
            ids = torch.tensor([*prompt, *option], dtype=torch.long)
            input_ids[r, : len(ids)] = ids
            attention_mask[r, : len(ids)] = 1
            labels[r, len(prompt) : len(ids)] = ids[len(prompt) :]
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "row_example": torch.tensor(row_example, dtype=torch.long),
            "row_option": torch.tensor(row_option, dtype=torch.long),
            "num_options": torch.tensor([len(e["option_ids"]) for e in examples], dtype=torch.long),
            "label": torch.tensor([e.get("label", -1) for e in examples], dtype=torch.long),
            "index": torch.tensor([e.get("index", i) for i, e in enumerate(examples)], dtype=torch.long),
        }


def sequence_log_likelihoods(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row summed log-probability of the labelled tokens and their count, ``[rows]`` each."""
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1), mask.sum(-1)


@torch.no_grad()
def choice_scores(model: nn.Module, batch: dict[str, Tensor], length_normalized: bool = False) -> Tensor:
    """Scores ``[B, K_max]`` of a :class:`ChoiceCollator` batch's options (``-inf`` past an example's options)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    total, count = sequence_log_likelihoods(logits, batch["labels"])
    if length_normalized:
        total = total / count.clamp_min(1)
    num_examples = batch["num_options"].numel()
    scores = torch.full((num_examples, int(batch["num_options"].max())), float("-inf"), device=total.device)
    scores[batch["row_example"], batch["row_option"]] = total
    return scores
