"""Prompt-to-completion fine-tuning data, with the loss on the completion tokens only."""

from __future__ import annotations

import random
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader
from typing_extensions import override

from adamergex_pl.errors import InvalidValueError
from data_modules.base import Examples, TokenizedDataModule, check_languages, check_split_options
from data_modules.collate import IGNORE_INDEX
from data_modules.instruction_format import PromptTemplate
from data_modules.sources import DataSource, check_records, load_records


class InstructionDataModule(TokenizedDataModule):
    """Records rendered through a prompt and a completion template, tokenized with the prompt masked.

    Each example is ``prompt_ids + completion_ids + [eos]``, truncated to ``max_length``, labels ``-100`` on the
    prompt; examples whose completion is cut off entirely are dropped.

    Args:
        train: the training records.
        val: validation records, one source per language (each source's ``language``, default ``language``).
        test: test records, one source per language.
        predict: records whose prompts ``adamergex predict`` completes.
        prompt_template: format string over a record's fields, e.g. ``"{instruction}\\n\\n### Response:\\n"``.
        completion_template: format string for the target text, e.g. ``"{output}"``.
        language: the training language, and the language of sources that name none.
        val_fraction: with no ``val`` sources, hold out this fraction of ``train`` for validation.
        max_samples: keep a seeded random subset of this many training records.
        max_val_samples: keep at most this many records per validation language.
        **loader: the dataloader options of :class:`~data_modules.base.TokenizedDataModule`.

    Raises:
        ValueError: a template naming a missing field, no examples left, two sources of one language.
        FileNotFoundError: a missing data file.

    Example:
        .. code-block:: yaml

            data:
              class_path: data_modules.InstructionDataModule
              init_args:
                train: {path: data/xnli_en.jsonl}
                val: [{path: data/xnli_es.jsonl, language: es}]
                prompt_template: "Premise: {premise}\\nHypothesis: {hypothesis}\\nRelation:"
                completion_template: " {label}"
    """

    def __init__(
        self,
        train: DataSource | None = None,
        val: list[DataSource] | None = None,
        test: list[DataSource] | None = None,
        predict: DataSource | None = None,
        prompt_template: str = "{prompt}",
        completion_template: str = "{completion}",
        language: str = "en",
        val_fraction: float = 0.0,
        max_samples: int | None = None,
        max_val_samples: int | None = None,
        **loader: Any,
    ) -> None:
        super().__init__(**loader)
        check_split_options(val, val_fraction, max_samples=max_samples, max_val_samples=max_val_samples)
        self.train_source, self.val_sources, self.test_sources = train, list(val or []), list(test or [])
        self.predict_source = predict
        self.prompt = PromptTemplate(prompt_template, "prompt_template")
        self.completion = PromptTemplate(completion_template, "completion_template")
        check_languages(self, language, {"val": self.val_sources, "test": self.test_sources})
        self.language = language
        self.val_fraction = val_fraction
        self.max_samples, self.max_val_samples = max_samples, max_val_samples
        self.predict_examples: Examples = []

    # ------------------------------------------------------------------ records
    def _records(self, source: DataSource, with_completion: bool = True) -> list[dict[str, Any]]:
        records = load_records(source)
        if not records:
            raise InvalidValueError(f"{source.describe()} holds no records")
        self.prompt.check_fields(records[0], source.describe())
        if with_completion:
            self.completion.check_fields(records[0], source.describe())
        completion = [self.completion] if with_completion else []
        check_records(records, source, [self.prompt, *completion], needs_value=completion)  # every record
        return records

    def check_local_records(self) -> None:
        """Read and check the records of every local training, validation and test source, as :meth:`setup`
        would (the pipeline does, before its first fit).

        Raises:
            ValueError: a record without a field the templates name, or without a completion.
        """
        for source in [self.train_source, *self.val_sources, *self.test_sources]:
            if source is not None and source.is_local:
                self._records(source)

    def _subsample(self, records: list, limit: int | None) -> list:
        if limit is None or len(records) <= limit:
            return records
        keep = sorted(random.Random(self.seed).sample(range(len(records)), limit))
        return [records[i] for i in keep]

    def _by_language(self, sources: list[DataSource], what: str) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for source in sources:
            lang = source.language or self.language
            if lang in grouped:
                raise InvalidValueError(
                    f"two {what} sources have language {lang!r}; give one source per language"
                )
            grouped[lang] = self._subsample(self._records(source), self.max_val_samples)
        return grouped

    # ------------------------------------------------------------------ tokenization
    def tokenize(self, records: list[dict[str, Any]], source: str) -> Examples:
        """Prompt-masked examples of ``records``; drops (and reports) those with no completion token left."""
        tokenizer = self.tokenizer
        prompts = tokenizer([self.prompt.render(r) for r in records], add_special_tokens=True)["input_ids"]
        completions = tokenizer([self.completion.render(r) for r in records], add_special_tokens=False)[
            "input_ids"
        ]
        examples, dropped = [], 0
        for prompt_ids, completion_ids in zip(prompts, completions, strict=True):
            completion_ids = [*completion_ids, tokenizer.eos_token_id]
            input_ids = (prompt_ids + completion_ids)[: self.max_length]
            if len(input_ids) <= len(prompt_ids):
                dropped += 1
                continue
            labels = ([IGNORE_INDEX] * len(prompt_ids) + completion_ids)[: self.max_length]
            examples.append({"input_ids": input_ids, "labels": labels})
        if dropped:
            rank_zero_info(
                f"{source}: dropped {dropped} of {len(records)} records whose prompt fills max_length"
            )
        if not examples:
            raise InvalidValueError(
                f"{source}: no rows left after dropping the {dropped} whose prompt alone reaches "
                f"max_length={self.max_length}; raise max_length or shorten the prompt template"
            )
        return examples

    @override
    def build_examples(self) -> tuple[Examples, dict[str, Examples], dict[str, Examples]]:
        train_records: list[dict[str, Any]] = []
        val_records = self._by_language(self.val_sources, "val")
        if self.train_source is not None:
            train_records = self._records(self.train_source)
            if self.val_fraction:
                order = list(range(len(train_records)))
                random.Random(self.seed).shuffle(order)
                n_val = max(1, round(self.val_fraction * len(order)))
                held_out = sorted(order[:n_val])
                val_records[self.language] = self._subsample(
                    [train_records[i] for i in held_out], self.max_val_samples
                )
                train_records = [train_records[i] for i in sorted(order[n_val:])]
            train_records = self._subsample(train_records, self.max_samples)
        train = self.tokenize(train_records, self.train_source.describe()) if train_records else []
        val = {lang: self.tokenize(recs, f"val[{lang}]") for lang, recs in val_records.items()}
        test_records = self._by_language(self.test_sources, "test")
        test = {lang: self.tokenize(recs, f"test[{lang}]") for lang, recs in test_records.items()}
        if self.predict_source is not None:
            records = self._records(self.predict_source, with_completion=False)
            ids = self.tokenizer([self.prompt.render(r) for r in records], add_special_tokens=True)[
                "input_ids"
            ]
            self.predict_examples = [
                {"input_ids": p[-self.max_length :], "index": i} for i, p in enumerate(ids)
            ]
        return train, val, test

    @override
    def predict_dataloader(self) -> DataLoader:
        if not self.predict_examples:
            raise InvalidValueError("InstructionDataModule has no predict data; set data.init_args.predict")
        return DataLoader(
            self.predict_examples, batch_size=self.eval_batch_size, collate_fn=self.collator("left")
        )
