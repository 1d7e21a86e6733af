"""Evaluation batches of the cross-lingual task suite.

* Multiple choice: every example ``{"prompt_ids", "option_ids", "label", "index"}`` becomes a left-padded
  prompt plus one right-padded row per option, so that each prompt is computed once
  (:class:`~adamergex_pl.evaluation.shared_prompt_scoring.SharedPromptCollator`), or with ``share_prompt=False`` one
  right-padded row of prompt + option per option (:class:`~adamergex_pl.evaluation.option_scoring.ChoiceCollator`). In
  the latter the option-token labels travel as ``option_labels``, not ``labels``: ``AdapterModule`` rewrites a
  batch's ``labels`` to cover the whole sequence when ``loss_on_prompt`` is set, and option scoring must only
  ever score option tokens.
* Generation: every example ``{"input_ids", "references", "index"}`` is a prompt, left-padded so that greedy
  decoding continues right after it; the gold answers ride along as a list (Lightning moves only tensors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from adamergex_pl.evaluation.option_scoring import ChoiceCollator
from adamergex_pl.evaluation.shared_prompt_scoring import SharedPromptCollator
from data_modules.collate import PadCollator


class TaskCollator:
    """Collates evaluation examples of a ``choice`` or a ``generation`` task.

    Args:
        kind: ``choice`` (options to score) or ``generation`` (left-padded prompts).
        pad_token_id: the tokenizer's pad token.
        max_length: a choice prompt plus option longer than this loses prompt tokens from the left (options
            are never cut).
        pad_to_multiple_of: generation prompts are padded to a multiple of this.
        share_prompt: choice batches hold each prompt once (scored with
            :func:`~adamergex_pl.evaluation.shared_prompt_scoring.shared_prompt_scores`) instead of once per option.

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
