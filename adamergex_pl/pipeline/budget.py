"""What each stage of a pipeline will cost, before anything runs: per fit the examples and tokens it trains on,
per evaluate stage the adapters, items and tokens it evaluates; per stage and in total.

``adamergex pipeline --dry-run`` prints it beside each stage. Fit counts are exact (the stage's DataModule is
built and prepared): examples per epoch times ``max_epochs`` (or ``max_steps × batch_size ×
accumulate_grad_batches``) and their tokens, padding excluded. Counting never downloads; unreadable data is
reported as unknown and left out of the total. An evaluate stage costs, per language, one adapter per method
and swept value times the items' forward tokens (plus at most ``max_new_tokens`` generated per generation
item), bounded by ``planned_eval_items()`` where the data cannot be read. With a selection split, every
adapter runs on the selection items and one per method on the others (``MergeModule`` runs only each merge
method's chosen value there).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.merging.methods import METHODS
from adamergex_pl.metrics.bootstrap import split_item_ids


@dataclass(frozen=True)
class FitBudget:
    """Examples and tokens a fit trains on (``None`` when unknown, with ``reason``).

    ``upper_bound`` marks counts that come from the config alone (``max_windows × window_tokens``, or
    ``max_train_samples × max_length``, times the epochs) because the data could not be read.
    """

    examples: int | None
    tokens: int | None
    reason: str = ""
    upper_bound: bool = False

    def describe(self) -> str:
        if self.examples is None:
            return f"examples ? tokens ? ({self.reason})"
        if self.upper_bound:
            return f"examples <={self.examples:,} tokens <={self.tokens:,} (from the config: {self.reason})"
        return f"examples {self.examples:,} tokens {self.tokens:,}"


def count_offline() -> None:
    """Make the hub libraries offline for this process: a dry run must be quick and never download (or retry a
    network it cannot reach), so hub data counts only if it is cached or mirrored. A library imported already
    read its setting at import: it is switched too. ``HF_HUB_OFFLINE=0`` set by the user is kept."""
    import os
    import sys

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")
    if os.environ["HF_HUB_OFFLINE"].upper() not in ("1", "ON", "YES", "TRUE"):
        return
    if (constants := sys.modules.get("huggingface_hub.constants")) is not None:
        constants.HF_HUB_OFFLINE = True
    if (config := sys.modules.get("datasets.config")) is not None:
        config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True


def fit_budget(config: dict[str, Any]) -> FitBudget:
    """The budget of one ``adamergex fit`` config (a pipeline stage's)."""
    data = {**config["data"], "init_args": dict(config["data"].get("init_args") or {})}
    data["init_args"].setdefault("tokenizer", config["model"]["init_args"]["base_model"])
    try:
        datamodule = _datamodule(data)
        datamodule.setup("fit")
        examples = list(datamodule.train_examples)
    except Exception as err:  # offline hub data, a missing file: the dry run still lists the stage
        return _bound_from_config(data["init_args"], config.get("trainer") or {}, _reason(err))
    per_epoch = len(examples)
    tokens_per_epoch = sum(len(example["input_ids"]) for example in examples)
    trainer = config.get("trainer") or {}
    if trainer.get("max_steps") not in (None, -1):
        batch = int(data["init_args"].get("batch_size", 1)) * int(trainer.get("accumulate_grad_batches", 1))
        seen = int(trainer["max_steps"]) * batch
        mean = tokens_per_epoch / max(per_epoch, 1)
        return FitBudget(seen, round(seen * mean))
    epochs = int(trainer.get("max_epochs") or 1)
    return FitBudget(per_epoch * epochs, tokens_per_epoch * epochs)


def _bound_from_config(init: dict[str, Any], trainer: dict[str, Any], reason: str) -> FitBudget:
    """What the config alone caps a fit at, when its data cannot be read here."""
    epochs = int(trainer.get("max_epochs") or 1)
    if init.get("max_windows"):
        examples = int(init["max_windows"]) * epochs
        return FitBudget(
            examples, examples * int(init.get("window_tokens", 512)), "data not readable here", True
        )
    if init.get("max_train_samples") and init.get("max_length"):
        examples = int(init["max_train_samples"]) * epochs
        return FitBudget(examples, examples * int(init["max_length"]), "data not readable here", True)
    return FitBudget(None, None, reason)


@dataclass(frozen=True)
class EvalBudget:
    """What an evaluate stage evaluates (``None`` when unknown, with ``reason``).

    Args:
        adapters: per language, the adapters evaluated (methods × swept values).
        items: per language, the items.
        evaluations: adapter-item evaluations over every language (an adapter run on an item).
        adapters_on_test: with a selection split, per language, the adapters run on the test items (one per
            method; every adapter runs on the selection items); ``None`` without one.
        tokens: forward tokens of prompts and options over every adapter.
        generated: at most this many generated tokens over every adapter.
        upper_bound: the counts come from the config (``max_length`` per row) because the data was not read.
    """

    adapters: dict[str, int]
    items: dict[str, int] | None
    tokens: int | None
    generated: int | None
    reason: str = ""
    upper_bound: bool = False
    evaluations: int | None = None
    adapters_on_test: dict[str, int] | None = None

    def describe(self) -> str:
        shown = "adapters " + "/".join(str(a) for a in sorted(set(self.adapters.values()))) + " per language"
        if self.adapters_on_test is not None:
            chosen = "/".join(str(a) for a in sorted(set(self.adapters_on_test.values())))
            shown += f" on the selection items, {chosen} (the chosen t) on the rest"
        if self.items is None:
            return f"{shown}, items ? ({self.reason})"
        le = "<=" if self.upper_bound else ""
        items = sorted(set(self.items.values()))
        line = (
            f"{shown}, items {le}{'/'.join(f'{i:,}' for i in items)} per language, "
            f"forward tokens {le}{self.tokens:,}, generated tokens <={self.generated:,}"
        )
        return line + (f" (from the config: {self.reason})" if self.upper_bound else "")


def eval_budget(config: dict[str, Any]) -> EvalBudget:
    """The budget of one evaluate stage's ``adamergex validate`` config (``MergeModule``)."""
    merge = config["model"]["init_args"]
    fraction, seed = merge.get("selection_fraction"), int(merge.get("stats_seed", 0))
    data = {**config["data"], "init_args": dict(config["data"].get("init_args") or {})}
    data["init_args"].setdefault("tokenizer", merge["base_model"])
    try:
        datamodule = _datamodule(data)
    except Exception as err:
        return EvalBudget({}, None, None, None, _reason(err))
    try:
        datamodule.setup("validate")
        examples = {lang: list(datamodule.val_examples[lang]) for lang in datamodule.val_languages}
    except Exception as err:  # offline hub data: bound it from what the DataModule knows without data
        planned = getattr(datamodule, "planned_eval_items", lambda: None)()
        languages = list(getattr(datamodule, "planned_val_languages", lambda: None)() or [])
        adapters = {lang: _adapters(merge, lang) for lang in languages}
        on_test = _adapters_on_test(merge, languages, adapters)
        if not planned or not planned.get("items") or not languages:
            on_test = on_test if _prunes(merge) else None
            return EvalBudget(adapters, None, None, None, _reason(err), adapters_on_test=on_test)
        runs = 0  # adapter runs per item, summed over languages
        for lang in languages:
            selected = _selection(range(planned["items"]), fraction, seed)
            runs += len(selected) * adapters[lang] + (planned["items"] - len(selected)) * on_test[lang]
        return EvalBudget(
            adapters,
            dict.fromkeys(languages, planned["items"]),
            runs * planned.get("rows_per_item", 1) * planned["max_length"],
            runs * planned.get("max_new_tokens", 0),
            "data not readable here",
            True,
            runs,
            on_test if _prunes(merge) else None,
        )
    adapters = {lang: _adapters(merge, lang) for lang in examples}
    on_test = _adapters_on_test(merge, examples, adapters)
    shared = getattr(datamodule, "share_prompt", True)
    new_tokens = int(getattr(datamodule, "max_new_tokens", 0) or 0)
    tokens = generated = evaluations = 0
    for lang, items in examples.items():
        selected = _selection([item.get("index", i) for i, item in enumerate(items)], fraction, seed)
        for i, item in enumerate(items):
            runs = adapters[lang] if item.get("index", i) in selected else on_test[lang]
            evaluations += runs
            if "option_ids" in item:
                prompt = len(item["prompt_ids"]) * (1 if shared else len(item["option_ids"]))
                tokens += runs * (prompt + sum(len(o) for o in item["option_ids"]))
            else:
                tokens += runs * len(item["input_ids"])
                generated += runs * new_tokens
    items = {lang: len(items) for lang, items in examples.items()}
    on_test = on_test if _prunes(merge) else None
    return EvalBudget(adapters, items, tokens, generated, evaluations=evaluations, adapters_on_test=on_test)


def _adapters(merge: dict[str, Any], language: str, chosen_only: bool = False) -> int:
    """How many adapters ``MergeModule`` evaluates on ``language``: one per method and swept value (one per
    method with ``chosen_only``: what runs on the test items of a selection split)."""
    counts = {"scale": len(merge.get("scales") or [1.0]), "swap": len(merge.get("swaps") or [])}
    total = 0
    for name in merge.get("methods") or ["zero_shot", "arimerge", "adamergex"]:
        if name == "oracle":
            total += language in (merge.get("oracle_adapters") or {})
        else:
            total += 1 if chosen_only else counts.get(METHODS[name].sweep, 1)
    return total


def _prunes(merge: dict[str, Any]) -> bool:
    """Whether ``MergeModule`` runs fewer adapters on the test items: a selection split and a sweep."""
    return merge.get("selection_fraction") is not None and _adapters(merge, "_") > _adapters(merge, "_", True)


def _adapters_on_test(merge: dict[str, Any], languages, adapters: dict[str, int]) -> dict[str, int]:
    if not _prunes(merge):
        return adapters
    return {lang: _adapters(merge, lang, chosen_only=True) for lang in languages}


def _selection(ids, fraction: float | None, seed: int) -> set[int]:
    """The selection items' ids, as ``MergeModule`` splits them (every id without a split)."""
    if fraction is None:
        return set(ids)
    try:
        selected, _ = split_item_ids(ids, float(fraction), seed)
    except InvalidValueError:  # the evaluation refuses this split itself
        return set(ids)
    return set(selected.tolist())


def _datamodule(data: dict[str, Any]):
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data")
    return parser.instantiate(parser.parse_object({"data": data})).data


def _reason(err: Exception) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:70]}"


def gpu_hours(tokens: int, throughput: float) -> float:
    """Hours at ``throughput`` tokens per second."""
    return tokens / throughput / 3600
