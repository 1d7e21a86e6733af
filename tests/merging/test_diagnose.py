"""The language-gap diagnosis: exact ±1 for proportional gaps, dense references, zero gaps, refusals."""

from __future__ import annotations

import json
import math

import pytest
import torch
from merge_factories import dense_lora, make_lora, reference_scaling
from method_factories import synthetic_ia3, synthetic_lora
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from adamergex_pl.merging.adapters import AdapterWeights
from adamergex_pl.merging.diagnose import language_gap_alignment


@pytest.fixture(scope="module")
def lora_three(tiny_llama_path):
    """(task_src, ref_src, ref_tgt) with different ranks, alphas and rsLoRA, all linears adapted."""
    configs = [dict(r=4, lora_alpha=8), dict(r=2, lora_alpha=4, use_rslora=True), dict(r=6, lora_alpha=3)]
    return [AdapterWeights.load(make_lora(tiny_llama_path, seed=80 + i, **c)) for i, c in enumerate(configs)]


def _task_tgt(task_src, ref_src, ref_tgt, factor):
    """A LoRA with ΔW(T,tgt) = ΔW(T,src) + factor·(ΔW(R,tgt) − ΔW(R,src)): factors stacked, scaling 1."""
    tensors = {}
    for module in task_src.tensors:
        pieces = [(task_src, 1.0), (ref_tgt, factor), (ref_src, -factor)]
        tensors[module] = {
            "lora_A": torch.cat([a.tensors[module]["lora_A"].double() for a, _ in pieces]),
            "lora_B": torch.cat(
                [
                    w * reference_scaling(a.config, module) * a.tensors[module]["lora_B"].double()
                    for a, w in pieces
                ],
                dim=1,
            ),
        }
    rank = next(iter(tensors.values()))["lora_A"].shape[0]
    config = dict(
        task_src.config, r=rank, lora_alpha=rank, use_rslora=False, rank_pattern={}, alpha_pattern={}
    )
    return AdapterWeights(config, tensors)


@pytest.mark.parametrize(("factor", "cosine"), [(2.0, 1.0), (-1.5, -1.0)])
def test_lora_proportional_gap_gives_plus_minus_one(lora_three, factor, cosine):
    task_src, ref_src, ref_tgt = lora_three
    task_tgt = _task_tgt(task_src, ref_src, ref_tgt, factor)
    report = language_gap_alignment(task_src, task_tgt, ref_src, ref_tgt)
    assert report["adapter_type"] == "lora" and len(report["modules"]) == 14
    for module, value in report["modules"].items():
        assert abs(value - cosine) < 1e-6, module
        norms = report["norms"][module]
        assert norms["reference_gap"] > 0.1
        assert norms["task_gap"] == pytest.approx(abs(factor) * norms["reference_gap"], rel=1e-6)
    assert abs(report["mean"] - cosine) < 1e-6


def test_lora_cosines_and_norms_match_dense_gaps(tiny_llama_path):
    configs = [
        dict(r=4, lora_alpha=8),
        dict(r=3, lora_alpha=6, target_modules=["q_proj", "v_proj", "down_proj"]),  # task_tgt
        dict(r=2, lora_alpha=2, use_rslora=True, layers_to_transform=[1]),  # ref_src
        dict(r=5, lora_alpha=10, rank_pattern={"q_proj": 2}, target_modules=["q_proj", "v_proj", "up_proj"]),
    ]
    four = [AdapterWeights.load(make_lora(tiny_llama_path, seed=90 + i, **c)) for i, c in enumerate(configs)]
    report = language_gap_alignment(*four)
    task_src, task_tgt, ref_src, ref_tgt = (dense_lora(a) for a in four)
    cosines, undefined = [], 0
    for module in sorted(set(task_src) | set(task_tgt) | set(ref_src) | set(ref_tgt)):
        shape = next(d[module].shape for d in (task_src, task_tgt, ref_src, ref_tgt) if module in d)
        zero = torch.zeros(shape, dtype=torch.float64)
        g_t = task_tgt.get(module, zero) - task_src.get(module, zero)
        g_r = ref_tgt.get(module, zero) - ref_src.get(module, zero)
        assert report["norms"][module]["task_gap"] == pytest.approx(float(g_t.norm()), rel=1e-9)
        assert report["norms"][module]["reference_gap"] == pytest.approx(float(g_r.norm()), rel=1e-9)
        if g_t.norm() == 0 or g_r.norm() == 0:  # neither adapter of a pair adapts the module
            assert report["modules"][module] is None, module
            undefined += 1
            continue
        expected = float((g_t * g_r).sum() / (g_t.norm() * g_r.norm()))
        assert report["modules"][module] == pytest.approx(expected, abs=1e-9), module
        cosines.append(expected)
    assert undefined == 4 and len(cosines) == 10  # layer 0 k, o, gate, down: no reference adapter has them
    assert report["mean"] == pytest.approx(sum(cosines) / len(cosines), abs=1e-9)
    assert max(abs(c) for c in cosines) > 0.01  # random adapters: small but nonzero alignments
    json.dumps(report, allow_nan=False)  # serialisable, no NaN


def test_zero_gaps_have_no_cosine_and_are_left_out_of_the_mean(lora_three):
    task_src, ref_src, ref_tgt = lora_three
    report = language_gap_alignment(task_src, task_src, ref_src, ref_tgt)  # the task has no language gap
    assert set(report["modules"].values()) == {None} and report["mean"] is None
    assert all(n["task_gap"] < 1e-12 < n["reference_gap"] for n in report["norms"].values())
    json.dumps(report, allow_nan=False)
    # modules only the task adapters adapt have no reference gap; the others still count
    narrow = [synthetic_lora(s, suffixes=("self_attn.q_proj",), head=False) for s in (1, 2)]
    wide = [synthetic_lora(s) for s in (3, 4)]
    report = language_gap_alignment(wide[0], wide[1], *narrow)
    assert report["modules"]["lm_head"] is None and report["norms"]["lm_head"]["reference_gap"] == 0.0
    defined = [c for m, c in report["modules"].items() if m.endswith("q_proj")]
    assert len(defined) == 4 and all(c is not None for c in defined)
    assert report["mean"] == pytest.approx(sum(defined) / 4, abs=1e-12)


@pytest.mark.parametrize(("factor", "cosine"), [(2.0, 1.0), (-1.5, -1.0)])
def test_ia3_log_gaps(factor, cosine):
    task_src, ref_src, ref_tgt = synthetic_ia3(1), synthetic_ia3(2), synthetic_ia3(3, low=0.3, high=2.0)
    tensors = {
        m: {
            "ia3_l": p["ia3_l"]
            * (ref_tgt.tensors[m]["ia3_l"] / ref_src.tensors[m]["ia3_l"]).double() ** factor
        }
        for m, p in task_src.tensors.items()
    }
    task_tgt = AdapterWeights(dict(task_src.config), tensors)
    report = language_gap_alignment(task_src, task_tgt, ref_src, ref_tgt)
    assert report["adapter_type"] == "ia3"
    for module, value in report["modules"].items():
        assert abs(value - cosine) < 1e-6, module
        norms = report["norms"][module]
        assert norms["task_gap"] == pytest.approx(abs(factor) * norms["reference_gap"], rel=1e-6)
    assert abs(report["mean"] - cosine) < 1e-6


def test_ia3_random_gaps_match_dense_logs():
    four = [synthetic_ia3(10), synthetic_ia3(11, head=False), synthetic_ia3(12), synthetic_ia3(13, low=0.2)]
    report = language_gap_alignment(*four)

    def log(adapter, module):
        parts = adapter.tensors.get(module)
        return parts["ia3_l"].double().log() if parts else torch.zeros(20, 1, dtype=torch.float64)

    for module in four[0].tensors:
        g_t = log(four[1], module) - log(four[0], module)  # lm_head: task_tgt lacks it, l = 1
        g_r = log(four[3], module) - log(four[2], module)
        expected = float((g_t * g_r).sum() / (g_t.norm() * g_r.norm()))
        assert report["modules"][module] == pytest.approx(expected, abs=1e-12), module
        assert report["norms"][module]["task_gap"] == pytest.approx(float(g_t.norm()), rel=1e-12)


def test_incompatible_inputs_are_refused():
    lora = [synthetic_lora(s) for s in range(4)]
    with pytest.raises(ValueError, match=r"different peft types: task_src is LORA .*ref_tgt is IA3"):
        language_gap_alignment(*lora[:3], synthetic_ia3(5))
    with pytest.raises(
        ValueError, match=r"task_tgt was trained on base model 'other' but task_src on 'made-up-base'"
    ):
        language_gap_alignment(lora[0], synthetic_lora(6, base="other"), *lora[2:])
    ia3 = [synthetic_ia3(s) for s in range(4)]
    ia3[2].tensors["lm_head"]["ia3_l"][0, 0] = -1.0
    with pytest.raises(ValueError, match=r"ref_src .*'lm_head' has 1 of 20 entries ≤ 0, so its logarithm"):
        language_gap_alignment(*ia3)


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any torch operation returns while active."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        sizes = [t.numel() for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        self.largest = max([self.largest, *sizes])
        return out


def test_large_module_never_forms_the_dense_gap():
    """A 7B-shaped module (4096 × 11008, rank 8): no operation returns a tensor near out × in entries."""
    generator = torch.Generator().manual_seed(0)

    def adapter():
        lora_A = torch.randn(8, 11008, generator=generator) * 0.01
        lora_B = torch.randn(4096, 8, generator=generator) * 0.01
        config = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["down_proj"]}
        return AdapterWeights(config, {"model.layers.0.mlp.down_proj": {"lora_A": lora_A, "lora_B": lora_B}})

    four = [adapter() for _ in range(4)]
    with _LargestTensor() as watch:
        report = language_gap_alignment(*four)
    assert watch.largest <= 16 * 11008  # the concatenated factors; a dense gap would be 45M entries
    value = report["modules"]["model.layers.0.mlp.down_proj"]
    assert math.isfinite(value) and abs(value) < 0.2  # independent random gaps: nearly orthogonal


def test_the_diagnose_command_prints_the_json_report_in_a_subprocess(tmp_path, tiny_llama_path):
    """The real entry point: gaps built so the task's is exactly 2x the reference's give cosine 1 everywhere."""
    import json as _json

    from conftest import run_adamergex
    from merge_factories import make_lora
    from safetensors.torch import load_file, save_file

    ref_src, ref_tgt, task_src = (make_lora(tiny_llama_path, seed=s, r=2, lora_alpha=2) for s in (91, 92, 93))
    task_tgt = tmp_path / "task_tgt"
    task_tgt.mkdir()
    # A(T,tgt) = A(T,src) + 2·(A(R,tgt) − A(R,src)) as one LoRA: concatenated factors, B scaled per term
    t, a, b = (load_file(p / "adapter_model.safetensors") for p in (task_src, ref_tgt, ref_src))
    merged = {}
    for key in t:
        if key.endswith("lora_A.weight"):
            merged[key] = torch.cat([t[key], a[key], b[key]])
        else:
            merged[key] = torch.cat([t[key], 2 * a[key], -2 * b[key]], dim=1)
    save_file(merged, task_tgt / "adapter_model.safetensors")
    config = _json.loads((task_src / "adapter_config.json").read_text())
    config.update(r=6, lora_alpha=6)
    (task_tgt / "adapter_config.json").write_text(_json.dumps(config))
    args = ["--task_src", task_src, "--task_tgt", task_tgt, "--ref_src", ref_src, "--ref_tgt", ref_tgt]
    result = run_adamergex("diagnose", *map(str, args), "--format", "json", cwd=tmp_path)
    report = _json.loads(result.stdout)
    assert report["mean"] == pytest.approx(1.0, abs=1e-6)
    assert all(c == pytest.approx(1.0, abs=1e-6) for c in report["modules"].values())
    bad = run_adamergex(
        "diagnose", "--task_src", str(tmp_path / "nope"), *map(str, args[2:]), cwd=tmp_path, check=False
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "error" in bad.stderr
