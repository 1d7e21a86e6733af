"""Refusals before and after merging, each with its message, and atomic writes that leave nothing behind."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from merge_factories import make_ia3, make_lora

from adamergex_pl.merging.adapters import AdapterWeights, sha256_file
from adamergex_pl.merging.merge import combine_adapters, merge_adapters
from adamergex_pl.merging.methods import METHODS
from adamergex_pl.merging.output import write_merged
from callbacks.adapter_snapshot import resolve_adapter_dir


@pytest.fixture(scope="module")
def dirs(tiny_llama_path):
    return {
        "a": make_lora(tiny_llama_path, seed=61, r=4, lora_alpha=8),
        "b": make_lora(tiny_llama_path, seed=62, r=4, lora_alpha=8),
        "c": make_lora(tiny_llama_path, seed=63, r=2, lora_alpha=8),
        "partial": make_lora(
            tiny_llama_path, seed=64, r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]
        ),
        "ia3": make_ia3(tiny_llama_path, seed=65),
    }


@pytest.fixture(scope="module")
def loaded(dirs):
    return {name: AdapterWeights.load(path) for name, path in dirs.items()}


def _replace(adapter, *, config=None, module=None, part=None, tensor=None, path="edited"):
    tensors = {m: dict(p) for m, p in adapter.tensors.items()}
    if module is not None:
        tensors[module][part] = tensor
    return AdapterWeights({**adapter.config, **(config or {})}, tensors, path=path)


def test_mixed_peft_types(loaded):
    with pytest.raises(
        ValueError, match=r"different peft types: task_src is LORA .*, ref_tgt is IA3 .*ref_src is LORA"
    ):
        merge_adapters(loaded["a"], loaded["b"], loaded["ia3"])


def test_different_base_model_and_its_override(loaded):
    other = _replace(loaded["b"], config={"base_model_name_or_path": "meta-llama/Llama-2-7b-hf"})
    with pytest.raises(
        ValueError,
        match=r"ref_tgt was trained on base model 'meta-llama/Llama-2-7b-hf' but task_src"
        r".*--allow_different_base",
    ):
        merge_adapters(loaded["a"], loaded["c"], other)
    assert merge_adapters(loaded["a"], loaded["c"], other, allow_different_base=True).adapter.tensors


def test_shape_mismatch(loaded):
    module = "model.layers.1.mlp.up_proj"
    wider = _replace(loaded["b"], module=module, part="lora_A", tensor=torch.ones(4, 65))
    with pytest.raises(
        ValueError,
        match=rf"module '{module}' has out × in \(128, 65\) in ref_src \(edited\) "
        r"but \(128, 64\) in task_src",
    ):
        merge_adapters(loaded["a"], wider, loaded["c"])
    bent = _replace(loaded["b"], module=module, part="lora_A", tensor=torch.ones(3, 64))
    with pytest.raises(ValueError, match=r"lora_A \(3, 64\) and lora_B \(128, 4\) are not the factors"):
        merge_adapters(loaded["a"], bent, loaded["c"])


def test_config_that_does_not_belong_to_the_weights(loaded):
    wrong = _replace(loaded["b"], config={"r": 8, "lora_alpha": 16})
    with pytest.raises(ValueError, match=r"gives module '.*' rank 8 but its lora_A has 4 rows"):
        merge_adapters(loaded["a"], wrong, loaded["c"])


def test_factor_mode_needs_equal_ranks(loaded):
    with pytest.raises(
        ValueError,
        match=r"needs equal ranks, but module '.*' has ranks "
        r"\{'task_src': 4, 'ref_tgt': 2, 'ref_src': 4\}; use lora_mode='exact'",
    ):
        merge_adapters(loaded["a"], loaded["b"], loaded["c"], lora_mode="factor")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"use_dora": True}, "use_dora \\(DoRA"),
        ({"lora_bias": True}, "lora_bias"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"bias": "all"}, "bias='all'"),
        ({"init_lora_weights": "pissa_niter_4"}, "init_lora_weights='pissa_niter_4'"),
    ],
)
def test_unsupported_lora_variants(loaded, config, message):
    with pytest.raises(ValueError, match=f"edited is not a plain LORA adapter: {message}"):
        _replace(loaded["a"], config=config)


def test_dora_adapter_on_disk_is_refused(tiny_llama_path):
    with pytest.raises(ValueError, match="is not a plain LORA adapter: use_dora"):
        AdapterWeights.load(
            make_lora(tiny_llama_path, seed=66, r=2, use_dora=True, target_modules=["q_proj"])
        )


def test_unknown_tensor_keys(loaded):
    state = loaded["a"].state_dict()
    state["base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"] = torch.ones(64)
    with pytest.raises(ValueError, match=r"tensor '.*lora_magnitude_vector' is not a plain LORA weight"):
        AdapterWeights.from_state_dict(loaded["a"].config, state)
    with pytest.raises(ValueError, match=r"peft_type='PREFIX_TUNING' \(in-memory adapter\) is not supported"):
        AdapterWeights.from_state_dict({"peft_type": "PREFIX_TUNING"}, {})


def test_partial_modules_are_refused_unless_allowed(loaded, dirs):
    with pytest.raises(ValueError) as refused:
        merge_adapters(loaded["a"], loaded["partial"], loaded["b"])
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith(
        f"allow_partial_modules=false: the inputs adapt different modules (ref_src ({dirs['partial']}) lacks "
        "'model.layers.0.mlp.down_proj', 'model.layers.0.mlp.gate_proj', 'model.layers.0.mlp.up_proj' and 7 more)"
    )
    assert message.endswith("pass allow_partial_modules=True (--allow_partial_modules true) to accept it")
    result = merge_adapters(loaded["a"], loaded["partial"], loaded["b"], allow_partial_modules=True)
    assert result.partial_modules["model.layers.0.mlp.down_proj"] == ["ref_src"]
    assert result.record()["allow_partial_modules"] is True
    assert merge_adapters(loaded["a"], loaded["b"], loaded["b"]).record()["allow_partial_modules"] is False
    with pytest.raises(TypeError, match="allow_partial_modules='yes' must be true or false"):
        merge_adapters(loaded["a"], loaded["b"], loaded["b"], allow_partial_modules="yes")


@pytest.mark.parametrize("method", ["layer_swap", "ties", "stack", "arimerge"])
def test_every_registered_merge_refuses_partial_modules_unless_allowed(loaded, method):
    adapters = {"task_src": loaded["a"], "task_src_stacked": loaded["a"], "ref_src": loaded["b"]}
    adapters["ref_tgt"] = loaded["partial"]
    options = {"swap_bottom": 1, "swap_top": 1, "svd_rank": 4}
    with pytest.raises(ValueError, match=r"^allow_partial_modules=false: .* \(ref_tgt \(.*\) lacks"):
        METHODS[method].build(adapters, 0.5, options)
    result = METHODS[method].build(adapters, 0.5, {**options, "allow_partial_modules": True})
    assert result.record()["allow_partial_modules"] is True and result.partial_modules


def test_bad_options(loaded):
    a, b, c = loaded["a"], loaded["b"], loaded["c"]
    with pytest.raises(
        ValueError, match="method='ties' is not supported; expected one of adamergex, arimerge"
    ):
        merge_adapters(a, b, c, method="ties")
    with pytest.raises(ValueError, match="lora_mode='linear' is not supported"):
        merge_adapters(a, b, c, lora_mode="linear")
    with pytest.raises(ValueError, match="lora_mode='svd' needs svd_rank, a positive integer"):
        merge_adapters(a, b, c, lora_mode="svd")
    with pytest.raises(ValueError, match="svd_rank=4 only applies to lora_mode='svd'"):
        merge_adapters(a, b, c, svd_rank=4)
    with pytest.raises(ValueError, match="scale=nan must be finite"):
        merge_adapters(a, b, c, scale=float("nan"))
    with pytest.raises(TypeError, match=r"scale='0\.5' must be a number"):
        merge_adapters(a, b, c, scale="0.5")
    with pytest.raises(ValueError, match="does not use ref_src; pass None"):
        merge_adapters(a, b, c, method="arimerge")
    with pytest.raises(ValueError, match="method='adamergex' needs ref_src"):
        merge_adapters(a, None, c)
    with pytest.raises(ValueError, match="ia3_mode='exact' is not supported"):
        merge_adapters(loaded["ia3"], loaded["ia3"], loaded["ia3"], ia3_mode="exact")
    with pytest.raises(
        ValueError, match="need one weight and one name per adapter; got 2 adapters, 1 weights"
    ):
        combine_adapters([a, b], [1.0])
    with pytest.raises(ValueError, match=r"the combination is zero on every module \(weights \[0.0, 0.0\]\)"):
        combine_adapters([a, b], [0.0, 0.0])


def test_input_paths(dirs, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"adapter path '.*nowhere' does not exist; expected a PEFT adapter directory"
    ):
        merge_adapters(tmp_path / "nowhere", dirs["a"], dirs["b"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"'.*empty' holds neither adapter_config.json nor a 'last' link"
    ):
        resolve_adapter_dir(tmp_path / "empty")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(dirs["a"] / "adapter_config.json", pickled)
    (pickled / "adapter_model.bin").write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match=r"has no adapter_model\.safetensors; it has the pickle adapter_model\.bin"
    ):
        resolve_adapter_dir(pickled)


def test_snapshot_roots(dirs, tmp_path):
    root = tmp_path / "snapshots"
    for epoch, source in enumerate((dirs["b"], dirs["a"])):
        shutil.copytree(source, root / f"epoch={epoch}")
        (root / f"epoch={epoch}" / "snapshot.json").write_text(json.dumps({"epoch": epoch}))
    with pytest.raises(
        FileNotFoundError,
        match=r"snapshot root '.*snapshots' has 2 epoch directories but no 'last' link; "
        r"pass one of them instead, e\.g\. '.*epoch=1'",
    ):
        merge_adapters(root, dirs["b"], dirs["c"])
    (root / "last").symlink_to("epoch=1")
    assert resolve_adapter_dir(root) == (root / "epoch=1").resolve()
    result = merge_adapters(root, dirs["b"], dirs["c"])
    assert result.inputs[0]["path"].endswith("epoch=1")
    assert result.inputs[0]["sha256"] == sha256_file(dirs["a"] / "adapter_model.safetensors")
    (root / "last").unlink()
    (root / "last").symlink_to("epoch=7")
    with pytest.raises(FileNotFoundError, match=r"'last' points to 'epoch=7', which does not exist"):
        resolve_adapter_dir(root)


def test_write_merged_refusals_and_overwrite(loaded, dirs, tmp_path):
    result = merge_adapters(loaded["a"], loaded["b"], loaded["c"], scale=0.5)
    out = tmp_path / "merged"
    write_merged(result, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "merge.json",
    ]
    with pytest.raises(
        FileExistsError, match=r"out_dir '.*merged' already exists; pass overwrite=True \(--overwrite true\)"
    ):
        write_merged(result, out)
    other = merge_adapters(loaded["a"], loaded["b"], loaded["c"], scale=0.25)
    write_merged(other, out, overwrite=True)
    assert json.loads((out / "merge.json").read_text())["scale"] == 0.25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no temporary or retired directories
    with pytest.raises(ValueError, match=r"holds the input task_src .*would destroy it"):
        write_merged(result, dirs["a"], overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file or a link; choose another path"):
        write_merged(result, tmp_path / "file", overwrite=True)


def test_non_finite_tensors_are_never_written(loaded, tmp_path):
    module = "model.layers.0.self_attn.v_proj"
    poisoned = _replace(loaded["b"], module=module, part="lora_B", tensor=torch.full((32, 4), float("nan")))
    with pytest.raises(
        ValueError,
        match=rf"ref_tgt \(edited\) LoRA module '{module}': lora_B has 128 of 128 entries NaN or inf",
    ):
        merge_adapters(loaded["a"], loaded["c"], poisoned)
    result = merge_adapters(loaded["a"], loaded["c"], loaded["b"])
    merged_a = result.adapter.tensors[module]["lora_A"]
    broken = _replace(
        result.adapter, module=module, part="lora_A", tensor=torch.full_like(merged_a, float("inf"))
    )
    # a merge result with such a tensor is refused when it is made (issue 17: the overflow check) ...
    with pytest.raises(
        ValueError, match=rf"the adamergex merge could overflow: module '{module}' .* up to inf"
    ):
        type(result)(broken, "adamergex", "exact", 1.0, result.inputs)
    # ... and writing one made without that check is refused too
    unchecked = object.__new__(type(result))
    for name, value in zip(("adapter", "method", "mode", "scale", "inputs", "partial_modules", "svd"),
                           (broken, "adamergex", "exact", 1.0, result.inputs, {}, None), strict=True):  # fmt: skip
        object.__setattr__(unchecked, name, value)
    with pytest.raises(
        ValueError,
        match=rf"refusing to write .*v_proj.lora_A.weight: it has {merged_a.numel()} of "
        rf"{merged_a.numel()} entries NaN or inf",
    ):
        write_merged(unchecked, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_overflow_in_the_output_dtype_is_refused(loaded):
    def half(adapter):
        tensors = {m: {k: v.half() for k, v in p.items()} for m, p in adapter.tensors.items()}
        return AdapterWeights(adapter.config, tensors, path="half")

    a, b, c = (half(loaded[k]) for k in "abc")
    assert merge_adapters(a, b, c, scale=2.0).adapter.tensors["model.layers.0.mlp.up_proj"][
        "lora_B"
    ].dtype == (torch.float16)
    with pytest.raises(
        ValueError, match=r"LoRA module '.*': the merged lora_B has \d+ of \d+ entries NaN or inf"
    ):
        merge_adapters(a, b, c, scale=1e6)
