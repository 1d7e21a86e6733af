"""TIES and DARE-TIES merging: dense references written from the formulas, PEFT logits, determinism, refusals."""

from __future__ import annotations

import hashlib
import math
import threading

import pytest
import torch
from merge_factories import (
    dense_lora,
    dense_merged,
    make_ia3,
    make_lora,
    reference_scaling,
    relative_error,
)
from method_factories import patched_logits, peft_logits, synthetic_ia3, synthetic_lora

from adamergex_pl.merging import ties
from adamergex_pl.merging.adapters import AdapterWeights
from adamergex_pl.merging.merge import merge_adapters
from adamergex_pl.merging.output import write_merged
from adamergex_pl.merging.ties import Vector, core_bases, kth_largest_magnitude, ties_merge

T = 0.8
FULL = 128  # at least min(out, in) of every tiny-llama projection: the SVD keeps everything
TOKENS = torch.tensor([[1, 72, 105, 33, 200, 17, 90, 44, 5, 250], [1, 10, 20, 30, 40, 50, 60, 70, 80, 90]])


# ---- the reference, from the formulas alone (no peft, no library code) ----
def _trim(vector, density):
    if density >= 1:
        return vector
    k = int(density * vector.numel())
    if k == 0:
        return torch.zeros_like(vector)
    threshold = vector.abs().flatten().sort(descending=True).values[k - 1]
    return torch.where(vector.abs() >= threshold, vector, torch.zeros_like(vector))


def _drop(vector, density, generator):
    if density >= 1:
        return vector
    keep = torch.rand(vector.shape, generator=generator, dtype=torch.float32) < density
    return torch.where(keep, vector / density, torch.zeros_like(vector))


def _generator(seed, module):
    digest = hashlib.sha256(f"{seed}:{module}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


def _elect_and_average(vectors):
    elected = torch.where(sum(vectors) >= 0, 1.0, -1.0).double()
    agree = [(v != 0) & (v.sign() == elected) for v in vectors]
    count = sum(a.double() for a in agree)
    total = sum(torch.where(a, v, torch.zeros_like(v)) for a, v in zip(agree, vectors, strict=True))
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def reference(task, tgt, src, module, *, method, density, seed=0):
    """merge(τ_T, τ_L) of one module's float64 tensors (None = the input does not adapt it)."""
    shape = next(x.shape for x in (task, tgt, src) if x is not None)
    task, tgt, src = (
        x if x is not None else torch.zeros(shape, dtype=torch.float64) for x in (task, tgt, src)
    )
    return merge_reference([task, T * (tgt - src)], module, method=method, density=density, seed=seed)


def merge_reference(vectors, module, *, method, density, seed=0):
    """merge(τ_T, τ_L) of the two vectors of ``module``."""
    if method.removesuffix("_core") == "ties":
        kept = [_trim(v, density) for v in vectors]
    else:  # τ_T draws from the module's generator, τ_L from that of f"{module}:gap"
        kept = [
            _drop(v, density, _generator(seed, f"{module}{part}"))
            for v, part in zip(vectors, ("", ":gap"), strict=True)
        ]
    return _elect_and_average(kept)


def lora_reference(trio, **kwargs):
    deltas = [dense_lora(a) for a in trio]
    modules = sorted(set().union(*deltas))
    return {m: reference(*(d.get(m) for d in deltas), m, **kwargs) for m in modules}


@pytest.fixture(scope="module")
def lora_trio(tiny_llama_path):
    """(task_src, ref_tgt, ref_src): ranks, alphas, rsLoRA and module sets all differ."""
    configs = [
        dict(r=4, lora_alpha=8),
        dict(r=2, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "v_proj", "up_proj"]),
        dict(r=6, lora_alpha=3, layers_to_transform=[0]),
    ]
    return [AdapterWeights.load(make_lora(tiny_llama_path, seed=60 + i, **c)) for i, c in enumerate(configs)]


@pytest.mark.parametrize("small_blocks", [False, True])
@pytest.mark.parametrize(("method", "density"), [("ties", 0.3), ("ties", 1.0), ("dare_ties", 0.5)])
def test_lora_merge_equals_dense_formula(lora_trio, method, density, small_blocks, monkeypatch):
    if small_blocks:  # one row per block, and thresholds bracketed from a sample of 64 magnitudes
        monkeypatch.setattr(ties, "_BLOCK", 7)
        monkeypatch.setattr(ties, "_SAMPLE", 64)
    task, tgt, src = lora_trio
    result = ties_merge(
        task,
        src,
        tgt,
        scale=T,
        density=density,
        method=method,
        svd_rank=FULL,
        seed=3,
        allow_partial_modules=True,
    )
    expected = lora_reference(lora_trio, method=method, density=density, seed=3)
    merged = dense_merged(result.adapter)
    assert sorted(merged) == sorted(expected) and result.partial_modules
    adamergex = dense_merged(merge_adapters(task, src, tgt, scale=T, allow_partial_modules=True).adapter)
    for module, delta in expected.items():
        assert relative_error(merged[module], delta) < 1e-5, module  # float32 arithmetic and SVD
        if module in tgt.tensors or module in src.tensors:  # τ_L ≠ 0: not the plain sum AdaMergeX takes
            assert relative_error(delta, adamergex[module]) > 0.05, module
        if density < 1:
            assert float((delta == 0).double().mean()) > 0.1  # entries were trimmed or dropped
    assert result.svd["relative_error"] < 1e-5 and result.mode == "svd"
    record = result.record()
    assert record["method"] == method and record["scale"] == T
    assert record["options"] == {"density": density, "seed": 3 if method == "dare_ties" else None}
    assert [(i["role"], i["weight"]) for i in record["inputs"]] == [
        ("task_src", 1.0),
        ("ref_tgt", T),
        ("ref_src", -T),
    ]


@pytest.mark.parametrize("rank", [1, 3])
def test_stored_rank_k_is_near_the_best_and_its_error_is_recorded_exactly(lora_trio, rank):
    task, tgt, src = lora_trio
    result = ties_merge(task, src, tgt, scale=T, density=0.4, svd_rank=rank, allow_partial_modules=True)
    expected = lora_reference(lora_trio, method="ties", density=0.4)
    lost = total = 0.0
    for module, delta in dense_merged(result.adapter).items():
        s = torch.linalg.svdvals(expected[module])
        best = float(s[rank:].square().sum().sqrt() / s.square().sum().sqrt())
        assert result.adapter.tensors[module]["lora_A"].shape == (rank, expected[module].shape[1])
        error = relative_error(delta, expected[module])
        assert best <= error + 1e-6 and error < 1.05 * best, module  # randomized: near the best rank-k
        assert result.svd["per_module"][module] == pytest.approx(error, abs=1e-5)
        lost += float((expected[module] - delta).norm() ** 2)
        total += float(expected[module].norm() ** 2)
    assert result.svd["relative_error"] == pytest.approx(math.sqrt(lost / total), abs=1e-5)
    assert result.svd["relative_error"] > 0.1 and result.svd["rank"] == rank
    assert result.svd["max_module_error"] == max(result.svd["per_module"].values())


def core_reference(trio, module, *, method, density, seed=0):
    """(Q_B, merged core, Q_A) of ``module`` from the formulas: SVD bases of the stacked c·B and A factors."""
    weights = (1.0, T, -T)  # task_src, ref_tgt, ref_src
    present = [(a, w) for a, w in zip(trio, weights, strict=True) if module in a.tensors]
    factors = [
        (
            w * reference_scaling(a.config, module) * a.tensors[module]["lora_B"].double(),
            a.tensors[module]["lora_A"].double(),
            w,
        )
        for a, w in present
    ]
    q_b = torch.linalg.svd(torch.cat([b for b, _, _ in factors], 1), full_matrices=False)[0]
    q_a = torch.linalg.svd(torch.cat([a for _, a, _ in factors], 0), full_matrices=False)[2].T
    cores = [q_b.T @ b @ a @ q_a for b, a, _ in factors]
    task = sum(
        (c for c, (_, _, w) in zip(cores, factors, strict=True) if w == 1.0), torch.zeros_like(cores[0])
    )
    gap = sum(
        (c for c, (_, _, w) in zip(cores, factors, strict=True) if w != 1.0), torch.zeros_like(cores[0])
    )
    merged = merge_reference([task, gap], module, method=method, density=density, seed=seed)
    return q_b, merged, q_a, task + gap


@pytest.mark.parametrize(
    ("method", "density"), [("ties_core", 0.3), ("ties_core", 1.0), ("dare_ties_core", 0.5)]
)
def test_core_space_merge_equals_formula_exactly_at_rank_sum(lora_trio, method, density):
    task, tgt, src = lora_trio
    result = ties_merge(
        task, src, tgt, scale=T, density=density, method=method, seed=3, allow_partial_modules=True
    )
    assert result.mode == "core" and result.svd is None and result.partial_modules
    merged = dense_merged(result.adapter)
    dense = dense_merged(
        ties_merge(
            task, src, tgt, scale=T, density=density, svd_rank=FULL, allow_partial_modules=True
        ).adapter
    )
    adamergex = dense_merged(merge_adapters(task, src, tgt, scale=T, allow_partial_modules=True).adapter)
    for module, delta in merged.items():
        q_b, core, q_a, linear = core_reference(lora_trio, module, method=method, density=density, seed=3)
        assert relative_error(delta, q_b @ core @ q_a.T) < 1e-6, module
        rank = sum(a.tensors[module]["lora_A"].shape[0] for a in lora_trio if module in a.tensors)
        assert result.adapter.tensors[module]["lora_A"].shape[0] == rank == q_b.shape[1]
        assert relative_error(q_b @ linear @ q_a.T, adamergex[module]) < 1e-6  # the sum in core space: exact
        if density < 1 and module in tgt.tensors:  # TIES in the core basis is not dense TIES
            assert relative_error(delta, dense[module]) > 0.05, module


def test_core_bases_span_every_factor_and_sign_flips_change_nothing(lora_trio):
    module = "model.layers.0.self_attn.q_proj"
    terms = [
        (str(i), torch.randn(64, 3, dtype=torch.float64), torch.randn(3, 64, dtype=torch.float64))
        for i in range(2)
    ]
    q_b, q_a = core_bases(terms)
    for _, lora_B, lora_A in terms:
        torch.testing.assert_close(q_b @ (q_b.T @ lora_B), lora_B)
        torch.testing.assert_close((lora_A @ q_a) @ q_a.T, lora_A)
    cores = [q_b.T @ b @ a @ q_a for _, b, a in terms]
    flip = torch.ones(q_b.shape[1], dtype=torch.float64)
    flip[::2] = -1
    merger = ties._Merger(0.4, False, 0)
    merged = q_b @ merger(Vector(cores[0]), Vector(cores[1]), module) @ q_a.T
    flipped_cores = [flip[:, None] * c for c in cores]
    flipped = (q_b * flip) @ merger(Vector(flipped_cores[0]), Vector(flipped_cores[1]), module) @ q_a.T
    torch.testing.assert_close(merged, flipped)


def test_kth_largest_magnitude_is_exact_also_when_the_sample_misses(monkeypatch):
    monkeypatch.setattr(ties, "_SAMPLE", 64)
    generator = torch.Generator().manual_seed(0)
    ties_heavy = torch.randint(-3, 4, (50, 40), generator=generator).float()  # many equal magnitudes
    sparse = torch.zeros(50, 40)
    sparse[7, 3], sparse[20, 9], sparse[41, 30] = 5.0, -4.0, 3.0  # a sample of zeros brackets 0 only
    for vector in (ties_heavy, sparse, torch.randn(50, 40, generator=generator)):
        expected = vector.abs().flatten().sort(descending=True).values
        for k in (1, 2, 3, 17, 400, 1999, 2000):
            assert float(kth_largest_magnitude(Vector(vector), k)) == float(expected[k - 1]), k
            factors = (vector, torch.eye(40))  # the same entries, read from factors
            assert float(kth_largest_magnitude(Vector(factors=factors), k)) == float(expected[k - 1]), k


def test_dare_is_deterministic_per_seed_and_density_one_is_ties():
    trio = [synthetic_lora(s, r=3, alpha=6) for s in (1, 2, 3)]
    runs = [
        ties_merge(
            *trio, scale=T, density=0.5, method="dare_ties", svd_rank=20, seed=s, allow_partial_modules=True
        )
        for s in (7, 7, 8)
    ]
    module = "model.layers.1.self_attn.q_proj"
    same = [run.adapter.tensors[module]["lora_B"] for run in runs]
    assert torch.equal(same[0], same[1]) and not torch.allclose(same[0], same[2])
    # the drop keeps about `density` of the entries of each vector
    big = [synthetic_lora(s, r=8, alpha=8, std=1.0) for s in (4, 5, 6)]
    dare = dense_merged(
        ties_merge(
            *big, scale=1.0, density=0.25, method="dare_ties", svd_rank=20, allow_partial_modules=True
        ).adapter
    )
    entries = torch.cat([d.flatten() for d in dare.values()])  # 1480 entries
    kept = float((entries.abs() > 1e-4 * entries.abs().max()).double().mean())  # float32 factors: not exact 0
    assert abs(kept - (1 - 0.75**2)) < 0.05  # an entry survives where either vector keeps it
    full = [
        ties_merge(*trio, scale=T, density=1.0, method=m, svd_rank=20, allow_partial_modules=True)
        for m in ("ties", "dare_ties")
    ]
    for module in trio[0].tensors:
        assert torch.equal(
            full[0].adapter.tensors[module]["lora_B"], full[1].adapter.tensors[module]["lora_B"]
        )


@pytest.mark.parametrize(("method", "density"), [("ties", 0.4), ("dare_ties", 0.6)])
def test_ia3_merges_log_vectors(method, density):
    task, tgt, src = synthetic_ia3(1), synthetic_ia3(2, low=0.3, high=2.5), synthetic_ia3(3, head=False)
    result = ties_merge(
        task, src, tgt, scale=T, density=density, method=method, seed=5, allow_partial_modules=True
    )
    assert result.mode == "log" and result.svd is None and result.adapter.adapter_type == "ia3"
    for module, parts in result.adapter.tensors.items():
        logs = [
            a.tensors[module]["ia3_l"].double().log() if module in a.tensors else None
            for a in (task, tgt, src)
        ]
        expected = reference(*logs, module, method=method, density=density, seed=5).exp()
        torch.testing.assert_close(parts["ia3_l"].double(), expected, rtol=1e-6, atol=0)
        assert (expected - task.tensors[module]["ia3_l"].double()).abs().max() > 0.05
    assert result.partial_modules == {"lm_head": ["ref_src"]}


@pytest.mark.parametrize("method", ["ties", "dare_ties"])
def test_lora_logits_in_peft_match_patched_base(tiny_llama_path, lora_trio, tmp_path, method):
    task, tgt, src = lora_trio
    write_merged(
        ties_merge(
            task,
            src,
            tgt,
            scale=T,
            density=0.5,
            method=method,
            svd_rank=FULL,
            seed=1,
            allow_partial_modules=True,
        ),
        tmp_path / "m",
    )
    delta = lora_reference(lora_trio, method=method, density=0.5, seed=1)
    expected = patched_logits(tiny_llama_path, TOKENS, lambda n, w: w + delta[n] if n in delta else None)
    plain = patched_logits(tiny_llama_path, TOKENS, lambda n, w: None)
    assert (expected - plain).abs().max() > 0.1
    torch.testing.assert_close(
        peft_logits(tiny_llama_path, tmp_path / "m", TOKENS), expected, rtol=1e-4, atol=1e-4
    )


def test_ia3_logits_in_peft_match_patched_base(tiny_llama_path, tmp_path):
    trio = [AdapterWeights.load(make_ia3(tiny_llama_path, seed=70 + i)) for i in range(3)]
    write_merged(
        ties_merge(trio[0], trio[2], trio[1], scale=T, density=0.5, allow_partial_modules=True),
        tmp_path / "m",
    )
    vectors = {
        m: reference(
            *(a.tensors[m]["ia3_l"].double().log() for a in trio), m, method="ties", density=0.5
        ).exp()
        for m in trio[0].tensors
    }
    expected = patched_logits(tiny_llama_path, TOKENS, lambda n, w: w * vectors[n] if n in vectors else None)
    torch.testing.assert_close(
        peft_logits(tiny_llama_path, tmp_path / "m", TOKENS), expected, rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (dict(density=0.0), ValueError, r"density=0.0 must be in \(0, 1\]"),
        (dict(density=1.5), ValueError, r"density=1.5 must be in \(0, 1\]"),
        (dict(density=-0.2), ValueError, r"density=-0.2 must be in \(0, 1\]"),
        (dict(density=float("nan")), ValueError, r"density=nan must be in \(0, 1\]"),
        (dict(density="0.2"), TypeError, r"density='0.2' must be a number in \(0, 1\]"),
        (
            dict(svd_rank=0),
            ValueError,
            r"svd_rank=0: a LoRA TIES merge .* needs svd_rank, a positive integer",
        ),
        (dict(svd_rank=-3), ValueError, r"svd_rank=-3: .*positive integer"),
        (dict(svd_rank=None), ValueError, r"svd_rank=None: .*positive integer"),
        (dict(svd_rank=2.5), ValueError, r"svd_rank=2.5: .*positive integer"),
        (dict(method="dare"), ValueError, r"method='dare' is not supported; expected one of ties, dare_ties"),
        (dict(scale=float("inf")), ValueError, r"scale=inf must be finite"),
        (dict(seed=1.5), TypeError, r"seed=1.5 must be an integer"),
    ],
)
def test_bad_options_are_refused(kwargs, error, message):
    trio = [synthetic_lora(s) for s in (1, 2, 3)]
    options = dict(scale=T, density=0.5, svd_rank=4) | kwargs
    with pytest.raises(error, match=message):
        ties_merge(*trio, **options, allow_partial_modules=True)


def test_bad_inputs_and_non_finite_results_are_refused():
    ia3 = [synthetic_ia3(s) for s in (1, 2, 3)]
    with pytest.raises(ValueError, match=r"svd_rank=4 only applies to LoRA inputs"):
        ties_merge(*ia3, scale=T, density=0.5, svd_rank=4, allow_partial_modules=True)
    with pytest.raises(ValueError, match=r"\(IA\)³ module '.*': the merged vector .* NaN or inf"):
        ties_merge(*ia3, scale=1e300, density=1.0, allow_partial_modules=True)  # exp of ±1e300 overflows
    with pytest.raises(ValueError, match=r"different peft types: task_src is LORA"):
        ties_merge(
            synthetic_lora(1), ia3[1], ia3[2], scale=T, density=0.5, svd_rank=4, allow_partial_modules=True
        )
    zero = synthetic_ia3(4)
    zero.tensors["lm_head"]["ia3_l"][3, 0] = 0.0
    with pytest.raises(ValueError, match=r"ref_src .*'lm_head' has 1 of 20 entries ≤ 0, so its logarithm"):
        ties_merge(ia3[0], zero, ia3[2], scale=T, density=0.5, allow_partial_modules=True)
    nan = synthetic_lora(5)
    nan.tensors["lm_head"]["lora_B"][0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"ref_tgt .*LoRA module 'lm_head': lora_B has 1 of 80 entries NaN"):
        ties_merge(
            synthetic_lora(6),
            synthetic_lora(7),
            nan,
            scale=T,
            density=0.5,
            svd_rank=4,
            allow_partial_modules=True,
        )
    with pytest.raises(ValueError, match=r"the merged ΔW has .* NaN or inf"):  # beyond float32
        ties_merge(
            *(synthetic_lora(s) for s in (1, 2, 3)),
            scale=1e200,
            density=0.5,
            svd_rank=4,
            allow_partial_modules=True,
        )


def test_elect_and_average_equals_the_branching_definition_bit_for_bit():
    generator = torch.Generator().manual_seed(0)
    values = torch.tensor([0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 1e-30, -3e-38, 7.0])
    x, y = torch.cartesian_prod(values, values).T.contiguous()  # every pair: ties, zeros, one sign, both
    x = torch.cat([x, torch.randn(5000, generator=generator) * (torch.rand(5000, generator=generator) < 0.5)])
    y = torch.cat([y, torch.randn(5000, generator=generator) * (torch.rand(5000, generator=generator) < 0.5)])
    total = x + y
    expected = torch.where(
        x * y > 0, total / 2, torch.where(total >= 0, torch.maximum(x, y), torch.minimum(x, y))
    )
    out = torch.empty_like(x)
    ties._elect_and_average(x.clone(), y.clone(), torch.empty_like(x), torch.ones_like(x), out=out)
    assert torch.equal(out, expected)
    assert torch.equal(out, _elect_and_average([x.double(), y.double()]).float())  # the reference above


@pytest.mark.parametrize(("method", "density"), [("ties", 0.3), ("dare_ties", 0.5), ("ties", 1.0)])
def test_two_lanes_merge_exactly_as_one(method, density, monkeypatch):
    monkeypatch.setattr(ties, "_BLOCK", 40 * 3)  # 3 rows per block: the halves split 17 blocks
    monkeypatch.setattr(ties, "_SAMPLE", 64)
    generator = torch.Generator().manual_seed(1)
    factors = [
        (torch.randn(50, r, generator=generator), torch.randn(r, 40, generator=generator)) for r in (2, 4)
    ]
    lanes = []
    elect = ties._elect_rows
    monkeypatch.setattr(
        ties, "_elect_rows", lambda *a: lanes.append(threading.current_thread().name) or elect(*a)
    )
    threads, merged = torch.get_num_threads(), []
    try:
        for n, inference in (
            (1, False),
            (2, False),
            (2, True),
        ):  # MergeModule merges in validate's inference mode
            torch.set_num_threads(n)
            merger = ties._Merger(density, method == "dare_ties", 3)
            with torch.inference_mode(inference):
                merged.append(merger(*(Vector(factors=f) for f in factors), "model.layers.0.mlp.up_proj"))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(merged[0], merged[1]) and torch.equal(merged[0], merged[2])
    assert sum(name.startswith("ties-lane") for name in lanes) == 2  # the second half, with two threads
    task, gap = (b @ a for b, a in factors)
    expected = merge_reference(
        [task.double(), gap.double()], "model.layers.0.mlp.up_proj", method=method, density=density, seed=3
    )
    assert relative_error(merged[0].double(), expected) < 1e-6


@pytest.mark.parametrize("method", ["ties", "ties_core"])
def test_partial_modules_are_refused_unless_allowed_and_the_result_records_it(lora_trio, method):
    task, tgt, src = lora_trio
    rank = {"svd_rank": FULL} if method == "ties" else {}
    with pytest.raises(ValueError, match=r"^allow_partial_modules=false: the inputs adapt different modules"):
        ties_merge(task, src, tgt, scale=T, density=0.3, method=method, **rank)
    result = ties_merge(
        task, src, tgt, scale=T, density=0.3, method=method, allow_partial_modules=True, **rank
    )
    assert result.allow_partial_modules and result.partial_modules
