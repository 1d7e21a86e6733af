"""LightningModule that evaluates AdaMergeX and its baselines per target language on one loaded base model.

For every validation language ``tgt`` and scale ``t`` it builds, in memory,

    adamergex         A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))      (LoRA: exact rank-concatenation; (IA)³: ⊙, ⊘)
    adamergex_factor  the same with LoRA factors merged element-wise (the paper's released code)
    arimerge          A(T,src) ⊕ t·A(R,tgt)                    (arithmetic-merging baseline)

and compares them with ``zero_shot`` (the source task adapter), ``base`` (no adapter) and ``oracle`` (a task
adapter trained in the target language). All are named adapters of one ``PeftModel`` over a base model loaded
once; only one language's merged adapters are held at a time. Every result carries ``n``, a bootstrap interval
and a paired comparison with ``zero_shot`` (:mod:`adamergex_pl.results.statistics`).

With ``selection_fraction`` on one process, each language's selection items are evaluated first; every value of
``t`` (and ``K``) runs on them, and only each merge method's chosen value on the other (test) items: the results
are those of evaluating everything (:func:`adamergex_pl.results.selection.reported`), at a fraction of the cost.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningModule
from torch import nn
from typing_extensions import override

from adamergex_pl.atomic_files import write_jsonl_atomic
from adamergex_pl.errors import InvalidValueError
from adamergex_pl.evaluation.language_modeling import LanguageModelingEvaluator
from adamergex_pl.merging.merge import checked_scale
from adamergex_pl.merging.merge_results import MergeResults, Variant, language_and_metric
from adamergex_pl.merging.methods import (
    METHODS,
    REF_SRC,
    REF_TGT,
    TASK_SRC,
    TASK_SRC_STACKED,
    check_adapter_type,
    check_methods,
    check_sweeps,
    merge_method_names,
)
from adamergex_pl.metrics.bootstrap import split_item_ids
from adamergex_pl.results.printing import claim_results_printing, print_report
from adamergex_pl.results.selection import best_per_language, main_metric
from adamergex_pl.results.statistics import StatisticsOptions
from adamergex_pl.training.base_model import BaseModelOptions
from adamergex_pl.training.strategy_support import check_strategy
from callbacks.adapter_snapshot import resolve_adapter_dir

TASK_ADAPTER = "zero_shot"


class MergeModule(LightningModule):
    """Builds merged adapters for several methods and scales, and validates each on every language.

    Logs ``val/<method>/<t>/<evaluator key>`` (e.g. ``val/adamergex/0.5/es/loss``) and writes ``results.csv``,
    ``results.json`` and ``results.md`` to ``results_dir``.

    Args:
        base_model: the base model the adapters were trained on (hub name, local path, ``builtin:<name>``).
        task_src: ``A(T,src)``, the task adapter in the source language (adapter directory or snapshot root).
        reference_adapters: ``A(R,lang)`` per language, ``{en: dir, es: dir, ...}`` (``src_lang`` included).
        src_lang: the source language.
        methods: what to compare, by name in :mod:`adamergex_pl.merging.methods` (e.g. ``adamergex``, ``ties``).
        scales: the values of ``t`` for the merge methods.
        swaps: ``layer_swap``: the layer counts ``K`` to sweep (shown in the ``t`` column).
        oracle_adapters: task adapters trained in a target language, ``{es: dir}`` (for ``oracle``).
        task_src_stacked: the task adapter trained stacked on ``A(R,src)`` (for ``stack``).
        lora_mode: how ``adamergex`` merges LoRA: ``exact`` or ``svd`` (``adamergex_factor`` is ``factor``).
        svd_rank: the rank for ``lora_mode: svd``, and the rank ``ties``/``dare_ties`` store LoRA merges at.
        density: the TIES methods: the fraction of each vector's entries kept, in (0, 1].
        allow_partial_modules: merge adapters that adapt different modules, a missing one counting as no update
            (refused by default).
        ia3_mode: how (IA)³ merges: ``paper`` (``l_T ⊙ (t·(l_tgt ⊘ l_src − 1) + 1)``) or ``loglinear``.
        quantization: storage of the base weights: ``nf4`` | ``fp4`` | ``int8`` | ``none``.
        double_quant: 4-bit only: double quantization.
        compute_dtype: 4-bit only: matmul dtype.
        quant_storage: 4-bit only: storage dtype of packed weights (the model dtype for FSDP).
        dtype: dtype of unquantized base weights.
        attn_implementation: transformers attention backend.
        results_dir: where the result tables and best adapters go (default ``<default_root_dir>/merge_results``).
        save_best: write each target language's best merge by ``selection_metric`` to ``<results_dir>/best/<lang>/``.
        overwrite: replace an earlier run's results in ``results_dir`` (refused by default).
        selection_metric: the metric that picks the best merge (default: the first not a loss or perplexity).
        task: the task's name, recorded in the results.
        reference_task: the reference task's name (e.g. ``wiki_lm``), recorded in the results.
        selection_fraction: choose the best ``t`` on this share of each language's items, report on the rest.
        confidence: coverage of the bootstrap intervals.
        bootstrap_resamples: resamples of every bootstrap.
        stats_seed: seed of the bootstrap and of the selection split.

    Raises:
        ValueError: an unknown method, no scales for a merge method, ``adamergex_factor`` with (IA)³ adapters,
            ``oracle`` without oracle adapters, or a missing reference adapter for an evaluated language; a
            ``results_dir`` that holds an earlier run's results (without ``overwrite``).

    Example:
        ``adamergex validate --config configs/merge/tiny_lora.yaml``
    """

    def __init__(
        self,
        base_model: str,
        task_src: str,
        reference_adapters: dict[str, str],
        src_lang: str = "en",
        methods: list[str] | None = None,
        scales: list[float] | None = None,
        swaps: list[int] | None = None,
        oracle_adapters: dict[str, str] | None = None,
        task_src_stacked: str | None = None,
        lora_mode: Literal["exact", "svd"] = "exact",
        svd_rank: int | None = None,
        ia3_mode: Literal["paper", "loglinear"] = "paper",
        density: float = 0.2,
        allow_partial_modules: bool = False,
        quantization: Literal["nf4", "fp4", "int8", "none"] = "none",
        double_quant: bool = True,
        compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
        quant_storage: Literal["float32", "bfloat16", "float16"] | None = None,
        dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
        attn_implementation: str | None = "sdpa",
        results_dir: str | None = None,
        save_best: bool = False,
        overwrite: bool = False,
        selection_metric: str | None = None,
        task: str = "task",
        reference_task: str | None = None,
        selection_fraction: float | None = None,
        confidence: float = 0.95,
        bootstrap_resamples: int = 2000,
        stats_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        methods = list(methods or ["zero_shot", "arimerge", "adamergex"])
        scales = [checked_scale(s, "scales") for s in (scales or [1.0])]
        check_methods(methods)
        check_sweeps(methods, ("scale", "swap"), "MergeModule")
        if "layer_swap" in methods and not swaps:
            raise InvalidValueError(
                "methods include 'layer_swap' but swaps is empty; give the layer counts K to sweep, e.g. [1, 2]"
            )
        sweeps = {"scale": scales, "swap": [float(k) for k in (swaps or [])]}
        if "oracle" in methods and not oracle_adapters:
            raise InvalidValueError(
                "methods include 'oracle' but oracle_adapters is empty; give {lang: adapter_dir}"
            )
        if lora_mode == "svd" and not svd_rank:
            raise InvalidValueError("lora_mode='svd' needs svd_rank, e.g. 8")
        if src_lang not in reference_adapters:
            raise InvalidValueError(
                f"reference_adapters has no entry for src_lang={src_lang!r} (it has {sorted(reference_adapters)}); "
                "AdaMergeX subtracts the source-language reference adapter"
            )
        self.statistics = StatisticsOptions(confidence, bootstrap_resamples, stats_seed, selection_fraction)
        self.base_options = BaseModelOptions.from_args(
            base_model, quantization, double_quant, compute_dtype, quant_storage, dtype, attn_implementation
        )
        self.quantization = self.base_options.quantization
        self.task_dir = resolve_adapter_dir(task_src, "task_src")
        if "stack" in methods and not task_src_stacked:
            raise InvalidValueError(
                "methods include 'stack' but task_src_stacked is empty; give the task adapter trained with "
                "stack_on: <A(R,src)> (the pipeline's task_<src>_stacked stage)"
            )
        self.stacked_task_dir = (
            resolve_adapter_dir(task_src_stacked, "task_src_stacked") if task_src_stacked else None
        )
        self.reference_dirs = {
            lang: resolve_adapter_dir(path, f"reference_adapters.{lang}")
            for lang, path in reference_adapters.items()
        }
        self.oracle_dirs = {
            lang: resolve_adapter_dir(path, f"oracle_adapters.{lang}")
            for lang, path in (oracle_adapters or {}).items()
        }
        self.variants = [Variant(m, s) for m in methods for s in sweeps.get(METHODS[m].sweep, [None])]
        self.model: nn.Module | None = None
        self.evaluators = nn.ModuleDict()
        self.results: MergeResults | None = None
        self._weights: dict[str, Any] = {}
        self._loaded_language: str | None = None
        self._predictions: list[dict[str, Any]] = []
        self._held_out: dict[
            str, torch.Tensor
        ] = {}  # per language: the selection items' ids, evaluated first
        self._on_test: dict[str, list[Variant]] = {}  # per language: the variants run on its test items

    # ------------------------------------------------------------------ model and adapters
    @override
    def configure_model(self) -> None:
        if self.model is not None:
            return
        from peft import PeftModel

        from adamergex_pl.merging.adapters import AdapterWeights

        hp = self.hparams
        base = self.base_options.load_for(self)
        self.model = PeftModel.from_pretrained(base, str(self.task_dir), adapter_name=TASK_ADAPTER).eval()
        self._weights = {"task": AdapterWeights.load(self.task_dir)}
        if self.stacked_task_dir is not None:
            self._weights["stacked"] = AdapterWeights.load(self.stacked_task_dir)
        self._weights.update(
            {f"ref:{lang}": AdapterWeights.load(d) for lang, d in self.reference_dirs.items()}
        )
        check_adapter_type(hp.methods, self._weights["task"].adapter_type)

    def merged_adapter(self, variant: Variant, language: str):
        """The in-memory adapter of a merge ``variant`` for ``language`` (a ``MergeResult``)."""
        hp = self.hparams
        if f"ref:{language}" not in self._weights:
            raise InvalidValueError(
                f"no reference adapter for language {language!r}: reference_adapters has "
                f"{sorted(self.reference_dirs)}; add {language}: <A(R,{language}) dir> or drop the merge methods"
            )
        adapters = {
            TASK_SRC: self._weights["task"],
            REF_SRC: self._weights[f"ref:{hp.src_lang}"],
            REF_TGT: self._weights[f"ref:{language}"],
            TASK_SRC_STACKED: self._weights.get("stacked"),
        }
        options = {
            "lora_mode": hp.lora_mode,
            "svd_rank": hp.svd_rank,
            "ia3_mode": hp.ia3_mode,
            "density": hp.density,
            "allow_partial_modules": hp.allow_partial_modules,
        }
        return METHODS[variant.method].build(adapters, variant.scale, options)

    def _load_language(self, language: str) -> None:
        """Replace the previous language's merged (and oracle) adapters with this language's."""
        from adamergex_pl.merging.adapters import AdapterWeights
        from adamergex_pl.merging.live_model import add_to_peft_model

        self.model.set_adapter(TASK_ADAPTER)
        for name in list(self.model.peft_config):
            if name != TASK_ADAPTER:
                self.model.delete_adapter(name)
        for variant in self.variants:
            if METHODS[variant.method].is_merge:
                add_to_peft_model(self.model, self.merged_adapter(variant, language).adapter, variant.key)
            elif variant.method == "oracle" and language in self.oracle_dirs:
                add_to_peft_model(self.model, AdapterWeights.load(self.oracle_dirs[language]), variant.key)
        self.model.eval()
        self._loaded_language = language

    def _run_variant(self, variant: Variant, batch: dict[str, torch.Tensor], language: str) -> None:
        evaluator = self.evaluators[variant.key]
        if variant.method == "base":
            with self.model.disable_adapter():
                evaluator.update(self.model, batch, language)
            return
        if not self.covers(variant, language):
            return
        self.model.set_adapter(TASK_ADAPTER if variant.method == "zero_shot" else variant.key)
        evaluator.update(self.model, batch, language)

    # ------------------------------------------------------------------ evaluation
    @override
    def setup(self, stage: str) -> None:
        if self._trainer is not None:  # before configure_model loads the base: refuse what cannot work
            check_strategy(self.trainer.strategy, self.quantization)
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        languages = getattr(datamodule, "test_languages" if stage == "test" else "val_languages", None)
        self._languages = list(languages or [])
        if not self._languages:
            raise InvalidValueError(
                "MergeModule evaluates per language: the DataModule has no validation languages"
            )
        for variant in self.variants:
            evaluator = (
                datamodule.build_evaluator()
                if hasattr(datamodule, "build_evaluator")
                else LanguageModelingEvaluator(self._languages)
            )
            self.evaluators[variant.key] = evaluator
        hp = self.hparams
        results_dir = hp.results_dir or str(Path(self.trainer.default_root_dir) / "merge_results")
        self.results = MergeResults(
            results_dir,
            self._languages,
            hp.task,
            hp.src_lang,
            self.statistics,
            hp.selection_metric,
            hp.reference_task,
        )
        if self.trainer.is_global_zero:  # before the base loads: another run's results are never mixed in
            self.results.claim(hp.overwrite)
        self._hold_out_selection(datamodule, stage)

    def _hold_out_selection(self, datamodule: Any, stage: str) -> None:
        """With a selection split on one process, have each language's selection items evaluated first, so
        that every merge method's value is chosen before the test items (then only the chosen one runs)."""
        self._held_out, self._on_test = {}, {}
        fraction = self.statistics.selection_fraction
        swept = len({v.method for v in self.variants}) < len(self.variants)  # some method has several values
        evaluator = next(iter(self.evaluators.values()))
        limit = self.trainer.limit_test_batches if stage == "test" else self.trainer.limit_val_batches
        everything = isinstance(limit, float) and limit == 1.0  # else the split is of the items evaluated
        if fraction is None or not swept or not everything or evaluator.across_languages:
            return  # (across languages, every variant needs every item)
        if self.trainer.world_size > 1:
            return  # one shard cannot choose alone
        if not hasattr(datamodule, "evaluate_first"):
            return
        for language, ids in datamodule.eval_item_ids(stage).items():
            try:  # as the results split them
                self._held_out[language], _ = split_item_ids(ids, fraction, self.statistics.seed)
            except InvalidValueError as err:
                raise InvalidValueError(f"selection_fraction, language {language!r}: {err}") from None
        datamodule.evaluate_first(self._held_out)

    def _step(self, batch: dict[str, torch.Tensor], dataloader_idx: int) -> None:
        language = self._languages[dataloader_idx]
        if language != self._loaded_language:
            self._load_language(language)
        for variant in self._variants_for(batch, language):
            self._run_variant(variant, batch, language)

    def _variants_for(self, batch: dict[str, torch.Tensor], language: str) -> list[Variant]:
        """Every variant, but on a language's test items (after its selection items) only the chosen ones."""
        held_out = self._held_out.get(language)
        if held_out is None:
            return self.variants
        selection = torch.isin(batch["index"].cpu(), held_out)
        if bool(selection.all()):
            return self.variants
        if bool(selection.any()):
            raise RuntimeError(
                f"a {language} batch mixes selection and test items; evaluate_first was ignored"
            )
        if language not in self._on_test:
            self._on_test[language] = self._choose(language)
        return self._on_test[language]

    def _choose(self, language: str) -> list[Variant]:
        """The variants to run on ``language``'s test items: each merge method at its best value on the
        selection items (all its values where none is finite, so that NaNs show), and every other method."""
        held_out = self._held_out[language]
        rows = []
        for variant in self.variants:
            if not METHODS[variant.method].is_merge:
                continue
            for key, items in self.evaluators[variant.key].item_scores().items():
                key_language, metric = language_and_metric(key, self._languages)
                if key_language != language:
                    continue
                selected = items.subset(held_out)
                if selected.n != held_out.numel():
                    raise RuntimeError(
                        f"{variant.label} saw {selected.n} of {held_out.numel()} selection items"
                    )
                rows.append(
                    {**vars(variant), "language": language, "metric": metric, "value": selected.value()}
                )
        metric = main_metric(
            [row["metric"] for row in rows], self.hparams.selection_metric, what="selection_metric"
        )
        best = best_per_language(rows, metric, [language], merge_method_names())
        return [
            v
            for v in self.variants
            if not METHODS[v.method].is_merge or best.get((v.method, language), vars(v))["scale"] == v.scale
        ]

    @override
    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._step(batch, dataloader_idx)

    @override
    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._step(batch, dataloader_idx)

    def covers(self, variant: Variant, language: str) -> bool:
        """Whether ``variant`` is evaluated on ``language`` (an oracle only where one was trained)."""
        return variant.method != "oracle" or language in self.oracle_dirs

    def _finish(self, prefix: str) -> None:
        languages = set(self._languages)
        for variant in self.variants:
            evaluator = self.evaluators[variant.key]
            skipped = {lang for lang in self._languages if not self.covers(variant, lang)}
            partial = {
                lang for lang, run in self._on_test.items() if variant not in run
            }  # selection items only
            items = evaluator.item_scores()  # collectives under DDP: every rank computes every variant
            for key, value in evaluator.compute().items():
                parts = set(key.split("/"))
                if parts & skipped or (skipped and not parts & languages):
                    continue  # a language the variant does not cover, or a summary over languages it skipped
                whole = not (parts & partial or (partial and not parts & languages))
                if (
                    whole
                ):  # a value over some of a language's items is logged nowhere; its items give its rows
                    self.log(f"{prefix}/{variant.label}/{key}", value, add_dataloader_idx=False)
                if whole or key in items:
                    self.results.add(variant.method, variant.scale, key, float(value), items.get(key))
            self._predictions += [
                {"method": variant.method, "scale": variant.scale, **record}
                for record in evaluator.predictions()
                if record.get("language") not in skipped
            ]
            evaluator.reset()
        self._loaded_language = None
        self._on_test = {}

    @override
    def on_validation_epoch_end(self) -> None:
        self._finish("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._finish("test")

    @override
    def on_validation_end(self) -> None:
        self._write_results()

    @override
    def on_test_end(self) -> None:
        self._write_results()

    def _write_results(self) -> None:
        show = claim_results_printing(self.trainer)  # on every rank: Lightning's own table is switched off
        if not self.trainer.is_global_zero or self.results is None or not self.results.rows:
            return
        directory = Path(self.results.directory)
        self.results.write()
        lines = [f"Results: {directory}/results.{{csv,json,md}}"]
        broken = list(
            dict.fromkeys(
                f"{Variant(row['method'], row['scale']).label} {row['language']}"
                for row in self.results.rows
                if not math.isfinite(row["value"]) and row["language"]
            )
        )
        if broken:  # a NaN is shown as nan and never chosen; it is also said here
            lines.append(
                f"Not finite (NaN or infinite model outputs; never chosen as best): {', '.join(broken)}"
            )
        if self._predictions:
            write_jsonl_atomic(directory / "predictions.jsonl", self._predictions)
            lines.append(f"Predictions: {directory / 'predictions.jsonl'}")
            self._predictions = []
        if self.hparams.save_best:  # the best merged adapter per target language, as a PEFT adapter
            hp = self.hparams
            lines += self.results.save_best(hp.selection_metric, hp.src_lang, self.merged_adapter)
        if show:
            print_report("\n\n".join([self.results.table(), "\n".join(lines)]))
