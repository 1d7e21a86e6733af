"""The AdaMergeX reference task: causal language modelling on raw text of one language.

AdaMergeX fine-tunes a "reference" adapter per language on plain text (Wikipedia) so that the difference
``A(R,tgt) ⊖ A(R,src)`` captures the language gap. The text is tokenized, concatenated into one stream and cut
into windows of exactly ``window_tokens`` tokens (tokens, not characters or words: the released script cut
by characters or words, so its windows had unequal token lengths). The loss covers every token.
"""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from typing_extensions import override

from adamergex_pl.data.record_checks import check_records
from adamergex_pl.data.sources import DataSource, load_records
from adamergex_pl.errors import InvalidValueError
from data_modules.base import Examples, TokenizedDataModule


class ReferenceLMDataModule(TokenizedDataModule):
    """Windows of ``window_tokens`` tokens cut from the text of one language.

    Args:
        train: the training text: ``.txt`` files, JSON/JSONL/CSV/Parquet records, or a hub dataset such as
            ``{path: wikimedia/wikipedia, name: 20231101.es}``.
        val: held-out text, one source per language (each source's ``language``, default ``language``).
        test: test text, one source per language.
        text_fields: the record fields holding text; several are joined with a space (for the AdaMergeX demo
            files, ``[prompt, completion]``).
        record_separator: what goes between consecutive records: ``null`` puts the EOS token between them
            (independent documents); a string such as ``" "`` joins them as one text (records that continue
            each other, like the AdaMergeX demo windows).
        window_tokens: tokens per window.
        max_windows: keep a seeded random subset of this many training windows.
        max_val_windows: keep at most this many windows per validation language.
        val_fraction: with no ``val`` sources, hold out this fraction of the training windows.
        language: the language of the text (and of sources that name none).
        tokenizer: see :class:`~data_modules.base.TokenizedDataModule` (as are the remaining arguments).
        batch_size: training batch size per device.
        eval_batch_size: evaluation batch size per device.
        num_workers: dataloader workers.
        seed: sub-sampling and shuffling seed.

    Raises:
        ValueError: a missing text field, text too short for one window, or conflicting validation options.
        FileNotFoundError: a missing data file.

    Example:
        .. code-block:: yaml

            data:
              class_path: data_modules.ReferenceLMDataModule
              init_args:
                train: {path: wikimedia/wikipedia, name: 20231101.es}
                language: es
                window_tokens: 512
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
        if not 0.0 <= val_fraction < 1.0:
            raise InvalidValueError(f"val_fraction={val_fraction} must be in [0, 1)")
        if val and val_fraction:
            raise InvalidValueError(
                f"val sources and val_fraction={val_fraction} conflict; give validation sources or a fraction"
            )
        for option, value in (("max_windows", max_windows), ("max_val_windows", max_val_windows)):
            if value is not None and value < 1:
                raise InvalidValueError(f"{option}={value} must be a positive integer or null")
        self.train_source, self.val_sources, self.test_sources = train, list(val or []), list(test or [])
        self.text_fields = list(text_fields or ["text"])
        self.record_separator = record_separator
        self.window_tokens = window_tokens
        self.max_windows, self.max_val_windows = max_windows, max_val_windows
        self.val_fraction = val_fraction
        self.language = language

    def _texts(self, source: DataSource) -> list[str]:
        records = load_records(source)
        if not records:
            raise InvalidValueError(f"{source.describe()} holds no records")
        missing = [f for f in self.text_fields if f not in records[0]]
        if missing:
            raise InvalidValueError(
                f"text_fields {missing} are not fields of {source.describe()}; its fields are {list(records[0])}"
            )
        fields = SimpleNamespace(
            fields=tuple(self.text_fields), option="text_fields", template=self.text_fields
        )
        check_records(records, source, [fields])  # every record, not only the first
        return [" ".join(str(r.get(f) or "") for f in self.text_fields) for r in records]

    def windows(self, source: DataSource) -> list[list[int]]:
        """Token windows of ``source``'s text, in order."""
        texts = self._texts(source)
        if self.record_separator is not None:
            texts = [self.record_separator.join(texts)]
        token_lists = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        stream: list[int] = []
        for ids in token_lists:
            stream.extend(ids)
            if self.record_separator is None:
                stream.append(self.tokenizer.eos_token_id)
        n = self.window_tokens
        windows = [stream[i : i + n] for i in range(0, len(stream) - n + 1, n)]
        if not windows:
            raise InvalidValueError(
                f"{source.describe()} has {len(stream)} tokens, fewer than one window of window_tokens={n}; "
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
            grouped[lang] = _examples(self._subsample(self.windows(source), self.max_val_windows))
        return grouped

    @override
    def build_examples(self) -> tuple[Examples, dict[str, Examples], dict[str, Examples]]:
        val = self._by_language(self.val_sources, "val")
        train_windows: list[list[int]] = []
        if self.train_source is not None:
            train_windows = self.windows(self.train_source)
            if self.val_fraction:
                order = list(range(len(train_windows)))
                random.Random(self.seed).shuffle(order)
                n_val = max(1, round(self.val_fraction * len(order)))
                if n_val >= len(order):
                    raise InvalidValueError(
                        f"val_fraction={self.val_fraction} leaves no training windows out of {len(order)}"
                    )
                held_out = [train_windows[i] for i in sorted(order[:n_val])]
                val[self.language] = _examples(self._subsample(held_out, self.max_val_windows))
                train_windows = [train_windows[i] for i in sorted(order[n_val:])]
            train_windows = self._subsample(train_windows, self.max_windows)
        return _examples(train_windows), val, self._by_language(self.test_sources, "test")


def _examples(windows: list[list[int]]) -> list[dict[str, Any]]:
    return [{"input_ids": w, "labels": w} for w in windows]
