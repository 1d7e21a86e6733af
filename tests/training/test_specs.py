"""Quantization, adapter and optimizer settings: defaults, formulas and refusals."""

from __future__ import annotations

import math

import pytest
import torch

from adamergex_pl.training.base_model import QuantizationSpec
from adamergex_pl.training.optim import OptimizerSpec
from adamergex_pl.training.peft_model import AdapterSpec


@pytest.fixture(scope="module")
def tiny_model(tiny_llama_path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_llama_path)


def test_unknown_names_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="adapter_type='prefix' is not supported; expected one of lora, ia3"):
        AdapterSpec(adapter_type="prefix")
    with pytest.raises(
        ValueError, match="quantization='nf8' is not supported; expected one of nf4, fp4, int8, none"
    ):
        QuantizationSpec("nf8")
    with pytest.raises(ValueError, match="optimizer='sgd' is not supported"):
        OptimizerSpec("sgd")


def test_conflicting_options_are_refused_in_cli_terms():
    with pytest.raises(ValueError, match=r"warmup_steps=10 and warmup_ratio=0\.05 conflict; set only one"):
        OptimizerSpec(warmup_ratio=0.05, warmup_steps=10)
    with pytest.raises(ValueError, match="quant_storage='bfloat16' only applies to 4-bit quantization"):
        QuantizationSpec("int8", quant_storage="bfloat16")
    with pytest.raises(ValueError, match="target_modules='all-linear' only applies to LoRA"):
        AdapterSpec(adapter_type="ia3", target_modules="all-linear")
    with pytest.raises(ValueError, match="feedforward_modules only applies to adapter_type='ia3'"):
        AdapterSpec(feedforward_modules=("down_proj",))


def test_ia3_defaults_follow_the_architecture(tiny_model):
    config = AdapterSpec(adapter_type="ia3").peft_config(tiny_model)
    assert set(config.target_modules) == {"k_proj", "v_proj", "down_proj"}
    assert set(config.feedforward_modules) == {"down_proj"}
    assert AdapterSpec().peft_config(tiny_model).target_modules == "all-linear"


def test_a_target_module_the_model_lacks_is_named_with_the_alternatives(tiny_model):
    with pytest.raises(
        ValueError, match=r"target_modules \['query'\] not found in the base model \(LlamaForCausalLM\)"
    ):
        AdapterSpec(target_modules=("q_proj", "query")).peft_config(tiny_model)
    with pytest.raises(ValueError, match=r"feedforward_modules \['up_proj'\] are not among target_modules"):
        AdapterSpec(
            adapter_type="ia3", target_modules=("k_proj",), feedforward_modules=("up_proj",)
        ).peft_config(tiny_model)


def test_schedule_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    param = torch.nn.Parameter(torch.zeros(2, 2))
    spec = OptimizerSpec("adamw", learning_rate=1.0, warmup_steps=4, min_lr_ratio=0.1)
    optimizer = torch.optim.AdamW([param], lr=1.0)
    schedule = spec.schedule(optimizer, total_steps=14)
    lrs = []
    for _ in range(14):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[:4] == pytest.approx([1 / 5, 2 / 5, 3 / 5, 4 / 5])
    assert lrs[4] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert lrs[13] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 9 / 10)))


def test_paged_optimizers_need_cuda(tiny_model):
    with pytest.raises(ValueError, match="optimizer='paged_adamw_32bit' needs a CUDA device"):
        OptimizerSpec("paged_adamw_32bit").build(torch.nn.Linear(2, 2), torch.device("cpu"))


def test_a_quantization_bitsandbytes_cannot_run_stops_with_the_reason(monkeypatch):
    import bitsandbytes as bnb

    def no_kernel(self, x):
        raise NotImplementedError("no nf4 kernel for this backend")

    QuantizationSpec("nf4").check_runs_on(torch.device("cpu"))  # runs here
    monkeypatch.setattr(bnb.nn.Linear4bit, "forward", no_kernel)
    with pytest.raises(ValueError, match=r"quantization='nf4' .* cannot run on device cpu .* no nf4 kernel"):
        QuantizationSpec("nf4").check_runs_on(torch.device("cpu"))


def test_missing_bitsandbytes_is_reported_with_the_fix(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ValueError, match=r"quantization='int8' needs bitsandbytes.*set quantization: none"):
        QuantizationSpec("int8").check_runs_on(torch.device("cpu"))


def test_builtin_names_resolve_and_unknown_ones_list_the_choices(tiny_llama_path):
    from adamergex_pl.assets.builtin import resolve_base_model

    assert resolve_base_model("builtin:tiny-llama") == tiny_llama_path
    assert resolve_base_model("meta-llama/Llama-2-7b-hf") == "meta-llama/Llama-2-7b-hf"
    with pytest.raises(
        ValueError, match="base_model='builtin:huge' names no built-in model; expected one of"
    ):
        resolve_base_model("builtin:huge")
