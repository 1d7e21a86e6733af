"""Sequence packing for training: a batch's examples share rows instead of each padding its own.

Each example restarts its ``position_ids`` at 0 and the model gets no attention mask, so transformers derives a
block-diagonal causal mask; each example's first label is ``-100``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from data_modules.collate import IGNORE_INDEX


def first_fit_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``capacity`` tokens, first fit by decreasing length.

    Raises:
        ValueError: An example longer than ``capacity``.

    Example:
        >>> first_fit_rows([5, 2, 3, 4], capacity=5)
        [[0], [3], [2, 1]]
    """
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        length = lengths[index]
        if length > capacity:
            raise ValueError(f"an example of {length} tokens does not fit a row of capacity={capacity}")
        for row, space in enumerate(free):
            if length <= space:
                rows[row].append(index)
                free[row] -= length
                break
        else:
            rows.append([index])
            free.append(capacity - length)
    return rows


class PackingCollator:
    """Packs tokenized training examples into rows as long as the batch's longest example.

    Args:
        pad_token_id: The tokenizer's pad token.
        pad_to_multiple_of: Round the row length up to a multiple, or ``None``.

    Example:
        >>> collate = PackingCollator(pad_token_id=0)
        >>> batch = collate([{"input_ids": [5, 6, 7, 8]}, {"input_ids": [1, 2]}, {"input_ids": [3, 4]}])
        >>> batch["input_ids"].tolist(), batch["position_ids"].tolist()
        ([[5, 6, 7, 8], [1, 2, 3, 4]], [[0, 1, 2, 3], [0, 1, 0, 1]])
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(e["input_ids"]) for e in examples]
        capacity = max(lengths)
        if self.pad_to_multiple_of:
            capacity = -(-capacity // self.pad_to_multiple_of) * self.pad_to_multiple_of
        rows = first_fit_rows(lengths, capacity)
        has_labels = "labels" in examples[0]
        shape = (len(rows), capacity)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long) if has_labels else None
        for row, members in enumerate(rows):
            start = 0
            for index in members:
                n = lengths[index]
                span = slice(start, start + n)
                input_ids[row, span] = torch.tensor(examples[index]["input_ids"], dtype=torch.long)
                position_ids[row, span] = torch.arange(n)
                attention_mask[row, span] = 1
                if labels is not None:
                    labels[row, span] = torch.tensor(examples[index]["labels"], dtype=torch.long)
                    labels[row, start] = IGNORE_INDEX  # never the target of the previous example's last token
                start += n
            position_ids[row, start:] = torch.arange(capacity - start)  # the tail is a segment of its own
        batch = {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": attention_mask}
        if labels is not None:
            batch["labels"] = labels
        return batch
