"""The AdaMergeX reference task: causal language modelling on raw text of one language.

The text is tokenized, concatenated and cut into windows of exactly ``window_tokens`` tokens (the released
script cut by characters or words); the loss covers every token.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from itertools import islice
from types import SimpleNamespace
from typing import Any

from typing_extensions import override

from adamergex_pl.errors import InvalidValueError
from data_modules.base import Examples, TokenizedDataModule, check_languages, check_split_options
from data_modules.sources import DataSource, ReadCounter, iter_records, record_location, record_problem

_TOKENIZE_BATCH = 8  # documents per tokenizer call when reading lazily


class ReferenceLMDataModule(TokenizedDataModule):
    """Windows of ``window_tokens`` tokens cut from the text of one language.

    Args:
        train: The training text: ``.txt``, JSON/JSONL/CSV/Parquet records, or a hub dataset (Wikipedia).
        val: Held-out text, one source per language.
        test: Test text, one source per language.
        text_fields: The record fields holding text; several are joined with a space.
        record_separator: Between records: ``null`` puts EOS (independent documents); a string joins them.
        window_tokens: Tokens per window.
        max_windows: Keep this many training windows, reading documents in a seeded order; ``null``: all.
        max_val_windows: Keep at most this many windows per validation language.
        val_fraction: With no ``val`` sources, hold out this fraction of the windows read.
        language: The language of the text (and of sources that name none).
        tokenizer: See :class:`~data_modules.base.TokenizedDataModule` (as are the remaining arguments).
        batch_size: Training batch size per device.
        eval_batch_size: Evaluation batch size per device.
        num_workers: Dataloader workers.
        seed: Sub-sampling and shuffling seed.

    Raises:
        ValueError: A missing text field, text too short for one window, or conflicting validation options.
        FileNotFoundError: A missing data file.

    Example:
        .. code-block:: yaml

            data:
              class_path: data_modules.ReferenceLMDataModule
              init_args:
                train: {path: wikimedia/wikipedia, name: 20231101.es}
                language: es
                max_windows: 10000
    """

    def __init__(
        self,
        train: DataSource | None = None,
        val: list[DataSource] | None = None,
        test: list[DataSource] | None = None,
        text_fields: list[str] | None = None,
        record_separator: str | None = None,
        window_tokens: int = 512,
        max_windows: int | None = None,
        max_val_windows: int | None = None,
        val_fraction: float = 0.0,
        language: str = "en",
        tokenizer: str | None = None,
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
    ) -> None:
        super().__init__(tokenizer, batch_size, eval_batch_size, window_tokens, num_workers, seed)
        check_split_options(val, val_fraction, max_windows=max_windows, max_val_windows=max_val_windows)
        self.train_source, self.val_sources, self.test_sources = train, list(val or []), list(test or [])
        self.text_fields = list(text_fields or ["text"])
        self.record_separator = record_separator
        self.window_tokens = window_tokens
        self.max_windows, self.max_val_windows = max_windows, max_val_windows
        self.val_fraction = val_fraction
        check_languages(self, language, {"val": self.val_sources, "test": self.test_sources})
        self.language = language
        self.read_counter, self.documents_tokenized = ReadCounter(), 0  # what the last setup read

    def _documents(self, source: DataSource, seed: int | None) -> Iterator[str]:
        """The text of each record of ``source`` (its ``text_fields`` joined by a space), read lazily."""
        records = iter_records(source, seed=seed, counter=self.read_counter)
        try:
            first = next(records, None)
            if first is None:
                raise InvalidValueError(f"{source.describe()} holds no records")
            missing = [f for f in self.text_fields if f not in first]
            if missing:
                raise InvalidValueError(
                    f"text_fields {missing} are not fields of {source.describe()}; its fields are {list(first)}"
                )
            yield self._text(first)
            template = SimpleNamespace(
                fields=tuple(self.text_fields), option="text_fields", template=self.text_fields
            )
            for index, record in enumerate(records, start=1):
                problem = record_problem(record, [template])
                if problem is not None:  # every record is checked, not only the first
                    where = (
                        record_location(source.local_path(), index)
                        if source.is_local and seed is None
                        else f"record {index + 1} read (in the seeded order)"
                    )
                    raise InvalidValueError(
                        f"{source.describe()}, {where}: {problem}; fix the record or drop it"
                    )
                yield self._text(record)
        finally:
            records.close()

    def check_local_records(self) -> None:
        """Read every record of every local source and check it has the ``text_fields`` (the pipeline does,
        before its first fit).

        Raises:
            ValueError: a source without records, or a record without a text field, named by its line.
        """
        for source in [self.train_source, *self.val_sources, *self.test_sources]:
            if source is not None and source.is_local:
                for _ in self._documents(source, seed=None):
                    pass

    def _text(self, record: dict[str, Any]) -> str:
        return " ".join(str(record.get(f) or "") for f in self.text_fields)

    def windows(self, source: DataSource, limit: int | None = None) -> list[list[int]]:
        """Token windows of ``source``'s text (with ``limit``: documents in a seeded order until ``limit`` exist)."""
        n, eos = self.window_tokens, self.tokenizer.eos_token_id
        if self.record_separator is not None:
            texts = list(self._documents(source, None))
            self.documents_tokenized += len(texts)
            stream = self.tokenizer(self.record_separator.join(texts), add_special_tokens=False)["input_ids"]
            windows = [stream[i : i + n] for i in range(0, len(stream) - n + 1, n)]
            total = len(stream)
        else:
            documents = self._documents(source, None if limit is None else self.seed)
            windows, stream, total = [], [], 0
            try:
                while limit is None or len(windows) < limit:
                    batch = list(islice(documents, _TOKENIZE_BATCH))
                    if not batch:
                        break
                    self.documents_tokenized += len(batch)
                    for ids in self.tokenizer(batch, add_special_tokens=False)["input_ids"]:
                        stream.extend(ids)
                        stream.append(eos)
                        total += len(ids) + 1
                    cut = len(stream) - len(stream) % n
                    windows.extend(stream[i : i + n] for i in range(0, cut, n))
                    del stream[:cut]
            finally:
                documents.close()
            if limit is not None:
                windows = windows[:limit]
        if not windows:
            raise InvalidValueError(
                f"{source.describe()} has {total} tokens, fewer than one window of window_tokens={n}; "
                "give more text or lower window_tokens"
            )
        return windows

    def _subsample(self, windows: list[list[int]], limit: int | None) -> list[list[int]]:
        if limit is None or len(windows) <= limit:
            return windows
        keep = sorted(random.Random(self.seed).sample(range(len(windows)), limit))
        return [windows[i] for i in keep]

    def _by_language(self, sources: list[DataSource], what: str) -> dict[str, Examples]:
        grouped: dict[str, Examples] = {}
        for source in sources:
            lang = source.language or self.language
            if lang in grouped:
                raise InvalidValueError(
                    f"two {what} sources have language {lang!r}; give one source per language"
                )
            windows = self.windows(source, self.max_val_windows)
            grouped[lang] = _examples(self._subsample(windows, self.max_val_windows))
        return grouped

    def _windows_to_read(self) -> tuple[int | None, int]:
        """How many training windows to read (``None``: all) and how many of them to hold out."""
        if self.max_windows is None:
            return None, 0
        held_out = 0
        if self.val_fraction:
            held_out = max(1, round(self.val_fraction * self.max_windows / (1 - self.val_fraction)))
            if self.max_val_windows is not None:
                held_out = min(held_out, self.max_val_windows)
        return self.max_windows + held_out, held_out

    @override
    def build_examples(self) -> tuple[Examples, dict[str, Examples], dict[str, Examples]]:
        self.read_counter, self.documents_tokenized = ReadCounter(), 0
        val = self._by_language(self.val_sources, "val")
        train_windows: list[list[int]] = []
        if self.train_source is not None:
            limit, held_out = self._windows_to_read()
            train_windows = self.windows(self.train_source, limit)
            if self.val_fraction:
                order = list(range(len(train_windows)))
                random.Random(self.seed).shuffle(order)
                n_val = held_out if limit is not None and len(order) == limit else 0
                n_val = n_val or max(1, round(self.val_fraction * len(order)))
                if n_val >= len(order):
                    raise InvalidValueError(
                        f"val_fraction={self.val_fraction} leaves no training windows out of {len(order)}"
                    )
                held = [train_windows[i] for i in sorted(order[:n_val])]
                val[self.language] = _examples(self._subsample(held, self.max_val_windows))
                train_windows = [train_windows[i] for i in sorted(order[n_val:])]
            train_windows = self._subsample(train_windows, self.max_windows)
        return _examples(train_windows), val, self._by_language(self.test_sources, "test")


def _examples(windows: list[list[int]]) -> list[dict[str, Any]]:
    return [{"input_ids": w, "labels": w} for w in windows]
