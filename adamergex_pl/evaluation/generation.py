"""Greedy decoding that returns only what the model generated, never the prompt.

Decoding is set explicitly (greedy, one beam, no sampling) through a fresh ``GenerationConfig``, because some
checkpoints ship sampling defaults in ``generation_config.json``. The completion is decoded from the tokens
after the prompt, so an answer parser can never read an answer out of the prompt.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


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
