"""Turning task records into tokenized examples: training pairs, option sets, generation prompts.

Tokenization at a boundary. A prompt and what follows it (an option, a training target) are tokenized
together, ``tokenize(prompt + prefix + text)``, and split where that sequence stops agreeing with
``tokenize(prompt)``: the tokens a subword tokenizer produces for ``text`` depend on what precedes it
(SentencePiece's word-initial ``▁``), so tokenizing the two halves apart would score tokens the model never
sees at inference. Every row is therefore exactly the tokenization of its full text.

Fitting a prompt. A prompt that does not fit its token budget first loses the end of its long field
(``context`` for XQuAD, the article for XL-Sum), so that the instruction, the question and the answer cue
survive; only if that is not enough are tokens cut from the left.
"""

from __future__ import annotations

from typing import Any

from data_modules.collate import IGNORE_INDEX
from data_modules.instruction_format import PromptTemplate


def _common_prefix(sequences: list[list[int]]) -> int:
    length = min(len(s) for s in sequences)
    for position in range(length):
        token = sequences[0][position]
        if any(s[position] != token for s in sequences[1:]):
            return position
    return length


def render_prompt(
    tokenizer, template: PromptTemplate, fields: dict[str, Any], budget: int, truncate_field: str | None
) -> tuple[str | None, list[int]]:
    """The prompt text and ids of ``fields``, with at most ``budget`` tokens (see the module docstring).

    The text is ``None`` when tokens had to be cut from the left: the ids then no longer spell a text.
    """
    text = template.render(fields)
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    if len(ids) > budget and truncate_field and fields.get(truncate_field):
        field_ids = tokenizer(str(fields[truncate_field]), add_special_tokens=False)["input_ids"]
        keep = len(field_ids)
        for _ in range(4):  # decoding and re-encoding a cut field can shift a few tokens
            keep = max(0, keep - (len(ids) - budget))
            fields = {**fields, truncate_field: tokenizer.decode(field_ids[:keep])}
            text = template.render(fields)
            ids = tokenizer(text, add_special_tokens=True)["input_ids"]
            if len(ids) <= budget or keep == 0:
                break
    if len(ids) > budget:
        bos = tokenizer.bos_token_id
        ids = [bos, *ids[len(ids) - budget + 1 :]] if ids and ids[0] == bos else ids[len(ids) - budget :]
        return None, ids
    return text, ids


def split_continuations(
    tokenizer, prompt_text: str | None, prompt_ids: list[int], continuations: list[str]
) -> tuple[list[int], list[list[int]]]:
    """``(prompt_ids, [continuation_ids, ...])`` whose concatenations tokenize ``prompt + continuation``.

    With ``prompt_text`` ``None`` (a prompt cut from the left) each continuation is tokenized on its own.

    Raises:
        ValueError: a continuation adds no token (an empty option or target).
    """
    if prompt_text is None:
        split = prompt_ids, [tokenizer(c, add_special_tokens=False)["input_ids"] for c in continuations]
    else:
        full = [tokenizer(prompt_text + c, add_special_tokens=True)["input_ids"] for c in continuations]
        shared = _common_prefix([prompt_ids, *full])
        split = prompt_ids[:shared], [f[shared:] for f in full]
    for text, ids in zip(continuations, split[1], strict=True):
        if not ids:
            raise ValueError(f"the option or target {text!r} adds no token after the prompt")
    return split


def choice_example(
    tokenizer, prompt_text: str | None, prompt_ids: list[int], options: list[str], label: int, index: int
) -> dict[str, Any]:
    """A multiple-choice example for :class:`~data_modules.collate.TaskCollator`."""
    prompt, option_ids = split_continuations(tokenizer, prompt_text, prompt_ids, options)
    return {"prompt_ids": prompt, "option_ids": option_ids, "label": label, "index": index}


def training_example(
    tokenizer, prompt_text: str | None, prompt_ids: list[int], target: str, max_length: int
) -> dict[str, Any] | None:
    """``prompt + target + EOS`` with the loss on the target only; ``None`` if no target token fits."""
    prompt, (target_ids,) = split_continuations(tokenizer, prompt_text, prompt_ids, [target])
    target_ids = [*target_ids, tokenizer.eos_token_id]
    input_ids = (prompt + target_ids)[:max_length]
    if len(input_ids) <= len(prompt):
        return None
    labels = ([IGNORE_INDEX] * len(prompt) + target_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels}
