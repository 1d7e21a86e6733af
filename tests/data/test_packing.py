"""Sequence packing: rows never exceed the longest example, packed examples never see each other, and the
training loss on a packed batch is the loss on the same batch padded (a trained, non-trivial LoRA)."""

from __future__ import annotations

import doctest
import importlib
import itertools
import json
import random

import pytest
import torch
from lightning.pytorch import Trainer

from adamergex_pl import AdapterModule
from adamergex_pl.evaluation.language_modeling import causal_lm_nll
from data_modules import DataSource, InstructionDataModule
from data_modules.collate import IGNORE_INDEX, PadCollator
from data_modules.packing import PackingCollator, first_fit_rows


def _examples(seed: int, n: int = 9) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        prompt, completion = rng.choice([0, 0, 3, 12]), rng.randint(1, 8)  # prompt 0: every label is taken
        ids = [1] + [rng.randint(3, 255) for _ in range(prompt + completion - 1)]
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return examples


@pytest.mark.parametrize("seed", range(20))
def test_first_fit_places_every_example_once_within_capacity(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 50) for _ in range(rng.randint(1, 30))]
    rows = first_fit_rows(lengths, max(lengths))
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= max(lengths) for row in rows)
    assert len(rows) <= len(lengths)
    # first fit never leaves two rows that could have been one
    loads = sorted(sum(lengths[i] for i in row) for row in rows)
    assert len(loads) < 2 or loads[0] + loads[1] > max(lengths)


def test_first_fit_refuses_an_example_longer_than_a_row():
    with pytest.raises(ValueError, match="7 tokens does not fit a row of capacity=5"):
        first_fit_rows([3, 7], capacity=5)


def test_packed_batch_holds_each_example_with_restarted_positions_and_a_masked_first_label():
    examples = _examples(seed=0)
    batch = PackingCollator(pad_token_id=0, pad_to_multiple_of=8)(examples)
    assert batch["input_ids"].shape[1] % 8 == 0
    assert batch["input_ids"].shape[0] < len(examples)
    assert int(batch["attention_mask"].sum()) == sum(len(e["input_ids"]) for e in examples)
    found = []
    for row in range(batch["input_ids"].shape[0]):
        starts = (batch["position_ids"][row] == 0).nonzero().flatten().tolist()
        for start, end in itertools.pairwise([*starts, batch["input_ids"].shape[1]]):
            if batch["attention_mask"][row, start] == 0:  # the row's padded tail
                assert (batch["labels"][row, start:end] == IGNORE_INDEX).all()
                continue
            ids = batch["input_ids"][row, start:end].tolist()
            example = next(e for e in examples if e["input_ids"] == ids)
            assert batch["labels"][row, start] == IGNORE_INDEX
            assert batch["labels"][row, start + 1 : end].tolist() == example["labels"][1:]
            found.append(ids)
    assert sorted(found) == sorted(e["input_ids"] for e in examples)


@pytest.fixture(scope="module")
def trained_lora(tiny_llama_path):
    """A LoRA whose B factors are not zero, in eval mode (no dropout)."""
    module = AdapterModule(tiny_llama_path, adapter_type="lora", lora_r=4, attn_implementation="sdpa")
    module.configure_model()
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in module.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.2)
    module.model.eval()
    return module


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_packed_logits_equal_each_example_run_alone(trained_lora, attn_implementation):
    trained_lora.model.base_model.model.set_attn_implementation(attn_implementation)
    examples = _examples(seed=1)
    batch = PackingCollator(pad_token_id=0)(examples)
    with torch.no_grad():
        packed = trained_lora(batch)
        for example in examples:
            ids = torch.tensor([example["input_ids"]])
            alone = trained_lora({"input_ids": ids, "attention_mask": torch.ones_like(ids)})[0]
            row, start = _locate(batch, example["input_ids"])
            torch.testing.assert_close(packed[row, start : start + ids.shape[1]], alone, atol=1e-5, rtol=1e-4)
    trained_lora.model.base_model.model.set_attn_implementation("sdpa")


def _locate(batch, ids: list[int]) -> tuple[int, int]:
    for row in range(batch["input_ids"].shape[0]):
        for start in (batch["position_ids"][row] == 0).nonzero().flatten().tolist():
            if batch["input_ids"][row, start : start + len(ids)].tolist() == ids:
                return row, start
    raise AssertionError(f"{ids} not in the packed batch")


@pytest.mark.parametrize("loss_on_prompt", [False, True])
def test_packed_loss_equals_padded_loss(trained_lora, loss_on_prompt):
    examples = _examples(seed=2)
    trained_lora.hparams.loss_on_prompt = loss_on_prompt
    with torch.no_grad():
        losses = []
        for collate in (PadCollator(pad_token_id=0), PackingCollator(pad_token_id=0)):
            batch = collate(examples)
            nll, count = causal_lm_nll(trained_lora(batch), trained_lora._labels(batch))
            losses.append((float(nll), int(count)))
    trained_lora.hparams.loss_on_prompt = False
    (padded_nll, padded_count), (packed_nll, packed_count) = losses
    assert packed_count == padded_count
    assert packed_nll == pytest.approx(padded_nll, rel=1e-5)


def test_fit_with_packed_batches_trains_on_fewer_rows(tiny_llama_path, tmp_path):
    rng = random.Random(0)
    records = [
        {"prompt": "x" * rng.randint(1, 40), "completion": "y" * rng.randint(1, 10)} for _ in range(32)
    ]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    data = InstructionDataModule(
        train=DataSource(str(tmp_path / "train.jsonl")),
        tokenizer=tiny_llama_path,
        batch_size=8,
        pack_sequences=True,
    )
    data.setup("fit")
    rows = [batch["input_ids"].shape[0] for batch in data.train_dataloader()]
    assert len(rows) == 4 and sum(rows) < 32
    module = AdapterModule(tiny_llama_path, learning_rate=1e-2)
    trainer = Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=data)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


@pytest.mark.parametrize("module_name", ["data_modules.packing", "data_modules.collate"])
def test_docstring_examples(module_name):
    result = doctest.testmod(importlib.import_module(module_name), verbose=False)
    assert result.attempted > 0 and result.failed == 0
