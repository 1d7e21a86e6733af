"""(IA)³ merging: paper and log-linear formulas, AriMerge, products, missing modules as identity, refusals."""

from __future__ import annotations

import pytest
import torch
from merge_factories import make_ia3

from adamergex_pl.merging.adapters import AdapterWeights
from adamergex_pl.merging.ia3 import ia3_adamergex, ia3_arimerge, ia3_product
from adamergex_pl.merging.merge import combine_adapters, merge_adapters

T = 0.6


@pytest.fixture(scope="module")
def trio(tiny_llama_path):
    """(task_src, ref_tgt, ref_src); the target adapter also adapts up_proj, which the others lack."""
    task = AdapterWeights.load(make_ia3(tiny_llama_path, seed=1))
    tgt = AdapterWeights.load(
        make_ia3(
            tiny_llama_path,
            seed=2,
            target_modules=["k_proj", "v_proj", "up_proj", "down_proj"],
            feedforward_modules=["down_proj"],
        )
    )
    src = AdapterWeights.load(make_ia3(tiny_llama_path, seed=3, low=0.6, high=1.4))
    return task, tgt, src


def _vectors(adapter, module):
    return adapter.tensors[module]["ia3_l"].double()


@pytest.mark.parametrize("mode", ["paper", "loglinear"])
def test_adamergex_formulas(trio, mode):
    task, tgt, src = trio
    result = merge_adapters(task, src, tgt, scale=T, ia3_mode=mode, allow_partial_modules=True)
    assert result.mode == mode and result.adapter.adapter_type == "ia3"
    for module in task.module_names:
        l_t, l_g, l_s = (_vectors(a, module) for a in (task, tgt, src))
        gap = l_g / l_s
        expected = l_t * (T * (gap - 1) + 1) if mode == "paper" else l_t * gap**T
        assert (expected - l_t).abs().max() > 0.01  # the reference adapters really change something
        torch.testing.assert_close(
            result.adapter.tensors[module]["ia3_l"].double(), expected, rtol=1e-6, atol=0
        )


def test_missing_module_is_the_identity_and_is_reported(trio):
    task, tgt, src = trio
    result = merge_adapters(task, src, tgt, scale=T, allow_partial_modules=True)
    module = "model.layers.0.mlp.up_proj"
    assert result.partial_modules[module] == ["task_src", "ref_src"]
    expected = T * (_vectors(tgt, module) - 1) + 1  # l_T = l_src = 1
    torch.testing.assert_close(result.adapter.tensors[module]["ia3_l"].double(), expected, rtol=1e-6, atol=0)
    config = result.adapter.config
    assert sorted(config["target_modules"]) == result.adapter.module_names
    assert sorted(config["feedforward_modules"]) == [m for m in result.adapter.module_names if "down" in m]


@pytest.mark.parametrize("mode", ["paper", "loglinear"])
def test_arimerge_formulas(trio, mode):
    task, tgt, _ = trio
    result = merge_adapters(
        task, None, tgt, scale=T, method="arimerge", ia3_mode=mode, allow_partial_modules=True
    )
    for module in task.module_names:
        l_t, l_g = _vectors(task, module), _vectors(tgt, module)
        expected = l_t * (T * (l_g - 1) + 1) if mode == "paper" else l_t * l_g**T
        torch.testing.assert_close(
            result.adapter.tensors[module]["ia3_l"].double(), expected, rtol=1e-6, atol=0
        )


def test_signed_combination_is_a_product_of_powers(trio):
    task, tgt, src = trio
    result = combine_adapters([task, tgt, src], [1.0, 0.5, -1.5], allow_partial_modules=True)
    module = "model.layers.1.self_attn.v_proj"
    expected = _vectors(task, module) * _vectors(tgt, module) ** 0.5 / _vectors(src, module) ** 1.5
    torch.testing.assert_close(result.adapter.tensors[module]["ia3_l"].double(), expected, rtol=1e-6, atol=0)
    assert result.mode == "loglinear" and result.method == "combination"


def test_pure_functions_on_small_vectors():
    l_t, l_g, l_s = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 0.5]), torch.tensor([1.5, 1.0])
    assert torch.allclose(ia3_adamergex(l_t, l_g, l_s, 1.0), l_t * l_g / l_s)  # t = 1: both modes agree
    assert torch.allclose(ia3_adamergex(l_t, l_g, l_s, 1.0, mode="loglinear"), l_t * l_g / l_s)
    assert torch.equal(ia3_adamergex(l_t, l_g, l_s, 0.0), l_t)
    assert torch.allclose(ia3_adamergex(l_t, l_g, l_s, 2.0), torch.tensor([3.0, 0.0]))
    assert torch.allclose(ia3_arimerge(l_t, l_g, 0.5), torch.tensor([2.0, 1.5]))
    assert torch.allclose(ia3_product([l_g, l_s], [2, -1]), torch.tensor([6.0, 0.25]))
    negative = torch.tensor([-2.0, 1.0])
    assert torch.allclose(ia3_product([negative], [3]), torch.tensor([-8.0, 1.0]))  # integer power: allowed
    assert ia3_adamergex(l_t, l_g, l_s, 1.0).dtype == torch.float32
    half = ia3_adamergex(l_t.half(), l_g.half(), l_s.half(), 0.5)
    assert half.dtype == torch.float16


def test_refusals_name_module_and_count():
    l_t, l_s = torch.ones(6), torch.ones(6)
    with pytest.raises(ValueError, match=r"'m\.x'.*l_src has 2 of 6 entries with \|l\| < eps=1e-06"):
        ia3_adamergex(l_t, torch.ones(6), torch.tensor([1, 0, 1e-9, 1, 1, 1.0]), 0.5, module="m.x")
    with pytest.raises(ValueError, match=r"'m\.x'.*l_tgt has 1 of 6 entries NaN or inf"):
        ia3_adamergex(l_t, torch.tensor([1, float("nan"), 1, 1, 1, 1.0]), l_s, 0.5, module="m.x")
    with pytest.raises(ValueError, match=r"'m\.x'.*l_task has 1 of 6 entries NaN or inf"):
        ia3_adamergex(torch.tensor([1, 1, 1, 1, 1, float("inf")]), l_s, l_s, 0.5, module="m.x")
    negative = torch.tensor([1, -1, 1, -2, 1, 1.0])
    with pytest.raises(
        ValueError, match=r"'m\.x'.*gap l_tgt ⊘ l_src has 2 of 6 entries ≤ 0.*ia3_mode='paper'"
    ):
        ia3_adamergex(l_t, negative, l_s, 0.5, mode="loglinear", module="m.x")
    ia3_adamergex(l_t, negative, l_s, 0.5, mode="paper")  # paper mode allows sign changes
    with pytest.raises(ValueError, match=r"l_tgt has 2 of 6 entries ≤ 0"):
        ia3_arimerge(l_t, negative, 0.5, mode="loglinear")
    with pytest.raises(ValueError, match=r"input 0 \(weight 0.5\) has 2 of 6 entries ≤ 0"):
        ia3_product([negative], [0.5])
    with pytest.raises(ValueError, match=r"input 0 \(weight -1\) has 1 of 2 entries with \|l\| < eps"):
        ia3_product([torch.tensor([0.0, 1.0])], [-1.0])
    with pytest.raises(
        ValueError, match=r"the merged vector \(in torch.float16\) has 1 of 2 entries NaN or inf"
    ):
        ia3_adamergex(
            torch.tensor([1.0, 1.0]).half(), torch.tensor([1.0, 60000]).half(), torch.ones(2).half(), 2.0
        )
    with pytest.raises(ValueError, match="ia3_mode='cubic' is not supported"):
        ia3_adamergex(l_t, l_t, l_s, 0.5, mode="cubic")


def test_merge_refuses_a_zero_divisor_in_an_adapter(trio):
    task, tgt, src = trio
    module = "model.layers.1.self_attn.k_proj"
    broken = {m: dict(p) for m, p in src.tensors.items()}
    vector = broken[module]["ia3_l"].clone()
    vector[:3] = 0.0
    broken[module]["ia3_l"] = vector
    zeroed = AdapterWeights(src.config, broken, path="zeroed")
    with pytest.raises(ValueError, match=rf"'{module}'.*divisor l_src has 3 of 32 entries"):
        merge_adapters(task, zeroed, tgt, scale=T, allow_partial_modules=True)
    with pytest.raises(ValueError, match="eps=0 must be positive"):
        merge_adapters(task, src, tgt, scale=T, eps=0, allow_partial_modules=True)


def test_feedforward_mismatch_is_refused(tiny_llama_path, trio):
    task, tgt, _ = trio
    other = AdapterWeights.load(make_ia3(tiny_llama_path, seed=4, feedforward_modules=[]))
    with pytest.raises(
        ValueError, match=r"down_proj' is a feedforward module .* in task_src but not in ref_src"
    ):
        merge_adapters(task, other, tgt, scale=T, allow_partial_modules=True)
