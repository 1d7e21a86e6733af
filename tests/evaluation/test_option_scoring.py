"""Option scoring: batched log-likelihoods equal one forward pass per option."""

from __future__ import annotations

import pytest
import torch

from adamergex_pl.evaluation.option_scoring import ChoiceCollator, choice_scores


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_llama_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval(), AutoTokenizer.from_pretrained(
        tiny_llama_path
    )


@torch.no_grad()
def _log_likelihood(model, prompt_ids, option_ids):
    ids = torch.tensor([[*prompt_ids, *option_ids]])
    log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    positions = range(len(prompt_ids) - 1, ids.shape[1] - 1)
    return sum(float(log_probs[p, ids[0, p + 1]]) for p in positions)


def test_batched_scores_match_one_pass_per_option(model_and_tokenizer):
    model, tok = model_and_tokenizer
    examples = [
        {"prompt": "2+2=", "options": [" four", " five", " x"], "label": 0},
        {"prompt": "Capital of France:", "options": [" Paris", " Rome"], "label": 0},
    ]
    encoded = [
        {
            "prompt_ids": tok(e["prompt"]).input_ids,
            "option_ids": [tok(o, add_special_tokens=False).input_ids for o in e["options"]],
            "label": e["label"],
        }
        for e in examples
    ]
    batch = ChoiceCollator(tok.pad_token_id)(encoded)
    scores = choice_scores(model, batch)
    normalized = choice_scores(model, batch, length_normalized=True)
    assert scores.shape == (2, 3) and scores[1, 2] == float("-inf")
    for e, example in enumerate(encoded):
        for k, option in enumerate(example["option_ids"]):
            expected = _log_likelihood(model, example["prompt_ids"], option)
            assert float(scores[e, k]) == pytest.approx(expected, abs=1e-4)
            assert float(normalized[e, k]) == pytest.approx(expected / len(option), abs=1e-4)
