"""What each fit of a pipeline will train on, before anything runs: examples and tokens, per stage and in total.

``adamergex pipeline --dry-run`` prints it beside each stage. A fit's DataModule is built from the stage's own
config (the same ``class_path`` and ``init_args`` the fit will get) and prepared, so the counts are exact:
examples per epoch times ``trainer.max_epochs`` (or ``max_steps`` optimizer steps of ``batch_size ×
accumulate_grad_batches`` examples), and the tokens of those examples (padding excluded). A stage whose data
cannot be read here (a hub dataset offline) is reported as unknown, with the reason, and left out of the total.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FitBudget:
    """Examples and tokens a fit trains on (``None`` when unknown, with ``reason``)."""

    examples: int | None
    tokens: int | None
    reason: str = ""

    def describe(self) -> str:
        if self.examples is None:
            return f"examples ? tokens ? ({self.reason})"
        return f"examples {self.examples:,} tokens {self.tokens:,}"


def fit_budget(config: dict[str, Any]) -> FitBudget:
    """The budget of one ``adamergex fit`` config (a pipeline stage's)."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    data = {**config["data"], "init_args": dict(config["data"].get("init_args") or {})}
    data["init_args"].setdefault("tokenizer", config["model"]["init_args"]["base_model"])
    try:
        parser = ArgumentParser(exit_on_error=False)
        parser.add_subclass_arguments(LightningDataModule, "data")
        datamodule = parser.instantiate_classes(parser.parse_object({"data": data})).data
        datamodule.setup("fit")
        examples = list(datamodule.train_examples)
    except Exception as err:  # offline hub data, a missing file: the dry run still lists the stage
        return FitBudget(None, None, f"{type(err).__name__}: {str(err).splitlines()[0][:90]}")
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
