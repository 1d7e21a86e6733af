"""What each fit of a pipeline will train on, before anything runs: examples and tokens, per stage and in total.

``adamergex pipeline --dry-run`` prints it beside each stage. A fit's DataModule is built from the stage's own
config (the same ``class_path`` and ``init_args`` the fit will get) and prepared, so the counts are exact:
examples per epoch times ``trainer.max_epochs`` (or ``max_steps`` optimizer steps of ``batch_size ×
accumulate_grad_batches`` examples), and the tokens of those examples (padding excluded). A stage whose data
cannot be read here is reported as unknown, with the reason, and left out of the total. Counting never
downloads: the hub is read offline, so only local files, the dataset mirror and the local cache are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    """Make the hub libraries offline for this process (before they are imported): a dry run must be quick
    and never download, so hub data counts only if it is cached or mirrored."""
    import os

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(name, "1")


def fit_budget(config: dict[str, Any]) -> FitBudget:
    """The budget of one ``adamergex fit`` config (a pipeline stage's)."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    data = {**config["data"], "init_args": dict(config["data"].get("init_args") or {})}
    data["init_args"].setdefault("tokenizer", config["model"]["init_args"]["base_model"])
    try:
        parser = ArgumentParser(exit_on_error=False)
        parser.add_subclass_arguments(LightningDataModule, "data")
        datamodule = parser.instantiate(parser.parse_object({"data": data})).data
        datamodule.setup("fit")
        examples = list(datamodule.train_examples)
    except Exception as err:  # offline hub data, a missing file: the dry run still lists the stage
        reason = f"{type(err).__name__}: {str(err).splitlines()[0][:70]}"
        return _bound_from_config(data["init_args"], config.get("trainer") or {}, reason)
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
