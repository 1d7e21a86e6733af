"""Per-item predictions of an evaluation, kept for inspection (``predictions.jsonl``).

A record is one evaluated item::

    {"id": 17, "language": "es", "prompt_id": "instruction", "output": "cuatro", "parsed": "cuatro",
     "gold": "cuatro", "correct": true, "scores": {...}}

``id`` is the item's position in its split (the batch's ``index``), ``prompt_id`` names the prompt the item was
rendered with, ``output`` is what the model produced (the generated text, or the chosen option's text),
``parsed`` what the scorer read from it (the final number for MGSM, the chosen option's index), ``gold`` the
reference, ``correct`` whether it scored as right (None where the metric has no right or wrong, ROUGE-L), and
``scores`` the per-item scores (option log-likelihoods for multiple choice, the metric's scores otherwise).

Under DDP every rank keeps its own records; :meth:`PredictionRecords.gathered` collects them on every rank
(``all_gather_object``) and orders them by language and id.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["PredictionRecords"]


class PredictionRecords:
    """A list of prediction records, off until :meth:`enable` is called.

    Args:
        prompt_id: the default ``prompt_id`` of the records.

    Example:
        >>> records = PredictionRecords()
        >>> records.add(id=0, language="es", output="x", parsed="x", gold="y", correct=False)
        >>> records.gathered()
        []
        >>> records.enable("instruction")
        >>> records.add(id=0, language="es", output="x", parsed="x", gold="y", correct=False)
        >>> records.gathered()[0]["prompt_id"]
        'instruction'
    """

    def __init__(self, prompt_id: str | None = None) -> None:
        self.enabled = False
        self.prompt_id = prompt_id
        self._records: list[dict[str, Any]] = []

    def enable(self, prompt_id: str | None) -> None:
        """Start keeping records, labelled with ``prompt_id``."""
        self.enabled = True
        self.prompt_id = prompt_id

    def add(self, **record: Any) -> None:
        """Keep one record (ignored while disabled); ``prompt_id`` is filled in when not given."""
        if self.enabled:
            self._records.append({"prompt_id": self.prompt_id, **record})

    def clear(self) -> None:
        self._records = []

    def gathered(self) -> list[dict[str, Any]]:
        """Every rank's records, ordered by language and id (a collective under DDP: call it on every rank)."""
        if not self.enabled:
            return []
        records = list(self._records)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            if world > 1:
                parts: list[list[dict[str, Any]] | None] = [None] * world
                torch.distributed.all_gather_object(parts, records)
                records = [record for part in parts for record in (part or [])]
        seen: set[tuple[str, int]] = set()
        unique = []
        for record in sorted(records, key=lambda r: (str(r.get("language")), int(r.get("id", -1)))):
            key = (str(record.get("language")), int(record.get("id", -1)))
            if key not in seen:  # a padded repeat of an item counts once, as in the metrics
                seen.add(key)
                unique.append(record)
        return unique
