"""LoRA merging: the exact, factor and svd modes against dense float64 references, and PEFT's cat."""

from __future__ import annotations

import math

import pytest
import torch
from merge_factories import (
    ALL_LINEAR,
    combine_dense,
    dense_lora,
    dense_merged,
    load_base,
    make_lora,
    reference_scaling,
    relative_error,
)

from adamergex_pl.merging.adapters import AdapterWeights
from adamergex_pl.merging.lora import truncate_factors
from adamergex_pl.merging.merge import combine_adapters, merge_adapters

T = 0.7

# (task_src, ref_tgt, ref_src) LoRA configs: ranks, alphas, rsLoRA, rank/alpha patterns, target sets.
CASES = {
    "uniform": [dict(r=4, lora_alpha=8)] * 3,
    "mixed-ranks-alphas-rslora": [
        dict(r=8, lora_alpha=16),
        dict(r=4, lora_alpha=4, use_rslora=True),
        dict(r=2, lora_alpha=32),
    ],
    "patterns-and-partial-targets": [
        dict(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], rank_pattern={"down_proj": 6}
        ),
        dict(r=3, lora_alpha=5, rank_pattern={"q_proj": 2}, alpha_pattern={"v_proj": 3, "up_proj": 1}),
        dict(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            layers_to_transform=[1],
        ),
    ],
}


@pytest.fixture(scope="module")
def trios(tiny_llama_path):
    """{case: (task_src, ref_tgt, ref_src) AdapterWeights}, random and non-trivial."""
    return {
        name: tuple(
            AdapterWeights.load(make_lora(tiny_llama_path, seed=10 * i + j, **cfg))
            for j, cfg in enumerate(cfgs)
        )
        for i, (name, cfgs) in enumerate(CASES.items())
    }


@pytest.mark.parametrize("case", list(CASES))
def test_exact_mode_equals_dense_formula(trios, case):
    task, tgt, src = trios[case]
    result = merge_adapters(task, src, tgt, scale=T, allow_partial_modules=True)
    expected = combine_dense([(1.0, dense_lora(task)), (T, dense_lora(tgt)), (-T, dense_lora(src))])
    merged = dense_merged(result.adapter)
    assert sorted(merged) == sorted(expected)
    for module, delta in expected.items():
        assert delta.norm() > 0.1  # non-trivial inputs
        assert relative_error(merged[module], delta) < 1e-5, module
        ranks = sum(a.tensors[module]["lora_A"].shape[0] for a in (task, tgt, src) if module in a.tensors)
        assert merged[module].shape == delta.shape
        assert result.adapter.tensors[module]["lora_A"].shape[0] == ranks
    assert result.adapter.tensors[next(iter(merged))]["lora_A"].dtype == torch.float32


def test_partial_modules_are_reported_and_contribute_zero(trios):
    task, tgt, src = trios["patterns-and-partial-targets"]
    result = merge_adapters(task, src, tgt, scale=T, allow_partial_modules=True)
    module = "model.layers.0.mlp.up_proj"  # only ref_tgt adapts it
    assert result.partial_modules[module] == ["task_src", "ref_src"]
    assert result.partial_modules["model.layers.0.self_attn.q_proj"] == ["ref_src"]  # src: layer 1 only
    assert "model.layers.1.self_attn.q_proj" not in result.partial_modules
    merged = dense_merged(result.adapter)
    assert relative_error(merged[module], T * dense_lora(tgt)[module]) < 1e-6
    # the modules differ between inputs, so the merged config lists them explicitly
    assert sorted(result.adapter.config["target_modules"]) == sorted(result.adapter.tensors)
    assert result.record()["partial_modules"] == result.partial_modules


def test_uniform_inputs_keep_the_task_targeting(trios):
    task, tgt, src = trios["uniform"]
    result = merge_adapters(task, src, tgt, scale=T, allow_partial_modules=True)
    assert result.partial_modules == {}
    assert sorted(result.adapter.config["target_modules"]) == sorted(ALL_LINEAR)
    assert result.adapter.config["r"] == result.adapter.config["lora_alpha"] == 12
    assert result.adapter.config["rank_pattern"] == {}


def test_arimerge_and_signed_combinations(trios):
    task, tgt, src = trios["mixed-ranks-alphas-rslora"]
    ari = merge_adapters(task, None, tgt, scale=T, method="arimerge", allow_partial_modules=True)
    expected = combine_dense([(1.0, dense_lora(task)), (T, dense_lora(tgt))])
    for module, delta in dense_merged(ari.adapter).items():
        assert relative_error(delta, expected[module]) < 1e-5
    weights = [0.3, -1.25, 2.0]
    combo = combine_adapters([task, tgt, src], weights, names=["a", "b", "c"], allow_partial_modules=True)
    expected = combine_dense([(w, dense_lora(a)) for w, a in zip(weights, (task, tgt, src), strict=True)])
    for module, delta in dense_merged(combo.adapter).items():
        assert relative_error(delta, expected[module]) < 1e-5
    assert [entry["weight"] for entry in combo.inputs] == weights


def test_scale_zero_is_the_task_adapter(trios):
    task, tgt, src = trios["mixed-ranks-alphas-rslora"]
    result = merge_adapters(task, src, tgt, scale=0.0, allow_partial_modules=True)
    expected = dense_lora(task)
    for module, delta in dense_merged(result.adapter).items():
        assert result.adapter.tensors[module]["lora_A"].shape[0] == 8  # zero-weight inputs are dropped
        assert relative_error(delta, expected[module]) < 1e-6


def test_factor_mode_is_the_element_wise_formula(trios):
    task, tgt, src = trios["uniform"]
    result = merge_adapters(task, src, tgt, scale=T, lora_mode="factor", allow_partial_modules=True)
    s = 8 / 4
    for module, parts in result.adapter.tensors.items():
        pieces = [a.tensors[module] for a in (task, tgt, src)]
        for name in ("lora_A", "lora_B"):
            t_, g, r = (p[name].double() for p in pieces)
            expected = math.sqrt(s) * (t_ + T * (g - r))
            assert relative_error(parts[name], expected) < 1e-6
        # the effective update is the released code's s·(B_T + tΔB)(A_T + tΔA), not the exact ΔW formula
        exact = combine_dense([(1.0, dense_lora(task)), (T, dense_lora(tgt)), (-T, dense_lora(src))])[module]
        assert relative_error(parts["lora_B"].double() @ parts["lora_A"].double(), exact) > 0.1
    assert result.adapter.config["r"] == 4 and result.mode == "factor"


def test_factor_mode_folds_unequal_scalings(tiny_llama_path):
    adapters = [
        AdapterWeights.load(make_lora(tiny_llama_path, seed=s, r=4, lora_alpha=a, use_rslora=rs))
        for s, a, rs in ((1, 8, False), (2, 2, True), (3, 16, False))
    ]
    result = combine_adapters(adapters, [1.0, T, -T], lora_mode="factor", allow_partial_modules=True)
    module = "model.layers.1.mlp.down_proj"
    scalings = [reference_scaling(a.config, module) for a in adapters]
    for name in ("lora_A", "lora_B"):
        expected = sum(
            w * math.sqrt(s) * a.tensors[module][name].double()
            for w, s, a in zip([1.0, T, -T], scalings, adapters, strict=True)
        )
        assert relative_error(result.adapter.tensors[module][name], expected) < 1e-6


@pytest.mark.parametrize("rank", [1, 5, 100])
def test_svd_mode_is_the_best_low_rank_approximation(trios, rank):
    task, tgt, src = trios["mixed-ranks-alphas-rslora"]
    result = merge_adapters(
        task, src, tgt, scale=T, lora_mode="svd", svd_rank=rank, allow_partial_modules=True
    )
    exact = combine_dense([(1.0, dense_lora(task)), (T, dense_lora(tgt)), (-T, dense_lora(src))])
    lost = total = 0.0
    for module, delta in dense_merged(result.adapter).items():
        u, s, vh = torch.linalg.svd(exact[module], full_matrices=False)
        best = (u[:, :rank] * s[:rank]) @ vh[:rank]
        assert relative_error(delta, best) < 1e-5
        error = float((exact[module] - delta).norm() / exact[module].norm())
        assert result.svd["per_module"][module] == pytest.approx(error, abs=1e-6)
        assert result.adapter.tensors[module]["lora_A"].shape[0] == min(rank, 14, *exact[module].shape)
        lost, total = (
            lost + float((exact[module] - delta).norm() ** 2),
            total + float(exact[module].norm() ** 2),
        )
    assert result.svd["relative_error"] == pytest.approx(math.sqrt(lost / total), abs=1e-6)
    assert result.svd["rank"] == rank
    assert result.record()["svd"]["relative_error"] == result.svd["relative_error"]
    if rank >= 14:  # full rank: nothing is lost
        assert result.svd["relative_error"] < 1e-6
    else:
        assert result.svd["relative_error"] > 1e-3


def test_truncate_factors_handles_rank_above_size():
    generator = torch.Generator().manual_seed(0)
    lora_A, lora_B = torch.randn(10, 3, generator=generator), torch.randn(4, 10, generator=generator)
    new_A, new_B, lost, total = truncate_factors(lora_A, lora_B, 7)
    assert new_A.shape == (3, 3) and new_B.shape == (4, 3)
    assert relative_error(new_B @ new_A, lora_B @ lora_A) < 1e-6 and float(lost) < 1e-20 < float(total)


def test_exact_mode_matches_peft_cat(trios, tiny_llama_path):
    """With two inputs the exact mode is PEFT's add_weighted_adapter(combination_type='cat')."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    task, tgt, _ = trios["mixed-ranks-alphas-rslora"]
    weights = [1.0, -0.6]
    ours = dense_merged(combine_adapters([task, tgt], weights, allow_partial_modules=True).adapter)
    model = PeftModel.from_pretrained(load_base(tiny_llama_path), task.path, adapter_name="a")
    model.load_adapter(tgt.path, adapter_name="b")
    model.add_weighted_adapter(["a", "b"], weights, "cat", combination_type="cat")
    checked = 0
    for name, layer in model.base_model.model.named_modules():
        if isinstance(layer, LoraLayer) and "cat" in layer.lora_A:
            assert relative_error(layer.get_delta_weight("cat"), ours[name]) < 1e-5, name
            checked += 1
    assert checked == len(ours) == 14
