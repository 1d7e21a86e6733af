"""The MAD-X-style ``stack`` baseline: a task adapter trained on top of a frozen adapter, evaluated on top of
another one (adamergex_pl/training/peft_model.py ``stack_on``, the ``stack`` method of the registry)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch import Trainer
from merge_factories import load_base, make_lora
from safetensors.torch import load_file

from adamergex_pl import AdapterModule
from adamergex_pl.merging.adapters import AdapterWeights
from adamergex_pl.merging.methods import METHODS, REF_TGT, TASK_SRC_STACKED
from adamergex_pl.merging.output import write_merged
from callbacks import AdapterSnapshot
from data_modules import DataSource, InstructionDataModule

PROBE = torch.tensor([[1, 80, 104, 111, 108, 97, 36, 108, 109]])


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=PROBE, attention_mask=torch.ones_like(PROBE)).logits.float()


@pytest.fixture(scope="module")
def stacked_fit(tiny_llama_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    beneath = make_lora(tiny_llama_path, seed=31, r=4, lora_alpha=8)
    module = AdapterModule(
        "builtin:tiny-llama", lora_r=4, lora_dropout=0.0, learning_rate=2e-2, stack_on=str(beneath)
    )
    data = InstructionDataModule(
        train=DataSource("builtin:tiny/add_en.jsonl"),
        tokenizer="builtin:tiny-llama",
        batch_size=16,
        max_length=48,
    )
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=root,
        callbacks=[AdapterSnapshot()],
    )
    trainer.fit(module, datamodule=data)
    module.model.eval()
    return module, beneath, root / "snapshots" / "last"


def test_only_the_new_adapter_trains_and_the_one_beneath_stays_as_loaded(stacked_fit):
    module, beneath, snapshot = stacked_fit
    trainable = {name for name, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in name for name in trainable)
    saved = load_file(beneath / "adapter_model.safetensors")
    after = load_file(snapshot / "beneath" / "adapter_model.safetensors")
    assert saved.keys() == after.keys() and all(torch.equal(saved[k], after[k]) for k in saved)
    task = load_file(snapshot / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and task[k].abs().max() > 0 for k in task)  # it learned


def test_the_stacked_pair_loads_with_peft_and_equals_the_stack_methods_single_adapter(
    stacked_fit, tiny_llama_path, tmp_path
):
    from peft import PeftModel

    module, beneath, snapshot = stacked_fit
    expected = _logits(module.model)
    pair = PeftModel.from_pretrained(load_base(tiny_llama_path), str(snapshot))
    pair.load_adapter(str(snapshot / "beneath"), adapter_name="beneath")
    pair.base_model.set_adapter(["default", "beneath"])
    torch.testing.assert_close(_logits(pair.eval()), expected, rtol=1e-5, atol=1e-5)
    alone = PeftModel.from_pretrained(load_base(tiny_llama_path), str(snapshot)).eval()
    assert (_logits(alone) - expected).abs().max() > 1e-3  # the adapter beneath matters
    # `stack` with the same adapter beneath at evaluation: one exact LoRA, the same logits (float32 sums)
    adapters = {TASK_SRC_STACKED: AdapterWeights.load(snapshot), REF_TGT: AdapterWeights.load(beneath)}
    write_merged(METHODS["stack"].build(adapters, None, {}), tmp_path / "stack")
    merged = PeftModel.from_pretrained(load_base(tiny_llama_path), str(tmp_path / "stack")).eval()
    torch.testing.assert_close(_logits(merged), expected, rtol=1e-5, atol=1e-5)


def test_stack_on_an_adapter_of_another_type_and_stack_without_its_adapter_are_refused(tiny_llama_path):
    from adamergex_pl.merging.merge_module import MergeModule
    from adamergex_pl.training.peft_model import AdapterSpec, attach_adapter

    beneath = make_lora(tiny_llama_path, seed=32, r=4, lora_alpha=8)
    with pytest.raises(ValueError, match=r"stack_on=.* holds a lora adapter but adapter_type='ia3'"):
        attach_adapter(
            load_base(tiny_llama_path), AdapterSpec(adapter_type="ia3"), False, False, stack_on=beneath
        )
    with pytest.raises(ValueError, match="'stack' but task_src_stacked is empty"):
        MergeModule("builtin:tiny-llama", str(beneath), {"en": str(beneath)}, methods=["stack"])
