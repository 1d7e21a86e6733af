"""CrossX, CrossIn's cross-lingual consistency benchmark (Cross-MMLU, Cross-LogiQA, Cross-XQuAD), for validation.

One dataloader per (benchmark, language), ``<benchmark>/<lang>``. Subsets ship as ``builtin:crossx/*.json``
(CC BY-NC 4.0); the full benchmarks are ``SeaEval/SeaEval_datasets`` (split ``test``) or local copies.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from typing_extensions import override

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.evaluation.crossx_evaluator import OPTION_LABELS, CrossXEvaluator
from adamergex_pl.evaluation.option_scoring import ChoiceCollator
from adamergex_pl.metrics.options import option_index
from data_modules.base import Examples, TokenizedDataModule, check_languages
from data_modules.crossin_mixture import language_code
from data_modules.instruction_format import ALPACA_NO_INPUT, PromptTemplate, chat_prompt
from data_modules.sources import DataSource, load_records

_TAGGED = re.compile(r"^\(([A-Z])\)\s?(.*)$", re.DOTALL)


@dataclass(frozen=True)
class CrossXQuestion:
    """One item in one language: ``choices`` as stored (``"(A) responsible"``), ``answer`` the gold index,
    ``context`` the passage (Cross-LogiQA, Cross-XQuAD) or ""."""

    question: str
    choices: tuple[str, ...]
    answer: int
    context: str = ""

    def option_fields(self, k: int) -> dict[str, str]:
        """Option-template fields of choice ``k``: ``letter`` ``B``, ``tag`` ``(B)``, ``text``, ``choice``."""
        letter = string.ascii_uppercase[k]
        match = _TAGGED.match(self.choices[k])
        text = match.group(2) if match and match.group(1) == letter else self.choices[k]
        return {"letter": letter, "tag": f"({letter})", "text": text, "choice": self.choices[k]}

    def prompt_fields(self) -> dict[str, str]:
        """Prompt-template fields: ``question``, ``context`` (passage and blank line, or ""), ``choices``."""
        return {
            "question": self.question,
            "context": f"{self.context}\n\n" if self.context else "",
            "choices": "\n".join(self.choices),
        }


def _question(cell: dict[str, Any], where: str) -> CrossXQuestion:
    missing = [f for f in ("question", "choices", "answer") if f not in cell]
    if missing:
        raise InvalidValueError(f"{where} lacks {missing}; a CrossX cell has question, choices, answer")
    choices = cell["choices"]
    if isinstance(choices, str) or not isinstance(choices, Sequence) or not 2 <= len(choices) <= 26:
        raise InvalidValueError(f"{where}: choices must be a list of 2 to 26 strings, got {choices!r}")
    answer = cell["answer"]
    if answer in choices:
        gold = list(choices).index(answer)
    else:
        try:
            gold = option_index(str(answer), len(choices))
        except ValueError as err:
            raise InvalidValueError(
                f"{where}: answer {answer!r} is neither one of its choices nor an option letter"
            ) from err
    return CrossXQuestion(
        str(cell["question"]), tuple(map(str, choices)), gold, str(cell.get("context") or "")
    )


def load_crossx_items(source: DataSource, languages: Sequence[str]) -> list[dict[str, CrossXQuestion]]:
    """The items of a CrossX file in file order: per item, its questions by language (those it has).

    Raises:
        InvalidValueError: An unknown language, a malformed cell, differing golds, or a language no item has.
        InputNotFoundError: A missing file.
    """
    records = load_records(source)
    if not records:
        raise InvalidValueError(f"CrossX benchmark {source.describe()} holds no items")
    wanted = set(languages)
    items: list[dict[str, CrossXQuestion]] = []
    seen: set[str] = set()
    for position, record in enumerate(records):
        item: dict[str, CrossXQuestion] = {}
        for key, cell in record.items():
            if key == "id" or not isinstance(cell, dict):
                continue  # the id, or a language this item lacks (null in a hub dataset)
            code = language_code(key, f"{source.describe()} item {position}")
            seen.add(code)
            if code in wanted:
                item[code] = _question(cell, f"{source.describe()} item {position} ({key})")
        golds = {q.answer for q in item.values()}
        if len(golds) > 1:
            letters = {lang: string.ascii_uppercase[q.answer] for lang, q in item.items()}
            raise InvalidValueError(
                f"{source.describe()} item {position} (id {record.get('id')!r}) has different gold options per "
                f"language {letters}; CrossX items must share their gold option"
            )
        items.append(item)
    absent = [lang for lang in languages if lang not in seen]
    if absent:
        raise InvalidValueError(
            f"CrossX benchmark {source.describe()} has no items in {absent}; its languages are {sorted(seen)}"
        )
    return items


DEFAULT_LANGUAGES = ("en", "zh", "vi", "es")
DEMO_BENCHMARK = "builtin:crossx/cross_mmlu.json"
DEFAULT_PROMPT = (
    "Respond to the question by selecting the most appropriate answer.\n\n"
    "{context}Question: {question}\nChoices:\n{choices}\nAnswer:"
)
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class _OptionLabelCollator(ChoiceCollator):
    """:class:`ChoiceCollator` with the option labels under ``option_labels`` (see ``OPTION_LABELS``)."""

    def __call__(self, examples: Any) -> dict[str, Any]:
        batch = super().__call__(examples)
        batch[OPTION_LABELS] = batch.pop("labels")
        return batch


class CrossXDataModule(TokenizedDataModule):
    """CrossX items in several languages, scored as multiple choice for accuracy and consistency.

    Args:
        benchmarks: The sources, labelled by ``name`` or a file's stem; default the shipped Cross-MMLU subset.
        languages: Language codes or names to evaluate, at least two (default ``[en, zh, vi, es]``).
        prompt_template: The question prompt, over :meth:`CrossXQuestion.prompt_fields`.
        option_template: Each option's scored continuation, over :meth:`CrossXQuestion.option_fields`.
        prompt_format: ``plain``, ``alpaca`` (as CrossIn trains) or ``chat`` (the tokenizer's chat template).
        length_normalized: Divide each option's log-likelihood by its token count.
        max_items: Evaluate a seeded subset of this many items per benchmark (the same in every language).
        **loader: The dataloader options of :class:`~data_modules.base.TokenizedDataModule`.
        max_length: Longest prompt + option in tokens; longer prompts lose tokens from the left.
        seed: Seed of ``max_items``.
        write_predictions: Keep every item's chosen letter for ``predictions.jsonl``.

    Raises:
        InvalidValueError: Fewer than two languages, bad benchmark names, unknown template fields, bad sizes.

    Example:
        .. code-block:: yaml

            data:
              class_path: data_modules.CrossXDataModule
              init_args:
                benchmarks: [{path: SeaEval/SeaEval_datasets, name: cross_mmlu, split: test}]
                languages: [en, zh, vi, es]
    """

    def __init__(
        self,
        benchmarks: list[DataSource] | None = None,
        languages: list[str] | None = None,
        prompt_template: str = DEFAULT_PROMPT,
        option_template: str = " {tag}",
        prompt_format: Literal["plain", "alpaca", "chat"] = "plain",
        length_normalized: bool = False,
        max_items: int | None = None,
        max_length: int = 2048,
        seed: int = 0,
        write_predictions: bool = False,
        **loader: Any,
    ) -> None:
        super().__init__(max_length=max_length, seed=seed, **loader)
        self.write_predictions = write_predictions
        self.sources = list(benchmarks) if benchmarks else [DataSource(DEMO_BENCHMARK)]
        self.benchmark_names = [self._label(source) for source in self.sources]
        duplicates = sorted({n for n in self.benchmark_names if self.benchmark_names.count(n) > 1})
        if duplicates:
            raise InvalidValueError(
                f"benchmarks {duplicates} are listed twice; give each source a distinct name (name: <label>)"
            )
        check_languages(self, None, {}, languages or DEFAULT_LANGUAGES)
        codes = [language_code(lang, "languages") for lang in (languages or DEFAULT_LANGUAGES)]
        if len(set(codes)) < 2 or len(set(codes)) != len(codes):
            raise InvalidValueError(
                f"languages={languages} must name at least two distinct languages (consistency compares "
                "languages), e.g. [en, zh, vi, es]"
            )
        if prompt_format not in ("plain", "alpaca", "chat"):
            raise InvalidValueError(
                f"prompt_format={prompt_format!r} is not supported; expected plain, alpaca or chat"
            )
        if max_items is not None and max_items < 1:
            raise InvalidValueError(f"max_items={max_items} must be a positive integer or null")
        self.languages = codes
        self.prompt = PromptTemplate(prompt_template, "prompt_template")
        self.prompt.check_fields(("question", "context", "choices"), "a CrossX item")
        self.option = PromptTemplate(option_template, "option_template")
        self.option.check_fields(("letter", "tag", "text", "choice"), "a CrossX option")
        self.prompt_format = prompt_format
        self.length_normalized = length_normalized
        self.max_items = max_items
        self.benchmark_sizes: dict[str, tuple[int, int]] = {}

    @staticmethod
    def _label(source: DataSource) -> str:
        label = source.name or (Path(source.path).stem if source.is_local else "")
        if not _NAME.match(label or ""):
            raise InvalidValueError(
                f"benchmark {source.describe()} needs a name of letters, digits, '_' or '-' (got {label!r}); "
                "set name: cross_mmlu (for example) on the source"
            )
        return label

    def _example(self, question: CrossXQuestion, index: int) -> dict[str, Any]:
        text = self.prompt.render(question.prompt_fields())
        if self.prompt_format == "chat":
            prompt_ids = self.tokenizer(chat_prompt(self.tokenizer, text), add_special_tokens=False).input_ids
        else:
            if self.prompt_format == "alpaca":
                text = ALPACA_NO_INPUT.format(instruction=text)
            prompt_ids = self.tokenizer(text, add_special_tokens=True).input_ids
        options = [self.option.render(question.option_fields(k)) for k in range(len(question.choices))]
        option_ids = self.tokenizer(options, add_special_tokens=False)["input_ids"]
        return {"prompt_ids": prompt_ids, "option_ids": option_ids, "label": question.answer, "index": index}

    @override
    def build_examples(self) -> tuple[Examples, dict[str, Examples], dict[str, Examples]]:
        sets: dict[str, Examples] = {}
        for name, source in zip(self.benchmark_names, self.sources, strict=True):
            items = load_crossx_items(source, self.languages)
            chosen = range(len(items))
            if self.max_items is not None and self.max_items < len(items):
                chosen = sorted(random.Random(self.seed).sample(range(len(items)), self.max_items))
            num_options = max(len(q.choices) for item in items for q in item.values())
            self.benchmark_sizes[name] = (len(items), num_options)
            for lang in self.languages:
                examples = [self._example(items[i][lang], i) for i in chosen if lang in items[i]]
                if examples:  # a language absent from the chosen items is a set of missing cells
                    sets[f"{name}/{lang}"] = examples
        return [], sets, dict(sets)

    @override
    def planned_val_languages(self) -> list[str]:
        return list(self.languages)

    @override
    def metric_names(self) -> None:
        return None  # accuracy, consistency_<k> and ac3_<k> per benchmark: known once the items are read

    def build_evaluator(self) -> CrossXEvaluator:
        evaluator = CrossXEvaluator(self.benchmark_sizes, self.languages, self.length_normalized)
        if self.write_predictions:
            evaluator.keep_predictions(f"crossx:{self.prompt_format}")
        return evaluator

    @override
    def collator(self, padding_side: str = "right") -> ChoiceCollator:
        return _OptionLabelCollator(self.tokenizer.pad_token_id, self.max_length)
