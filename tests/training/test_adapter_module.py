"""AdapterModule in process: snapshots reproduce the module's logits; checkpoints hold only the adapter."""

from __future__ import annotations

import json

import pytest
import torch
from lightning.pytorch import Callback, Trainer

from adamergex_pl import AdapterModule
from adamergex_pl.evaluation.language_modeling import LanguageModelingEvaluator, causal_lm_nll
from adamergex_pl.training.base_model import QuantizationSpec, load_base_model
from callbacks import AdapterSnapshot
from data_modules import DataSource, InstructionDataModule

PROBE = torch.tensor([[1, 80, 104, 111, 108, 97, 36, 108, 109]])  # "<s>Lhola lm"-ish bytes


class CaptureLogits(Callback):
    """Records the module's logits on a fixed input at every epoch end (after the snapshot is written)."""

    def __init__(self) -> None:
        self.logits: dict[int, torch.Tensor] = {}

    def on_train_epoch_end(self, trainer, pl_module):
        pl_module.model.eval()
        with torch.no_grad():
            self.logits[trainer.current_epoch] = pl_module(
                {"input_ids": PROBE, "attention_mask": torch.ones_like(PROBE)}
            ).float()
        pl_module.model.train()


def _fit(tmp_path, adapter_type, quantization, epochs=2, **module_kwargs):
    module = AdapterModule(
        "builtin:tiny-llama",
        adapter_type=adapter_type,
        quantization=quantization,
        lora_r=4,
        lora_dropout=0.0,
        learning_rate=3e-2 if adapter_type == "ia3" else 5e-3,
        **module_kwargs,
    )
    data = InstructionDataModule(
        train=DataSource("builtin:tiny/add_en.jsonl"),
        val=[DataSource("builtin:tiny/add_es.jsonl", language="es")],
        tokenizer="builtin:tiny-llama",
        max_val_samples=8,
        batch_size=16,
        max_length=48,
    )
    capture = CaptureLogits()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        callbacks=[AdapterSnapshot(keep_last=None), capture],
    )
    trainer.fit(module, datamodule=data)
    return trainer, module, capture


@pytest.mark.parametrize(
    ("adapter_type", "quantization"), [("lora", "none"), ("lora", "nf4"), ("ia3", "none"), ("ia3", "nf4")]
)
def test_every_snapshot_loads_with_peft_and_gives_the_modules_logits(tmp_path, adapter_type, quantization):
    from peft import PeftModel

    _, _, capture = _fit(tmp_path, adapter_type, quantization)
    root = tmp_path / "snapshots"
    assert sorted(p.name for p in root.iterdir()) == ["epoch=0", "epoch=1", "last"]
    assert (root / "last").resolve() == (root / "epoch=1").resolve()
    spec = QuantizationSpec(quantization)
    base_logits = load_base_model("builtin:tiny-llama", spec, torch.device("cpu"))(PROBE).logits
    for epoch in (0, 1):
        info = json.loads((root / f"epoch={epoch}" / "snapshot.json").read_text())
        assert info["epoch"] == epoch and info["global_step"] == 5 * (epoch + 1)
        assert info["adapter_type"] == adapter_type and info["quantization"] == quantization
        assert "val/es/loss" in info["metrics"] and info["base_model"] == "builtin:tiny-llama"
        base = load_base_model("builtin:tiny-llama", spec, torch.device("cpu"))
        peft_model = PeftModel.from_pretrained(base, str(root / f"epoch={epoch}")).eval()
        with torch.no_grad():
            logits = peft_model(input_ids=PROBE).logits.float()
        torch.testing.assert_close(logits, capture.logits[epoch], rtol=1e-5, atol=1e-5)
        # the adapter is non-trivial: it moved the logits away from the base model's
        assert (logits - base_logits).abs().max() > 1e-3


def test_checkpoints_hold_only_the_adapter_and_refuse_a_different_one(tmp_path):
    trainer, module, _ = _fit(tmp_path, "lora", "nf4", epochs=1)
    path = tmp_path / "adapter.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert set(checkpoint["state_dict"]) == module.adapter_state_keys()
    assert all("lora_" in key for key in checkpoint["state_dict"])
    assert path.stat().st_size < 500_000  # kilobytes: the 4-bit base is not in it

    other = AdapterModule("builtin:tiny-llama", adapter_type="ia3")
    other.configure_model()
    # the recorded signature names both adapters (issue 17; before, only the tensor names were compared)
    with pytest.raises(
        ValueError,
        match=r"the checkpoint holds a lora adapter of rank 4 on down_proj, .*, but this config trains an "
        r"ia3 adapter on down_proj, k_proj, v_proj",
    ):
        other.on_load_checkpoint(checkpoint)
    del checkpoint["adamergex"]["adapter"]  # a checkpoint written before signatures: the tensor names
    with pytest.raises(
        ValueError, match=r"checkpoint's adapter does not match this model's: \d+ adapter tensors"
    ):
        other.on_load_checkpoint(checkpoint)


def test_language_modeling_evaluator_is_token_weighted(tiny_llama_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()
    batches = [
        {"input_ids": torch.tensor([[1, 5, 6, 7]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)},
        {"input_ids": torch.tensor([[1, 9, 9]]), "attention_mask": torch.ones(1, 3, dtype=torch.long)},
    ]
    for batch in batches:
        batch["labels"] = batch["input_ids"].clone()
    evaluator = LanguageModelingEvaluator(["es"])
    totals = torch.zeros(2)
    for batch in batches:
        evaluator.update(model, batch, "es")
        nll, count = causal_lm_nll(model(input_ids=batch["input_ids"]).logits, batch["labels"])
        # the same as transformers' own causal-LM loss (a mean over the shifted labels)
        hf_loss = model(input_ids=batch["input_ids"], labels=batch["labels"]).loss
        assert float(nll / count) == pytest.approx(float(hf_loss), rel=1e-6)
        totals += torch.stack([nll, count.float()]).detach()
    results = evaluator.compute()
    assert results["es/loss"] == pytest.approx(float(totals[0] / totals[1]), rel=1e-6)
    assert results["es/perplexity"] == pytest.approx(float(torch.exp(totals[0] / totals[1])), rel=1e-6)
    assert results["loss"] == pytest.approx(results["es/loss"])


def test_fit_without_validation_data_trains_and_snapshots(tmp_path):
    module = AdapterModule("builtin:tiny-llama", lora_r=2, learning_rate=1e-3)
    data = InstructionDataModule(
        train=DataSource("builtin:tiny/add_en.jsonl"), tokenizer="builtin:tiny-llama"
    )
    trainer = Trainer(
        accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path, callbacks=[AdapterSnapshot()],
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    assert module.evaluator is None and trainer.global_step == 3
    assert json.loads((tmp_path / "snapshots/last/snapshot.json").read_text())["global_step"] == 3
