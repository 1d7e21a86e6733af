"""Layer swapping: per-module dense references (LoRA, (IA)³), logits in PEFT on a four-layer Llama, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from merge_factories import dense_lora, dense_merged, make_ia3, make_lora, relative_error
from method_factories import (
    patched_logits,
    peft_logits,
    synthetic_ia3,
    synthetic_lora,
    tiny_llama_with_layers,
)

from adamergex_pl.merging.adapters import AdapterWeights
from adamergex_pl.merging.layer_swap import layer_index, layer_swap
from adamergex_pl.merging.output import write_merged

TOKENS = torch.tensor([[1, 72, 105, 33, 200, 17, 90, 44, 5, 250], [1, 10, 20, 30, 40, 50, 60, 70, 80, 90]])


def _expected_source(module: str, bottom: int, top: int, layers: int) -> str:
    """Which input a module's update comes from, by the paper's rule (written out here, not imported)."""
    if ".layers." not in module:
        return "task"
    index = int(module.split(".layers.")[1].split(".")[0])
    return "ref" if index < bottom or index >= layers - top else "task"


@pytest.mark.parametrize(("bottom", "top"), [(1, 1), (2, 0), (0, 3), (0, 0), (2, 2)])
def test_lora_layers_come_from_the_right_adapter(bottom, top):
    task = synthetic_lora(1, r=4, alpha=8)  # scaling 2
    ref = synthetic_lora(2, r=6, alpha=3, use_rslora=True)  # scaling 3/sqrt(6), another rank
    result = layer_swap(task, ref, swap_bottom=bottom, swap_top=top, allow_partial_modules=True)
    merged = dense_merged(result.adapter)  # also checks the config declares scaling 1 and the ranks
    expected = {"task": dense_lora(task), "ref": dense_lora(ref)}
    assert sorted(merged) == sorted(task.tensors)
    for module, delta in merged.items():
        source = _expected_source(module, bottom, top, 4)
        assert relative_error(delta, expected[source][module]) < 1e-6, module
        other = expected["ref" if source == "task" else "task"][module]
        assert relative_error(delta, other) > 0.5  # the two inputs really differ
        assert result.adapter.tensors[module]["lora_A"].shape[0] == (6 if source == "ref" else 4)
    record = result.record()
    assert record["method"] == "layer_swap" and record["options"] == {
        "swap_bottom": bottom,
        "swap_top": top,
        "num_layers": 4,
    }
    swapped = sorted(set(range(bottom)) | set(range(4 - top, 4)))
    assert [(i["role"], i["layers"]) for i in record["inputs"]] == [
        ("task_src", [i for i in range(4) if i not in swapped]),
        ("ref_tgt", swapped),
    ]


def test_power_of_two_scaling_copies_factors_bit_for_bit():
    task, ref = synthetic_lora(3, r=4, alpha=8), synthetic_lora(4, r=2, alpha=2)
    result = layer_swap(task, ref, swap_bottom=1, swap_top=1, allow_partial_modules=True)
    for module in ("model.layers.0.mlp.down_proj", "model.layers.1.self_attn.q_proj", "lm_head"):
        source, scaling = (ref, 1.0) if layer_index(module) == 0 else (task, 2.0)
        parts = result.adapter.tensors[module]
        assert torch.equal(parts["lora_A"], source.tensors[module]["lora_A"])
        assert torch.equal(parts["lora_B"], scaling * source.tensors[module]["lora_B"])


def test_ia3_vectors_are_copied_with_their_feedforward_status():
    task, ref = synthetic_ia3(5), synthetic_ia3(6, low=0.2, high=3.0)
    result = layer_swap(task, ref, swap_bottom=1, swap_top=2, allow_partial_modules=True)
    assert result.adapter.adapter_type == "ia3" and sorted(result.adapter.tensors) == sorted(task.tensors)
    for module, parts in result.adapter.tensors.items():
        source = ref if _expected_source(module, 1, 2, 4) == "ref" else task
        assert torch.equal(parts["ia3_l"], source.tensors[module]["ia3_l"]), module
    assert result.adapter.config["feedforward_modules"] == ["down_proj"]


def test_modules_only_one_adapter_adapts_follow_the_layer_owner():
    # task adapts q, v, down everywhere plus lm_head; ref adapts q only and no lm_head
    task = synthetic_lora(7)
    ref = synthetic_lora(8, suffixes=("self_attn.q_proj",), head=False)
    result = layer_swap(task, ref, swap_bottom=1, swap_top=1, allow_partial_modules=True)
    expected = {m for m in task.tensors if _expected_source(m, 1, 1, 4) == "task"}
    expected |= {"model.layers.0.self_attn.q_proj", "model.layers.3.self_attn.q_proj"}
    assert set(result.adapter.tensors) == expected  # v and down of layers 0, 3 get no update
    assert "lm_head" in result.adapter.tensors
    assert result.partial_modules["model.layers.0.mlp.down_proj"] == ["ref_tgt"]
    assert sorted(result.adapter.config["target_modules"]) == sorted(expected)  # explicit list


def test_num_layers_for_adapters_that_skip_top_layers():
    task = synthetic_lora(9, layers=range(2))  # layers 0, 1 of a 4-layer model
    ref = synthetic_lora(10)
    with pytest.raises(
        ValueError, match=r"disagree about the layer count .*task_src 2, ref_tgt 4.*num_layers="
    ):
        layer_swap(task, ref, swap_bottom=1, swap_top=1, allow_partial_modules=True)
    result = layer_swap(task, ref, swap_bottom=1, swap_top=1, num_layers=4, allow_partial_modules=True)
    assert {layer_index(m) for m in result.adapter.tensors} == {0, 1, 3, None}
    assert result.record()["options"]["num_layers"] == 4
    with pytest.raises(ValueError, match=r"ref_tgt \(in-memory adapter\) adapts layer 3 but num_layers=3"):
        layer_swap(task, ref, swap_bottom=1, swap_top=1, num_layers=3, allow_partial_modules=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(swap_bottom=3, swap_top=2), ValueError, r"swap_bottom=3 \+ swap_top=2 exceeds the 4 layers"),
        (dict(swap_bottom=-1, swap_top=1), ValueError, r"swap_bottom=-1 must be ≥ 0"),
        (dict(swap_bottom=1, swap_top=-2), ValueError, r"swap_top=-2 must be ≥ 0"),
        (dict(swap_bottom=1.0, swap_top=1), TypeError, r"swap_bottom=1.0 must be an integer"),
        (dict(swap_bottom=True, swap_top=1), TypeError, r"swap_bottom=True must be an integer"),
        (dict(swap_bottom=1, swap_top=1, num_layers=0), ValueError, r"num_layers=0 must be at least 1"),
        (dict(swap_bottom=5, swap_top=0, num_layers=4), ValueError, r"swap_bottom=5 \+ swap_top=0 exceeds"),
    ],
)
def test_bad_layer_counts_are_refused(kwargs, error, message):
    with pytest.raises(error, match=message):
        layer_swap(synthetic_lora(11), synthetic_lora(12), **kwargs)


def test_incompatible_inputs_are_refused():
    lora, ia3 = synthetic_lora(13), synthetic_ia3(14)
    with pytest.raises(ValueError, match=r"different peft types: task_src is LORA .*ref_tgt is IA3"):
        layer_swap(lora, ia3, swap_bottom=1, swap_top=1)
    with pytest.raises(ValueError, match=r"ref_tgt was trained on base model 'other' but task_src on"):
        layer_swap(lora, synthetic_lora(15, base="other"), swap_bottom=1, swap_top=1)
    heads = synthetic_lora(16, layers=(), head=True)
    with pytest.raises(ValueError, match=r"no module of task_src or ref_tgt lies inside a '.layers.<i>.'"):
        layer_swap(heads, synthetic_lora(17, layers=(), head=True), swap_bottom=0, swap_top=0)
    layers_only, head_only = synthetic_lora(18, head=False), synthetic_lora(19, layers=(), head=True)
    with pytest.raises(ValueError, match=r"the swapped adapter would be empty"):
        layer_swap(
            layers_only, head_only, swap_bottom=2, swap_top=2, num_layers=4, allow_partial_modules=True
        )


@pytest.fixture(scope="module")
def deep_llama(tmp_path_factory):
    return tiny_llama_with_layers(tmp_path_factory.mktemp("llama4"), 4)


def test_lora_swap_logits_in_peft_match_patched_base(deep_llama, tmp_path):
    """Written, loaded by PeftModel, against a base whose weights got the reference's per-layer ΔW."""
    task = AdapterWeights.load(make_lora(deep_llama, seed=21, r=4, lora_alpha=8))
    ref = AdapterWeights.load(
        make_lora(
            deep_llama, seed=22, r=2, lora_alpha=5, use_rslora=True, target_modules=["q_proj", "up_proj"]
        )
    )
    write_merged(
        layer_swap(task, ref, swap_bottom=1, swap_top=1, allow_partial_modules=True), tmp_path / "swapped"
    )
    config = json.loads((tmp_path / "swapped" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    task_delta, ref_delta = dense_lora(task), dense_lora(ref)

    def reference(name, weight):
        outer = _expected_source(name, 1, 1, 4) == "ref"
        delta = (ref_delta if outer else task_delta).get(name)
        return None if delta is None else weight + delta

    expected = patched_logits(deep_llama, TOKENS, reference)
    task_only = patched_logits(
        deep_llama, TOKENS, lambda n, w: w + task_delta[n] if n in task_delta else None
    )
    assert (expected - task_only).abs().max() > 0.05  # the swapped layers matter
    torch.testing.assert_close(
        peft_logits(deep_llama, tmp_path / "swapped", TOKENS), expected, rtol=1e-4, atol=1e-4
    )


def test_ia3_swap_logits_in_peft_match_patched_base(deep_llama, tmp_path):
    task = AdapterWeights.load(make_ia3(deep_llama, seed=23))
    ref = AdapterWeights.load(make_ia3(deep_llama, seed=24, low=0.3, high=2.0))
    write_merged(
        layer_swap(task, ref, swap_bottom=2, swap_top=1, allow_partial_modules=True), tmp_path / "swapped"
    )
    vectors = {"task": task.tensors, "ref": ref.tensors}

    def reference(name, weight):  # l (out, 1) scales rows: l ⊙ Wx; l (1, in) columns: W(l ⊙ x)
        parts = vectors[_expected_source(name, 2, 1, 4)].get(name)
        return None if parts is None else weight * parts["ia3_l"].double()

    expected = patched_logits(deep_llama, TOKENS, reference)
    plain = patched_logits(deep_llama, TOKENS, lambda n, w: None)
    assert (expected - plain).abs().max() > 0.05
    torch.testing.assert_close(
        peft_logits(deep_llama, tmp_path / "swapped", TOKENS), expected, rtol=1e-4, atol=1e-4
    )
