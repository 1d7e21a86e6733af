"""Option scoring with each prompt computed once: the scores of ``choice_scores``, without repeating the prompt.

For a prompt ``x`` (``P`` tokens) and options ``o_1 … o_K`` the score is the same as in
:mod:`adamergex_pl.evaluation.option_scoring`,

    s_k = log p(o_k,1 | x) + Σ_{t≥2} log p(o_k,t | x, o_k,<t)        (divided by |o_k| when length-normalised),

but computed in two passes instead of one pass over ``K`` rows of ``prompt + option``:

1. the prompts alone, left-padded to a common length: the last position gives ``log p(o_k,1 | x)`` for every
   option, and the keys/values of every layer are kept (a ``transformers`` cache);
2. the options alone, right-padded, each row attending to its example's cached prompt (the cache rows are
   repeated per option with ``Cache.reorder_cache``): position ``t`` gives ``log p(o_k,t+1 | x, o_k,≤t)``.

When every option of a batch is one token (XNLI's or XCOPA's label words with a subword tokenizer), pass 1 alone
gives every score, from the prompt's last logits, and runs without a cache: one forward of ``P`` tokens per
example, as lm-evaluation-harness scores one-token continuations. A one-token option is its own mean, so the
length normalisation changes nothing there.

Positions are counted from each prompt's first real token (``position_ids`` explicit, as ``generate`` does for
left-padded prompts), so the logits equal those of an unpadded pass up to floating-point rounding. The prompt
pass costs ``P`` tokens per example instead of ``K·P``: about ``K``× less compute when prompts are much longer
than the options (XNLI: 3 one-word options after a prompt of a hundred tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from adamergex_pl.evaluation.option_scoring import sequence_log_likelihoods


class SharedPromptCollator:
    """Batches multiple-choice examples as left-padded prompts plus right-padded option rows.

    Each example is ``{"prompt_ids": [...], "option_ids": [[...], ...], "label": k, "index": i}``. Output keys:
    ``prompt_input_ids``/``prompt_attention_mask`` ``[B, P]``, ``option_input_ids``/``option_attention_mask``
    ``[R, O]`` (one row per option), ``row_example``/``row_option`` ``[R]``, ``num_options``, ``label`` and
    ``index`` ``[B]``.

    Args:
        pad_token_id: the tokenizer's pad token.
        max_length: a prompt plus its longest option longer than this loses prompt tokens from the left.

    Raises:
        ValueError: an example with an empty option.

    Example:
        >>> batch = SharedPromptCollator(0)([{"prompt_ids": [1, 7], "option_ids": [[5], [6, 6]], "label": 1}])
        >>> batch["prompt_input_ids"].tolist(), batch["option_input_ids"].tolist()
        ([[1, 7]], [[5, 0], [6, 6]])
    """

    def __init__(self, pad_token_id: int, max_length: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.max_length = max_length

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        prompts, options, row_example, row_option = [], [], [], []
        for e, example in enumerate(examples):
            if any(len(option) == 0 for option in example["option_ids"]):
                raise ValueError(
                    f"example {example.get('index', e)} has an empty option; every option needs a token"
                )
            prompt = list(example["prompt_ids"])
            longest = max(len(option) for option in example["option_ids"])
            if self.max_length is not None and len(prompt) + longest > self.max_length:
                prompt = prompt[len(prompt) + longest - self.max_length :]
            prompts.append(prompt)
            for k, option in enumerate(example["option_ids"]):
                options.append(list(option))
                row_example.append(e)
                row_option.append(k)
        prompt_ids, prompt_mask = _pad(prompts, self.pad_token_id, left=True)
        option_ids, option_mask = _pad(options, self.pad_token_id, left=False)
        return {
            "prompt_input_ids": prompt_ids,
            "prompt_attention_mask": prompt_mask,
            "option_input_ids": option_ids,
            "option_attention_mask": option_mask,
            "row_example": torch.tensor(row_example, dtype=torch.long),
            "row_option": torch.tensor(row_option, dtype=torch.long),
            "num_options": torch.tensor([len(e["option_ids"]) for e in examples], dtype=torch.long),
            "label": torch.tensor([e.get("label", -1) for e in examples], dtype=torch.long),
            "index": torch.tensor([e.get("index", i) for i, e in enumerate(examples)], dtype=torch.long),
        }


def _pad(rows: list[list[int]], pad_token_id: int, left: bool) -> tuple[Tensor, Tensor]:
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(length - len(row), length) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


@torch.no_grad()
def shared_prompt_scores(
    model: nn.Module, batch: dict[str, Tensor], length_normalized: bool = False
) -> Tensor:
    """Scores ``[B, K_max]`` of every option (``-inf`` where an example has fewer), as ``choice_scores``.

    Args:
        model: a causal LM that takes ``position_ids``, ``past_key_values`` and ``logits_to_keep``
            (``transformers`` decoder models, also wrapped by PEFT).
        batch: from :class:`SharedPromptCollator`.
        length_normalized: divide each option's log-likelihood by its number of tokens.
    """
    prompt_mask = batch["prompt_attention_mask"]
    prompt_positions = (prompt_mask.cumsum(-1) - 1).clamp_min(0)
    rows = batch["row_example"]
    options, option_mask = batch["option_input_ids"], batch["option_attention_mask"]
    single_token = options.shape[1] == 1  # every option of the batch is one token: pass 1 scores them all
    prompt = model(
        input_ids=batch["prompt_input_ids"],
        attention_mask=prompt_mask,
        position_ids=prompt_positions,
        use_cache=not single_token,
        logits_to_keep=1,
    )
    first = (
        torch.log_softmax(prompt.logits[:, -1].float(), dim=-1)[rows].gather(-1, options[:, :1]).squeeze(-1)
    )
    if single_token:
        return _per_example(first, batch)

    cache = prompt.past_key_values
    cache.reorder_cache(rows)  # one copy of its example's prompt per option row
    starts = prompt_mask.sum(-1)[rows].unsqueeze(-1)
    rest = model(
        input_ids=options,
        attention_mask=torch.cat([prompt_mask[rows], option_mask], dim=-1),
        position_ids=starts + torch.arange(options.shape[1], device=options.device),
        past_key_values=cache,
        use_cache=True,
    )
    labels = options.masked_fill(option_mask == 0, -100)
    later, _ = sequence_log_likelihoods(rest.logits, labels)
    total, count = first + later, option_mask.sum(-1)
    if length_normalized:
        total = total / count.clamp_min(1)
    return _per_example(total, batch)


def _per_example(total: Tensor, batch: dict[str, Tensor]) -> Tensor:
    """The option rows' scores as ``[B, K_max]``, ``-inf`` where an example has fewer options."""
    scores = torch.full((batch["num_options"].numel(), int(batch["num_options"].max())), float("-inf"))
    scores = scores.to(total.device)
    scores[batch["row_example"], batch["row_option"]] = total
    return scores
