"""Merged adapters in PEFT: logits of ``PeftModel.from_pretrained`` (plain and NF4 bases) against dense
references, and in-memory loading into a live ``PeftModel`` with ``add_to_peft_model``."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from merge_factories import dense_merged, load_base, make_ia3, make_lora
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

from adamergex_pl.merging.adapters import AdapterWeights
from adamergex_pl.merging.live_model import add_to_peft_model
from adamergex_pl.merging.merge import merge_adapters
from adamergex_pl.merging.output import write_merged

T = 0.8
TOKENS = torch.tensor([[1, 72, 105, 33, 200, 17, 90, 44, 5, 250], [1, 10, 20, 30, 40, 50, 60, 70, 80, 90]])


@pytest.fixture(scope="module")
def lora_trio(tiny_llama_path):
    """(task_src, ref_src, ref_tgt) with rank patterns, rsLoRA and different module sets, so that the merged
    config needs per-module ranks (``rank_pattern``) and an explicit module list."""
    configs = [
        dict(r=4, lora_alpha=8, rank_pattern={"down_proj": 6}, alpha_pattern={"q_proj": 2}),
        dict(r=2, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "v_proj", "up_proj"]),
        dict(r=6, lora_alpha=3, layers_to_transform=[0]),
    ]
    return [AdapterWeights.load(make_lora(tiny_llama_path, seed=40 + i, **c)) for i, c in enumerate(configs)]


@pytest.fixture(scope="module")
def ia3_trio(tiny_llama_path):
    """(task_src, ref_src, ref_tgt); ref_tgt also adapts up_proj, so the merged config lists modules."""
    extra = dict(target_modules=["k_proj", "v_proj", "up_proj", "down_proj"])
    return [
        AdapterWeights.load(make_ia3(tiny_llama_path, seed=50 + i, **(extra if i == 2 else {})))
        for i in range(3)
    ]


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(TOKENS).logits.float()


def _merged_logits(base_path, out_dir, quantization):
    from peft import PeftModel

    config = json.loads((out_dir / "adapter_config.json").read_text())
    known = {f.name for f in dataclasses.fields(PEFT_TYPE_TO_CONFIG_MAPPING[config["peft_type"]])}
    assert set(config) <= known, set(config) - known  # PEFT would drop (and warn about) unknown keys
    model = PeftModel.from_pretrained(load_base(base_path, quantization=quantization), str(out_dir)).eval()
    return _logits(model)


def _hooked_reference(base_path, quantization, transform) -> tuple[torch.Tensor, torch.Tensor]:
    """Base logits and logits with ``transform(module_name, input, output)`` hooked onto the base linears."""
    base = load_base(base_path, quantization=quantization)
    plain = _logits(base)
    handles = [
        module.register_forward_hook(lambda mod, args, out, name=name: transform(name, args[0], out))
        for name, module in base.named_modules()
        if name.endswith("_proj")
    ]
    reference = _logits(base)
    for handle in handles:
        handle.remove()
    return plain, reference


@pytest.mark.parametrize("quantization", [None, "nf4"])
def test_lora_merge_logits_match_dense_update(tiny_llama_path, lora_trio, tmp_path, quantization):
    task, src, tgt = lora_trio
    result = merge_adapters(task, src, tgt, scale=T, allow_partial_modules=True)
    assert result.partial_modules and result.adapter.config["rank_pattern"]  # the demanding config
    write_merged(result, tmp_path / "merged")
    delta = {m: d.float() for m, d in dense_merged(result.adapter).items()}

    def add_delta(name, x, out):
        return out + F.linear(x.float(), delta[name]).to(out.dtype) if name in delta else out

    plain, reference = _hooked_reference(tiny_llama_path, quantization, add_delta)
    merged = _merged_logits(tiny_llama_path, tmp_path / "merged", quantization)
    assert (reference - plain).abs().max() > 0.1  # the merged update changes the model
    torch.testing.assert_close(merged, reference, rtol=1e-4, atol=1e-4)


def test_lora_merge_logits_match_merged_dense_weights(tiny_llama_path, lora_trio, tmp_path):
    """Plain base: the reference is a model whose linear weights have the dense ΔW added."""
    task, src, tgt = lora_trio
    result = merge_adapters(task, src, tgt, scale=T, allow_partial_modules=True)
    write_merged(result, tmp_path / "merged")
    reference_model = load_base(tiny_llama_path)
    weights = dict(reference_model.named_modules())
    with torch.no_grad():
        for module, delta in dense_merged(result.adapter).items():
            weight = weights[module].weight
            weight.copy_((weight.double() + delta).float())
    torch.testing.assert_close(
        _merged_logits(tiny_llama_path, tmp_path / "merged", None),
        _logits(reference_model),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize("quantization", [None, "nf4"])
def test_ia3_merge_logits_match_scaled_layers(tiny_llama_path, ia3_trio, tmp_path, quantization):
    task, src, tgt = ia3_trio
    result = merge_adapters(task, src, tgt, scale=T, ia3_mode="loglinear", allow_partial_modules=True)
    assert "model.layers.1.mlp.up_proj" in result.partial_modules
    write_merged(result, tmp_path / "merged")
    vectors = {m: p["ia3_l"].float() for m, p in result.adapter.tensors.items()}

    def rescale(name, x, out):
        if name not in vectors:
            return out
        if name.endswith("down_proj"):  # feedforward: l scales the input, so recompute the layer
            return out - F.linear(x, _weight(name)) + F.linear(x * vectors[name], _weight(name))
        return out * vectors[name].reshape(-1)

    dense = load_base(tiny_llama_path)  # float32 copies of the weights the quantized layers hold
    modules = dict(dense.named_modules())
    quantized = (
        dict(load_base(tiny_llama_path, quantization=quantization).named_modules()) if quantization else {}
    )

    def _weight(name):
        if not quantization:
            return modules[name].weight
        import bitsandbytes.functional as bnbf

        layer = quantized[name]
        return bnbf.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()

    plain, reference = _hooked_reference(tiny_llama_path, quantization, rescale)
    merged = _merged_logits(tiny_llama_path, tmp_path / "merged", quantization)
    assert (reference - plain).abs().max() > 0.05
    torch.testing.assert_close(merged, reference, rtol=1e-4, atol=1e-4)


def test_add_to_peft_model_matches_the_written_adapter(tiny_llama_path, lora_trio, ia3_trio, tmp_path):
    from peft import PeftModel

    task, src, tgt = lora_trio
    model = PeftModel.from_pretrained(load_base(tiny_llama_path), task.path, adapter_name="task").eval()
    results = {t: merge_adapters(task, src, tgt, scale=t, allow_partial_modules=True) for t in (0.3, 1.0)}
    for t, result in results.items():
        add_to_peft_model(model, result.adapter, f"t{t:g}".replace(".", "_"))
    assert model.active_adapters == ["task"]
    model.set_adapter("t1")
    in_memory = _logits(model)
    write_merged(results[1.0], tmp_path / "t1")
    torch.testing.assert_close(
        in_memory, _merged_logits(tiny_llama_path, tmp_path / "t1", None), rtol=0, atol=1e-6
    )
    model.set_adapter("t0_3")
    assert (_logits(model) - in_memory).abs().max() > 0.01

    with pytest.raises(ValueError, match="already has an adapter named 't1'; pass replace=True"):
        add_to_peft_model(model, results[0.3].adapter, "t1")
    add_to_peft_model(model, results[0.3].adapter, "t1", replace=True)
    replaced = _logits_of(model, "t1")
    torch.testing.assert_close(replaced, _logits_of(model, "t0_3"), rtol=0, atol=0)
    model.set_adapter("t1")
    with pytest.raises(ValueError, match="adapter 't1' is active"):
        add_to_peft_model(model, results[1.0].adapter, "t1", replace=True)

    with pytest.raises(
        ValueError, match=r"adapter_name='t0.5' must be a non-empty string without '.'.*'t0_5'"
    ):
        add_to_peft_model(model, results[0.3].adapter, "t0.5")
    with pytest.raises(ValueError, match=r"cannot add the IA3 adapter 'ia3' to a PeftModel holding .*LORA"):
        add_to_peft_model(model, ia3_trio[0], "ia3")

    stray = dict(results[1.0].adapter.tensors)
    stray["model.layers.7.self_attn.q_proj"] = stray["model.layers.0.self_attn.q_proj"]
    config = dict(results[1.0].adapter.config, target_modules=sorted(stray))
    with pytest.raises(ValueError, match="adapter 'stray' does not fit the model: 2 tensors found no module"):
        add_to_peft_model(model, AdapterWeights(config, stray), "stray")
    assert "stray" not in model.peft_config


def _logits_of(model, name):
    model.set_adapter(name)
    return _logits(model)
