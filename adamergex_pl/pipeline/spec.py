"""What ``adamergex pipeline`` reads: one YAML for the whole AdaMergeX experiment, one task or many.

The recipe (arXiv 2402.18913, section 3): fine-tune the task adapter ``A(T,src)`` in the source language, the
reference adapters ``A(R,lang)`` (the paper: causal LM on Wikipedia) in the source and every target language, and, where
target-language task data exists, an oracle ``A(T,tgt)``; then compare, per target language,
``A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))`` with AriMerge, zero-shot transfer, the bare base model and the oracle.

Each fit is an ``adamergex fit`` of the shared ``trainer``/``model`` settings, the stage's overrides and its
``data`` (``{lang}`` replaced by the stage's language); the evaluation is an ``adamergex validate`` of a
``MergeModule``. One task (``task``, ``evaluation``, ... at the top level) or several (``tasks``); one
reference task (``reference``) or several (``references``), each trained once per language for every task.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.merging.merge import checked_scale
from adamergex_pl.merging.methods import METHODS, check_methods, check_sweeps

_WORD = re.compile(r"[A-Za-z0-9_]+")


@dataclass
class FitSpec:
    """A family of fits: the task fits (source language and oracles) or the reference fits (every language).

    Args:
        data: the LightningDataModule config (``class_path`` and ``init_args``); ``{lang}`` in any string is
            replaced by the fit's language, e.g. ``train: {path: "data/wiki_{lang}.jsonl"}``.
        model: ``AdapterModule`` arguments that override the pipeline's shared ``model`` for these fits.
        trainer: ``Trainer`` arguments that override the pipeline's shared ``trainer`` for these fits.
        name: what the adapters learn, recorded in their snapshots (``task`` of ``AdapterModule``).
    """

    data: dict[str, Any]
    model: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)
    name: str = "task"


@dataclass
class EvaluationSpec:
    """The comparison: a ``MergeModule`` validated on every evaluation language.

    Args:
        data: the LightningDataModule config whose validation sets are the evaluation languages (one per
            language, each named by its ``language``).
        merge: extra ``MergeModule`` arguments (``lora_mode``, ``ia3_mode``, ``svd_rank``, ``save_best``, ...).
        trainer: ``Trainer`` arguments that override the pipeline's shared ``trainer`` for the evaluation.
    """

    data: dict[str, Any]
    merge: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)


@dataclass
class PipelineTask:
    """One task of a multi-task pipeline (its name is its key under ``tasks``).

    Args:
        fit: the task fits: ``A(T,src)`` and, in ``oracle_langs``, the oracles ``A(T,tgt)``.
        evaluation: the comparison of methods on this task's languages.
        tgt_langs: the languages to transfer this task to (required, at least one).
        oracle_langs: target languages with task training data (an oracle is trained there).
        metric: the task's main metric (e.g. ``accuracy``); default: the first that is not a loss.
        src_lang: the task's source language (default: the pipeline's ``src_lang``).
        evaluate_src: evaluate the source language too (``false`` where the data has none, e.g. XCOPA).

    Raises:
        ValueError: no target language, a target equal to the source, or oracle languages that are not targets.
    """

    fit: FitSpec
    evaluation: EvaluationSpec
    tgt_langs: list[str] = field(default_factory=list)  # required: check() names the task that lacks it
    oracle_langs: list[str] = field(default_factory=list)
    metric: str | None = None
    src_lang: str | None = None
    evaluate_src: bool = True

    @property
    def languages(self) -> list[str]:
        """The source language, then the targets (``src_lang`` must be set: :class:`PipelineSpec` does)."""
        return [self.src_lang, *self.tgt_langs]

    @property
    def eval_languages(self) -> list[str]:
        """The languages the comparison is evaluated on."""
        return self.languages if self.evaluate_src else list(self.tgt_langs)

    def check(self, name: str) -> None:
        where = f"tasks.{name}." if name else ""
        if not self.tgt_langs:
            raise InvalidValueError(
                f"{where}tgt_langs is empty; name at least one target language, e.g. [es]"
            )
        if self.src_lang in self.tgt_langs:
            raise InvalidValueError(
                f"src_lang={self.src_lang!r} is also in {where}tgt_langs={self.tgt_langs}; drop it there"
            )
        stray = [lang for lang in self.oracle_langs if lang not in self.tgt_langs]
        if stray:
            raise InvalidValueError(
                f"{where}oracle_langs {stray} are not in {where}tgt_langs={self.tgt_langs}"
            )
        self._check_evaluation_languages(where)

    def _check_evaluation_languages(self, where: str) -> None:
        """An evaluation ``val`` list must validate on exactly this task's languages: checked before any fit,
        rather than after every fit when the comparison finds a language missing."""
        init = self.evaluation.data.get("init_args") or {}
        if isinstance(init.get("languages"), list) and sorted(init["languages"]) != sorted(
            self.eval_languages
        ):
            raise InvalidValueError(
                f"{where}evaluation.data languages {init['languages']} differ from the task's languages "
                f"{self.eval_languages}; drop languages there: the pipeline fills it in"
            )
        sources = init.get("val")
        if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
            return  # one {lang} template (expanded per language), or a DataModule that names them otherwise
        found = [s.get("language") for s in sources]
        if sorted(map(str, found)) != sorted(self.eval_languages):
            raise InvalidValueError(
                f"{where}evaluation.data validates on languages {found}, but the task's languages are "
                f"{self.eval_languages} (src_lang + tgt_langs); give one val source per language, each with "
                "its language, or one source with {lang} in it"
            )


@dataclass
class PipelineSpec:
    """The AdaMergeX experiment end to end: reference adapters per language, and one or more tasks.

    Args:
        reference: the reference-task fits, in every language any task uses (or use ``references``).
        references: several reference tasks by name, each a :class:`FitSpec`, compared once each.
        task: one task's fits (the single-task form; or use ``tasks``).
        evaluation: that task's comparison of methods per language.
        tasks: several tasks by name (the multi-task form: each a :class:`PipelineTask`).
        run_dir: where every stage writes (``<run_dir>/<stage>/``) and the report goes.
        src_lang: the language of the task training data.
        tgt_langs: single-task form: the languages to transfer the task to.
        oracle_langs: single-task form: target languages with task training data (for ``oracle``).
        methods: what to compare, by their registry names (:mod:`adamergex_pl.merging.methods`).
        scales: the values of ``t`` to sweep.
        swaps: ``layer_swap``: the layer counts ``K`` to sweep (``K`` bottom and ``K`` top layers swapped).
        metric: single-task form: the report's main metric (e.g. ``accuracy``).
        trainer: ``Trainer`` arguments shared by every stage.
        model: ``AdapterModule`` arguments shared by every fit (base-model options also go to the evaluation).
        seed: ``seed_everything`` of every stage.
        checkpoint_every_n_train_steps: how often (optimizer steps) each fit writes its resumable ``last.ckpt``.

    Raises:
        ValueError: both forms or neither, a reference name that is not a word, unknown methods, a target
            equal to the source, oracles that are not targets or missing for ``oracle``, or no ``base_model``.
    """

    reference: FitSpec | None = None
    references: dict[str, FitSpec] = field(default_factory=dict)
    task: FitSpec | None = None
    evaluation: EvaluationSpec | None = None
    tasks: dict[str, PipelineTask] = field(default_factory=dict)
    run_dir: str = "runs/adamergex"
    src_lang: str = "en"
    tgt_langs: list[str] = field(default_factory=list)
    oracle_langs: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: ["base", "zero_shot", "arimerge", "adamergex"])
    scales: list[float] = field(default_factory=lambda: [1.0])
    swaps: list[int] = field(default_factory=list)
    metric: str | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    checkpoint_every_n_train_steps: int = 50

    def __post_init__(self) -> None:
        check_methods(self.methods)
        check_sweeps(self.methods, ("scale", "swap"), "the pipeline")
        self._check_references()
        if "layer_swap" in self.methods and not self.swaps:
            raise InvalidValueError(
                "methods include 'layer_swap' but swaps is empty; give K values, e.g. [1, 2]"
            )
        single = {"task": self.task, "evaluation": self.evaluation, "tgt_langs": self.tgt_langs}
        single.update(oracle_langs=self.oracle_langs, metric=self.metric)
        given = [key for key, value in single.items() if value]
        if self.tasks and given:
            raise InvalidValueError(
                f"give either tasks: (several tasks) or the single-task keys {given}, not both; move them under "
                "tasks.<name>"
            )
        if not self.tasks:
            if self.task is None or self.evaluation is None:
                raise InvalidValueError(
                    "no task: give task: and evaluation: (one task) or tasks: {<name>: {fit, evaluation, "
                    "tgt_langs}}"
                )
            self.tasks = {
                self.task.name: PipelineTask(
                    self.task, self.evaluation, list(self.tgt_langs), list(self.oracle_langs), self.metric
                )
            }
            where = ""
        else:
            where = None
        for name, task in self.tasks.items():
            if task.src_lang is None:
                task.src_lang = self.src_lang
            task.fit.name = name if where is None else task.fit.name
            task.check(name if where is None else "")
        if "oracle" in self.methods and not any(t.oracle_langs for t in self.tasks.values()):
            raise InvalidValueError(
                "methods include 'oracle' but oracle_langs is empty; list the target languages with task data"
            )
        if "base_model" not in self.model:
            raise InvalidValueError(
                "model.base_model is missing; name the base model, e.g. builtin:demo-bilingual"
            )
        if not self.scales and any(METHODS[m].sweep == "scale" for m in self.methods):
            raise InvalidValueError("scales is empty; give at least one t, e.g. [1.0]")
        self.scales = [checked_scale(scale, "scales") for scale in self.scales]  # before the first fit

        every = self.checkpoint_every_n_train_steps
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InvalidValueError(
                f"checkpoint_every_n_train_steps={every!r} must be a positive integer, e.g. 50"
            )

    def _check_references(self) -> None:
        """One reference (``reference``) becomes ``references`` of one entry, the same object."""
        if (self.reference is None) == (not self.references):
            raise InvalidValueError(
                "give either reference: (one reference task) or references: {<name>: {data, model, trainer}} "
                f"(several), {'not both' if self.reference is not None else 'one of them'}"
            )
        if self.reference is not None:
            self.references = {self.reference.name: self.reference}
            return
        for name, fit in self.references.items():
            if not _WORD.fullmatch(name):
                raise InvalidValueError(
                    f"references.{name!r}: a reference task's name names stages and folders; use letters, "
                    "digits and underscores, e.g. wiki_lm"
                )
            fit.name = name

    @property
    def languages(self) -> list[str]:
        """Every language any task uses, sources first, in order of appearance."""
        found = [t.src_lang for t in self.tasks.values()]
        found += [lang for t in self.tasks.values() for lang in t.tgt_langs]
        return list(dict.fromkeys(found))
