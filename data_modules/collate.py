"""Dynamic padding: a batch is padded to its longest example, not to ``max_length``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

IGNORE_INDEX = -100


class PadCollator:
    """Pads tokenized examples into a batch of tensors.

    Each example is a dict with ``input_ids`` (list of ints) and optionally ``labels`` (list of ints, ``-100``
    where no loss is taken) and ``index`` (its position in the dataset). Padding tokens get attention mask 0
    and label ``-100``.

    Args:
        pad_token_id: the tokenizer's pad token.
        padding_side: ``right`` for training and scoring, ``left`` for generation.
        pad_to_multiple_of: round the padded length up to a multiple (helps tensor cores), or ``None``.

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
