"""What ``adamergex pipeline`` reads: one YAML for the whole AdaMergeX recipe.

The recipe (arXiv 2402.18913, section 3): fine-tune the task adapter ``A(T,src)`` in the source language, the
reference adapters ``A(R,lang)`` (causal LM on Wikipedia) in the source and every target language, and, where
target-language task data exists, an oracle ``A(T,tgt)``; then compare, per target language,
``A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))`` with AriMerge, zero-shot transfer, the bare base model and the oracle.

Each fit is an ordinary ``adamergex fit`` whose config the pipeline writes from three parts: the shared
``trainer`` and ``model`` settings, the stage's own overrides, and its ``data``, in which every string's
``{lang}`` is replaced by the stage's language. The evaluation is an ``adamergex validate`` of a
``MergeModule`` on ``evaluation.data``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.merging.methods import METHODS, check_methods, check_sweeps


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
class PipelineSpec:
    """The AdaMergeX recipe end to end.

    Args:
        task: the task fits (source language, and oracles in ``oracle_langs``).
        reference: the reference-task fits, in ``src_lang`` and every ``tgt_langs``.
        evaluation: the comparison of methods per language.
        run_dir: where every stage writes (``<run_dir>/<stage>/``) and the report goes.
        src_lang: the language of the task training data.
        tgt_langs: the languages to transfer the task to.
        oracle_langs: target languages that have task training data: a task adapter is trained there too
            (the ``oracle`` method, an upper bound).
        methods: what to compare: ``adamergex``, ``adamergex_factor`` (LoRA), ``arimerge``, ``zero_shot``,
            ``base``, ``oracle``.
        scales: the values of ``t`` to sweep.
        metric: the report's main metric (e.g. ``accuracy``); default: the first that is not a loss.
        trainer: ``Trainer`` arguments shared by every stage.
        model: ``AdapterModule`` arguments shared by every fit (``base_model``, ``adapter_type``,
            ``quantization``, ranks, learning rate, ...); ``base_model`` and ``quantization`` also go to the
            evaluation.
        seed: ``seed_everything`` of every stage.
        checkpoint_every_n_train_steps: every fit writes its ``last.ckpt`` this often (in optimizer steps) and
            at every epoch end (``callbacks.RunCheckpoint``), so that a killed pipeline resumes its fit.

    Raises:
        ValueError: unknown methods, a target language equal to the source, oracle languages that are not
            targets, ``oracle`` without oracle languages, or a model without ``base_model``.
    """

    task: FitSpec
    reference: FitSpec
    evaluation: EvaluationSpec
    run_dir: str = "runs/adamergex"
    src_lang: str = "en"
    tgt_langs: list[str] = field(default_factory=list)
    oracle_langs: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: ["base", "zero_shot", "arimerge", "adamergex"])
    scales: list[float] = field(default_factory=lambda: [1.0])
    metric: str | None = None
    trainer: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    checkpoint_every_n_train_steps: int = 50

    def __post_init__(self) -> None:
        check_methods(self.methods)
        check_sweeps(self.methods, ("scale",), "the pipeline")
        if not self.tgt_langs:
            raise InvalidValueError("tgt_langs is empty; name at least one target language, e.g. [es]")
        if self.src_lang in self.tgt_langs:
            raise InvalidValueError(
                f"src_lang={self.src_lang!r} is also in tgt_langs={self.tgt_langs}; drop it there"
            )
        stray = [lang for lang in self.oracle_langs if lang not in self.tgt_langs]
        if stray:
            raise InvalidValueError(f"oracle_langs {stray} are not in tgt_langs={self.tgt_langs}")
        if "oracle" in self.methods and not self.oracle_langs:
            raise InvalidValueError(
                "methods include 'oracle' but oracle_langs is empty; list the target languages with task data"
            )
        if "base_model" not in self.model:
            raise InvalidValueError(
                "model.base_model is missing; name the base model, e.g. builtin:demo-bilingual"
            )
        if not self.scales and any(METHODS[m].sweep == "scale" for m in self.methods):
            raise InvalidValueError("scales is empty; give at least one t, e.g. [1.0]")

        every = self.checkpoint_every_n_train_steps
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InvalidValueError(
                f"checkpoint_every_n_train_steps={every!r} must be a positive integer, e.g. 50"
            )
        self._check_evaluation_languages()

    @property
    def languages(self) -> list[str]:
        return [self.src_lang, *self.tgt_langs]

    def _check_evaluation_languages(self) -> None:
        """The evaluation data must validate on exactly ``src_lang`` and ``tgt_langs``: checked here, before
        any fit, rather than after every fit when the comparison finds a language missing."""
        sources = (self.evaluation.data.get("init_args") or {}).get("val")
        if not isinstance(sources, list) or not all(isinstance(s, dict) for s in sources):
            return  # a DataModule that names its languages otherwise: the evaluation checks them
        found = [s.get("language") for s in sources]
        if sorted(map(str, found)) != sorted(self.languages):
            raise InvalidValueError(
                f"evaluation.data validates on languages {found}, but the pipeline's languages are "
                f"{self.languages} (src_lang + tgt_langs); give one evaluation.data val source per language, "
                "each with its language"
            )
