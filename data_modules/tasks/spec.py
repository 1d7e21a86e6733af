"""One row of the task table: where a benchmark lives, its languages and fields, its prompt and its answer.

Two prompt styles join a task's ``instruction``, ``input`` layout and ``cue`` (the same for training and eval):

* ``instruction``: ``"{instruction}\\n\\n{input}\\n{cue}"``, the target after a space;
* ``alpaca``: ``"### Instruction:\\n{instruction}\\n\\n### Input:\\n{input}\\n\\n### Response:\\n"``, the target
  directly after (the style of the paper's QLoRA instruction tuning, not the release's prompt strings).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from data_modules.sources import DataSource

Record = Mapping[str, Any]
PROMPT_STYLES: tuple[str, ...] = ("instruction", "alpaca")

_LAYOUTS = {
    "instruction": "{instruction}\n\n{input}\n{cue}",
    "alpaca": "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
}
_TARGET_PREFIX = {"instruction": " ", "alpaca": ""}
_STYLE_STOPS = {"instruction": (), "alpaca": ("###",)}


def _identity(record: Record) -> dict[str, Any]:
    return dict(record)


@dataclass(frozen=True)
class TaskSpec:
    """A benchmark of the suite: hub location, languages, fields, prompt, answers and metric.

    Args:
        name: The task's name, the first part of its metric keys (``val/<name>/<lang>/<metric>``).
        kind: ``choice`` (rank options by log-likelihood) or ``generation`` (greedy decoding + text metric).
        hub_path: The hub dataset of the evaluation data, e.g. ``facebook/xnli``.
        configs: Language code -> hub configuration (``{"zh": "chinese_simplified"}``).
        eval_split: The split the paper evaluates on.
        paper_languages: The languages the paper reports, the default validation languages.
        paper_samples: Examples per language the paper samples (``None``: the whole split).
        fields: The record fields the evaluation data must have.
        train_source: The English training data.
        train_fields: The record fields the training data must have.
        train_split: The split of ``hub_path`` with training data in other languages (``None``: none).
        instruction: The English task instruction (a format string over the prompt fields).
        input_template: The layout of the input fields (a format string over the prompt fields).
        cue: The answer cue of the ``instruction`` style, e.g. ``"Answer:"``.
        prompt_fields: Record -> the fields the templates use (adds derived fields).
        labels: A choice task's label set (also the option texts without ``option_fields``).
        option_fields: The fields holding a choice task's option texts, in label order.
        train_target: Training record -> target text (default for a choice task: the gold option's text).
        options: Record -> a choice task's option texts (default: from ``labels`` or ``option_fields``).
        label: Record -> a choice task's gold index (default: ``label_field`` against the label set).
        num_options: A choice task's number of options (default: the label set's size).
        references: Record -> a generation task's gold answers.
        metric: ``accuracy`` (choice), ``final_number`` (MGSM), ``squad`` (XQuAD) or ``rouge_l`` (XLSum).
        max_new_tokens: Default greedy decoding length of a generation task.
        stops: A completion is cut at the first of these strings.
        truncate_field: The long field shortened when a prompt does not fit (``context``, ``text``).
        revision: The hub revision of ``hub_path``.
        required_text: Fields that must hold non-empty text; other rows are dropped as invalid.
        label_field: The field holding a choice task's label; rows labelled ``-1`` or missing are dropped.
    """

    name: str
    kind: Literal["choice", "generation"]
    hub_path: str
    configs: Mapping[str, str]
    eval_split: str
    paper_languages: tuple[str, ...]
    paper_samples: int | None
    fields: tuple[str, ...]
    train_source: DataSource
    train_fields: tuple[str, ...]
    train_split: str | None
    instruction: str
    input_template: str
    cue: str
    train_target: Callable[[Record], str] | None = None
    labels: tuple[str, ...] = ()
    option_fields: tuple[str, ...] = ()
    prompt_fields: Callable[[Record], dict[str, Any]] = _identity
    options: Callable[[Record], list[str]] | None = None
    label: Callable[[Record], int] | None = None
    num_options: int = 0
    references: Callable[[Record], list[Any]] | None = None
    metric: Literal["accuracy", "final_number", "squad", "rouge_l"] = "accuracy"
    max_new_tokens: int = 0
    stops: tuple[str, ...] = field(default_factory=tuple)
    truncate_field: str | None = None
    revision: str | None = None
    required_text: tuple[str, ...] = ()
    label_field: str | None = None

    def __post_init__(self) -> None:
        # a choice task with a label set: its options, gold index, size and training target follow from it
        names = self.labels or tuple(str(i) for i in range(len(self.option_fields)))
        if not names:
            return
        defaults = {
            "options": lambda record: [str(record[f]) for f in self.option_fields] or list(self.labels),
            "label": lambda record: int_label(record, self.label_field, names),
            "num_options": len(names),
            "train_target": lambda record: self.options(record)[self.label(record)],
        }
        for name, value in defaults.items():
            if getattr(self, name) in (None, 0):
                object.__setattr__(self, name, value)

    def invalid_reason(self, record: Record) -> str | None:
        """Why the dataset marks ``record`` invalid (``"label -1"``), or ``None`` for a usable row."""
        if self.label_field is not None:
            value = record.get(self.label_field)
            if value is None or (not isinstance(value, bool) and value in (-1, "-1")):
                return f"{self.label_field} {'null' if value is None else -1}"
        for name in self.required_text:
            value = record.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                return f"an empty {name}"
        return None

    @property
    def languages(self) -> list[str]:
        """Every language the evaluation dataset has."""
        return list(self.configs)

    def prompt_template(self, style: str) -> str:
        """The prompt format string of ``style`` (``instruction`` or ``alpaca``) over the prompt fields."""
        layout = _LAYOUTS[style].replace("{cue}", self.cue.replace("{", "{{").replace("}", "}}"))
        return layout.replace("{instruction}", self.instruction).replace("{input}", self.input_template)

    @staticmethod
    def target_prefix(style: str) -> str:
        """What goes between the prompt and the target (an option, an answer) in ``style``."""
        return _TARGET_PREFIX[style]

    def stop_strings(self, style: str) -> tuple[str, ...]:
        """Where a generated completion ends: the task's stops plus the style's section markers."""
        return (*self.stops, *_STYLE_STOPS[style])

    def eval_source(self, language: str, split: str | None = None) -> DataSource:
        """The source of ``language``'s evaluation data (``hub_path`` may be a ``builtin:`` pattern)."""
        if self.hub_path.startswith("builtin:"):
            path = self.hub_path.replace("{lang}", self.configs[language]).replace(
                "{split}", split or self.eval_split
            )
            return DataSource(path, language=language)
        return DataSource(
            self.hub_path,
            name=self.configs[language],
            split=split or self.eval_split,
            language=language,
            revision=self.revision,
        )


def int_label(record: Record, field_name: str, names: tuple[str, ...]) -> int:
    """A record's label as an index into ``names``; the label may be the index or the name itself.

    Raises:
        ValueError: the label is neither an index in ``range(len(names))`` nor one of ``names``.
    """
    value = record[field_name]
    if isinstance(value, str) and value.strip().lower() in names:
        return names.index(value.strip().lower())
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        return value
    choices = ", ".join(f"{i} ({n})" for i, n in enumerate(names))
    raise ValueError(f"{field_name}={value!r} is outside the label set {{{choices}}}")
