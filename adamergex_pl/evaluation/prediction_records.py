"""Per-item predictions of an evaluation, kept for inspection (``predictions.jsonl``).

A record is one evaluated item::

    {"id": 17, "language": "es", "prompt_id": "instruction", "output": "cuatro", "parsed": "cuatro",
     "gold": "cuatro", "correct": true, "scores": {...}}

``id`` is the item's position in its split, ``parsed`` what the scorer read from ``output`` (MGSM's final
number, the chosen option), ``correct`` is None where the metric has no right or wrong (ROUGE-L), and
``scores`` holds option log-likelihoods or the metric's scores.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["PredictionRecords"]


class PredictionRecords:
    """A list of prediction records, off until :meth:`enable` is called.

    Args:
        prompt_id: the records' default ``prompt_id``.

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
