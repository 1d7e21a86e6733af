"""Dynamic padding: a batch is padded to its longest example, not to ``max_length``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from adamergex_pl.evaluation.option_scoring import ChoiceCollator
from adamergex_pl.evaluation.shared_prompt_scoring import SharedPromptCollator

IGNORE_INDEX = -100


class PadCollator:
    """Pads examples (``input_ids``, optional ``labels`` and ``index``) into a batch; pads get mask 0, label -100.

    Args:
        pad_token_id: the tokenizer's pad token.
        padding_side: ``right`` for training and scoring, ``left`` for generation.
        pad_to_multiple_of: round the padded length up to a multiple, or ``None``.

    Example:
        >>> collate = PadCollator(pad_token_id=0)
        >>> collate([{"input_ids": [5, 6, 7]}, {"input_ids": [8]}])["attention_mask"].tolist()
        [[1, 1, 1], [1, 0, 0]]
    """

    def __init__(self, pad_token_id: int, padding_side: str = "right", pad_to_multiple_of: int | None = None):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}; expected 'left' or 'right'")
        self.pad_token_id = pad_token_id
        self.padding_side = padding_side
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        has_labels = "labels" in examples[0]
        input_ids = torch.full((len(examples), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
        labels = torch.full((len(examples), length), IGNORE_INDEX, dtype=torch.long) if has_labels else None
        for row, example in enumerate(examples):
            n = len(example["input_ids"])
            span = slice(length - n, length) if self.padding_side == "left" else slice(0, n)
            input_ids[row, span] = torch.tensor(example["input_ids"], dtype=torch.long)
            attention_mask[row, span] = 1
            if labels is not None:
                labels[row, span] = torch.tensor(example["labels"], dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if labels is not None:
            batch["labels"] = labels
        if "index" in examples[0]:
            batch["index"] = torch.tensor([e["index"] for e in examples], dtype=torch.long)
        return batch


class TaskCollator:
    """Collates evaluation examples of a ``choice`` or a ``generation`` task.

    Args:
        kind: ``choice`` (options to score) or ``generation`` (left-padded prompts).
        pad_token_id: the tokenizer's pad token.
        max_length: a longer choice prompt plus option loses prompt tokens from the left.
        pad_to_multiple_of: generation prompts are padded to a multiple of this.
        share_prompt: choice batches hold each prompt once, not once per option.

    Raises:
        ValueError: an unknown ``kind``.

    Example:
        >>> collate = TaskCollator("generation", pad_token_id=0)
        >>> batch = collate([{"input_ids": [1, 5], "references": ["a"], "index": 0},
        ...                  {"input_ids": [1, 6, 7], "references": ["b"], "index": 1}])
        >>> batch["input_ids"].tolist(), batch["references"]
        ([[0, 1, 5], [1, 6, 7]], [['a'], ['b']])
    """

    def __init__(
        self,
        kind: Literal["choice", "generation"],
        pad_token_id: int,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        share_prompt: bool = True,
    ) -> None:
        if kind not in ("choice", "generation"):
            raise ValueError(f"kind={kind!r}; expected 'choice' or 'generation'")
        self.kind = kind
        self.share_prompt = share_prompt
        self.shared = SharedPromptCollator(pad_token_id, max_length)
        self.choice = ChoiceCollator(pad_token_id, max_length)
        self.prompts = PadCollator(pad_token_id, "left", pad_to_multiple_of)

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if self.kind == "choice" and self.share_prompt:
            return self.shared(examples)
        if self.kind == "choice":
            batch = self.choice(examples)
            batch["option_labels"] = batch.pop("labels")
            return batch
        batch = self.prompts([{"input_ids": e["input_ids"], "index": e["index"]} for e in examples])
        batch["references"] = [list(e["references"]) for e in examples]
        return batch
