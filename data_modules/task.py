"""The cross-lingual task suite as one DataModule: train in one language, validate in many.

Per language it samples the paper's number of evaluation examples (seeded), renders them through the task's
prompt and scores them in the validation loop: options ranked by log-likelihood (XNLI, XCOPA, PAWS-X) or
greedy generation (MGSM, XQuAD, XL-Sum), logged as ``val/<task>/<lang>/<metric>``. ``fit`` also trains on
(prompt, target) pairs from the English training data. The task table lives in ``data_modules/tasks/``.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from typing import Any, Literal

from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.evaluation.language_modeling import Evaluator
from adamergex_pl.metrics.languages import normalize_language
from data_modules.base import Examples, TokenizedDataModule, check_split_options
from data_modules.collate import TaskCollator
from data_modules.instruction_format import PromptTemplate
from data_modules.sources import DataSource, load_records, record_location
from data_modules.task_examples import choice_example, render_prompt, training_example
from data_modules.tasks import PROMPT_STYLES, get_task


class TaskDataModule(TokenizedDataModule):
    """XNLI, XCOPA, PAWS-X, MGSM, XQuAD or XL-Sum: per-language evaluation sets and English training pairs.

    Args:
        task: ``xnli``, ``xcopa``, ``pawsx``, ``mgsm``, ``xquad``, ``xlsum``, or ``count`` (the embedded demo).
        languages: validation languages (default: the languages the AdaMergeX paper reports for the task).
        val: sources with the task's fields, one per language (each names its ``language``), instead of the hub.
        eval_split: the hub split to evaluate (default: the paper's, e.g. ``test``).
        eval_samples: examples per language: ``paper`` (the paper's sample sizes: XNLI 1000, XQuAD 1000,
            XL-Sum 500, MGSM 250, XCOPA 500; PAWS-X all), ``all``, or a number (sampled with ``seed``).
        train: the training data (default: the task's English training set, see ``data_modules/tasks``).
        train_language: the language of the default training data (``en``; XNLI, PAWS-X, XL-Sum have others).
        max_train_samples: keep a seeded random subset of this many training records.
        prompt_style: ``instruction`` (English instruction, fields, ``Answer:``) or ``alpaca``.
        prompt_template: a format string over the task's prompt fields that replaces the style's template.
        target_prefix: what goes between prompt and target (default: a space; nothing for ``alpaca``).
        length_normalized: choice tasks: rank options by mean instead of summed token log-likelihood.
        share_prompt: choice tasks: score the options against the prompt's cached keys/values (same scores).
        max_new_tokens: generation tasks: greedy decoding length (default per task: MGSM 256, XQuAD 32,
            XL-Sum 64).
        **loader: the dataloader options of :class:`~data_modules.base.TokenizedDataModule`.
        max_length: longest training example / evaluation row, in tokens (prompts are fitted to it).
        write_predictions: keep every item's prediction for the module's ``predictions.jsonl``.

    Raises:
        ValueError: an unknown task, prompt style or language, conflicting options, or unusable data.
        FileNotFoundError: a missing local file.

    Example:
        ``adamergex validate --config configs/tiny/xnli.yaml``, or in YAML:

        .. code-block:: yaml

            data:
              class_path: data_modules.TaskDataModule
              init_args:
                task: xnli
                languages: [de, zh]
                eval_samples: 1000
    """

    def __init__(
        self,
        task: Literal["xnli", "xcopa", "pawsx", "mgsm", "xquad", "xlsum", "count"],
        languages: list[str] | None = None,
        val: list[DataSource] | None = None,
        eval_split: str | None = None,
        eval_samples: int | Literal["paper", "all"] = "paper",
        train: DataSource | None = None,
        train_language: str = "en",
        max_train_samples: int | None = None,
        prompt_style: Literal["instruction", "alpaca"] = "instruction",
        prompt_template: str | None = None,
        target_prefix: str | None = None,
        length_normalized: bool = False,
        share_prompt: bool = True,
        max_new_tokens: int | None = None,
        max_length: int = 1024,
        write_predictions: bool = False,
        **loader: Any,
    ) -> None:
        super().__init__(max_length=max_length, **loader)
        self.spec = spec = get_task(task)
        if prompt_style not in PROMPT_STYLES:
            raise InvalidValueError(
                f"prompt_style={prompt_style!r}; expected one of {', '.join(PROMPT_STYLES)}"
            )
        if val and languages:
            raise InvalidValueError(
                f"task {task!r}: languages={languages} and val sources conflict; the val sources' own "
                "`language` keys are the validation languages, so drop `languages`"
            )
        for lang in languages or []:
            self._check_hub_language(lang, "languages")
        if eval_samples not in ("paper", "all") and (not isinstance(eval_samples, int) or eval_samples < 1):
            raise InvalidValueError(
                f"eval_samples={eval_samples!r}; expected 'paper', 'all' or a positive integer"
            )
        check_split_options(max_train_samples=max_train_samples, max_new_tokens=max_new_tokens)
        self.task = task
        self.languages = list(languages or spec.paper_languages)
        self.val_sources = list(val or [])
        self.eval_split = eval_split or spec.eval_split
        self.eval_samples = {"paper": spec.paper_samples, "all": None}.get(eval_samples, eval_samples)
        self.train_source = train
        self.train_language = train_language
        self.max_train_samples = max_train_samples
        self.prompt_style = prompt_style
        self.template = PromptTemplate(
            prompt_template or spec.prompt_template(prompt_style), "prompt_template"
        )
        if target_prefix is None:
            target_prefix = spec.target_prefix("instruction" if prompt_template else prompt_style)
        self.target_prefix = target_prefix
        self.length_normalized = length_normalized
        self.share_prompt = share_prompt
        self.max_new_tokens = max_new_tokens or spec.max_new_tokens
        self.write_predictions = write_predictions
        custom = prompt_template and hashlib.sha256(prompt_template.encode()).hexdigest()[:8]
        self.prompt_id = f"template:{custom}" if custom else prompt_style  # named in prediction records
        self._fitting = False

    # ------------------------------------------------------------------ sources and records
    def _check_hub_language(self, language: str, option: str) -> None:
        if language not in self.spec.configs:
            raise InvalidValueError(
                f"task {self.spec.name!r} has no language {language!r} ({option}); {self.spec.hub_path} has "
                f"{', '.join(self.spec.languages)}. For other data, give val sources with the task's fields"
            )

    def _eval_sources(self) -> dict[str, DataSource]:
        if not self.val_sources:
            return {lang: self.spec.eval_source(lang, self.eval_split) for lang in self.languages}
        sources: dict[str, DataSource] = {}
        for source in self.val_sources:
            if not source.language:
                raise InvalidValueError(
                    f"task {self.task!r}: val source {source.describe()} names no language; add language: <code>"
                )
            try:
                normalize_language(source.language)
            except ValueError as err:
                raise InvalidValueError(f"task {self.task!r}: val source {source.describe()}: {err}") from err
            if source.language in sources:
                raise InvalidValueError(
                    f"task {self.task!r}: two val sources have language {source.language!r}; give one per language"
                )
            sources[source.language] = source
        return sources

    def _records(
        self, source: DataSource, language: str, fields: tuple[str, ...]
    ) -> list[tuple[int, dict[str, Any]]]:
        """``(index in the split, record)`` of the usable rows of ``source``: rows the dataset marks invalid
        (an unlabelled ``-1`` row, an empty sentence) are dropped, and their count is logged once per source."""
        where = f"task {self.task!r}, language {language!r}: {source.describe()}"
        try:
            records = load_records(source)
        except InvalidValueError as err:  # a dataset that cannot be loaded, a malformed file
            raise InvalidValueError(f"task {self.task!r}, language {language!r}: {err}") from err
        if not records:
            raise InvalidValueError(
                f"{where} holds no records (an empty split); check the split and the file"
            )
        usable, dropped = [], Counter()
        for index, record in enumerate(records):
            missing = [f for f in fields if f not in record]
            if missing:
                place = f" ({record_location(source.local_path(), index)})" if source.is_local else ""
                raise InvalidValueError(
                    f"{where}: record {index} lacks field(s) {missing}{place}; the task needs {list(fields)} and "
                    f"the record has {sorted(record)}"
                )
            reason = self.spec.invalid_reason(record)
            if reason is None:
                usable.append((index, record))
            else:
                dropped[reason] += 1
        if dropped:
            count = sum(dropped.values())
            reasons = (
                f"with {next(iter(dropped))}"
                if len(dropped) == 1
                else "(" + ", ".join(f"{n} with {reason}" for reason, n in dropped.most_common()) + ")"
            )
            rank_zero_info(f"{source.describe()}: dropped {count} of {len(records)} rows {reasons}")
        if not usable:
            raise InvalidValueError(
                f"{where}: all {len(records)} rows are marked invalid ({', '.join(dropped)}); check the split"
            )
        return usable

    def check_local_records(self) -> None:
        """Check that every record of the local training and evaluation files has the fields the task needs
        (the pipeline does, before its first fit); hub data is checked when it is loaded.

        Raises:
            ValueError: a record without a field the task needs, named by file, record and line.
        """
        if self.train_source is not None and self.train_source.is_local:
            language = self.train_source.language or self.train_language
            self._records(self.train_source, language, self.spec.train_fields)
        for language, source in self._eval_sources().items():
            if source.is_local:
                self._records(source, language, self.spec.fields)

    def _sample(self, records: list[tuple[int, Any]], limit: int | None) -> list[tuple[int, Any]]:
        """A seeded sample of ``limit`` of the ``(index, record)`` pairs, in order (the same for equal sizes)."""
        if limit is None or len(records) <= limit:
            return records
        return [records[i] for i in sorted(random.Random(self.seed).sample(range(len(records)), limit))]

    def _checked(self, where: tuple[str, DataSource, int], what: str, function, *args):
        """``function(*args)``, with a bad value reported by task, language, record and field."""
        try:
            return function(*args)
        except (ValueError, TypeError, KeyError) as err:
            language, source, index = where
            raise InvalidValueError(
                f"task {self.task!r}, language {language!r}: record {index} of {source.describe()}: {what}: {err}"
            ) from err

    def _prompt(self, where, record: dict, budget: int, first: bool) -> tuple[str | None, list[int]]:
        fields = self._checked(where, "prompt fields", self.spec.prompt_fields, record)
        if first:  # a custom prompt_template may name fields the records lack
            self.template.check_fields(
                fields, f"task {self.task!r}, language {where[0]!r}: {where[1].describe()}"
            )
        return render_prompt(self.tokenizer, self.template, fields, budget, self.spec.truncate_field)

    # ------------------------------------------------------------------ examples
    def _eval_examples(self, language: str, source: DataSource) -> Examples:
        spec, tokenizer = self.spec, self.tokenizer
        records = self._records(source, language, spec.fields)
        budget = self.max_length - (self.max_new_tokens if spec.kind == "generation" else 1)
        if budget < 8:
            raise InvalidValueError(
                f"max_length={self.max_length} leaves no room for a prompt after max_new_tokens="
                f"{self.max_new_tokens}; raise max_length"
            )
        examples = []
        for position, (index, record) in enumerate(self._sample(records, self.eval_samples)):
            where = (language, source, index)
            text, ids = self._prompt(where, record, budget, first=position == 0)
            if spec.kind == "choice":
                label = self._checked(where, "label", spec.label, record)
                options = [
                    self.target_prefix + o for o in self._checked(where, "options", spec.options, record)
                ]
                examples.append(
                    self._checked(
                        where, "options", choice_example, tokenizer, text, ids, options, label, index
                    )
                )
            else:
                references = self._checked(where, "references", spec.references, record)
                examples.append({"input_ids": ids, "references": references, "index": index})
        return examples

    def _default_train_source(self) -> DataSource:
        if self.train_language == "en":
            return self.spec.train_source
        if self.spec.train_split is None or self.train_language not in self.spec.configs:
            raise InvalidValueError(
                f"task {self.task!r} has no training data in {self.train_language!r} on the hub; give "
                "train: {path: <file with the fields " + ", ".join(self.spec.train_fields) + ">}"
            )
        return self.spec.eval_source(self.train_language, self.spec.train_split)

    def _train_examples(self) -> Examples:
        spec, tokenizer = self.spec, self.tokenizer
        source = self.train_source or self._default_train_source()
        language = source.language or self.train_language
        records = self._records(source, language, spec.train_fields)
        examples, dropped = [], 0
        for position, (index, record) in enumerate(self._sample(records, self.max_train_samples)):
            where = (language, source, index)
            target = self.target_prefix + self._checked(where, "target", spec.train_target, record)
            target_tokens = len(tokenizer(target, add_special_tokens=False)["input_ids"]) + 1
            text, ids = self._prompt(where, record, max(8, self.max_length - target_tokens), position == 0)
            example = self._checked(
                where, "target", training_example, tokenizer, text, ids, target, self.max_length
            )
            if example is None:
                dropped += 1
            else:
                examples.append(example)
        if dropped:
            rank_zero_info(f"{source.describe()}: dropped {dropped} records whose prompt fills max_length")
        if not examples:
            raise InvalidValueError(
                f"task {self.task!r}: no training example of {source.describe()} fits max_length={self.max_length}"
            )
        return examples

    @override
    def setup(self, stage: str) -> None:
        self._fitting = self._fitting or stage == "fit"
        if self._built and self._fitting and not self.train_examples:  # validated first, now fitting
            self.train_examples = self._train_examples()
        super().setup(stage)

    @override
    def build_examples(self) -> tuple[Examples, dict[str, Examples], dict[str, Examples]]:
        evaluation = {lang: self._eval_examples(lang, src) for lang, src in self._eval_sources().items()}
        train = self._train_examples() if self._fitting else []
        return train, evaluation, evaluation  # `adamergex test` evaluates the same sets, logged under test/

    # ------------------------------------------------------------------ evaluation
    @override
    def eval_collator(self) -> TaskCollator:
        spec = self.spec
        return TaskCollator(
            spec.kind,
            self.tokenizer.pad_token_id,
            self.max_length,
            self.pad_to_multiple_of,
            self.share_prompt,
        )

    @override
    @override
    def planned_val_languages(self) -> list[str]:
        return list(self._eval_sources())

    def planned_eval_items(self) -> dict[str, int | None]:
        """What bounds an evaluation before its data is read: ``items`` per language (``None`` for ``all``),
        ``max_length`` per row, ``rows_per_item`` (one per option for choice tasks) and ``max_new_tokens``."""
        choice = self.spec.kind == "choice"
        return {
            "items": self.eval_samples,
            "max_length": self.max_length,
            "rows_per_item": self.spec.num_options if choice else 1,
            "max_new_tokens": 0 if choice else self.max_new_tokens,
        }

    @override
    def metric_names(self) -> tuple[str, ...]:
        if self.spec.kind == "choice":
            return (f"{self.task}/accuracy",)
        from adamergex_pl.metrics.numbers import NumberMatchAccuracy
        from adamergex_pl.metrics.rouge import RougeLMetric
        from adamergex_pl.metrics.squad import SquadMetric

        scores = {"final_number": NumberMatchAccuracy, "squad": SquadMetric, "rouge_l": RougeLMetric}
        return tuple(f"{self.task}/{name}" for name in scores[self.spec.metric].score_names)

    def build_evaluator(self) -> Evaluator:
        """Option ranking for choice tasks, greedy generation and the task's text metric otherwise."""
        languages = self.val_languages or self.test_languages
        from adamergex_pl.evaluation.choice_evaluator import ChoiceEvaluator
        from adamergex_pl.evaluation.generation import GenerationEvaluator

        spec = self.spec
        if spec.kind == "choice":
            args = (spec.num_options, self.length_normalized, self.tokenizer)
            evaluator = ChoiceEvaluator(self.task, languages, *args)
        else:
            args = (self.max_new_tokens, spec.metric, spec.stop_strings(self.prompt_style))
            evaluator = GenerationEvaluator(self.task, languages, self.tokenizer, *args)
        if self.write_predictions:
            evaluator.keep_predictions(self.prompt_id)
        return evaluator
