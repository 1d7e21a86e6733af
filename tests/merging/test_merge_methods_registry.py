"""The registered comparison methods through ``adamergex merge`` and their refusals where they cannot run."""

from __future__ import annotations

import json

import pytest
import torch
from merge_factories import make_lora
from safetensors.torch import load_file

from adamergex_pl.merging.adapters import AdapterWeights
from adamergex_pl.merging.command import main
from adamergex_pl.merging.layer_swap import layer_swap
from adamergex_pl.merging.methods import METHODS


@pytest.fixture(scope="module")
def dirs(tiny_llama_path):
    return {
        role: make_lora(tiny_llama_path, seed=s, r=4, lora_alpha=8)
        for role, s in zip("TSG", (81, 82, 83), strict=True)
    }


def _args(dirs, out, *extra, ref_src=True):
    args = ["--task_src", str(dirs["T"]), "--ref_tgt", str(dirs["G"]), "--out_dir", str(out), *extra]
    return args + (["--ref_src", str(dirs["S"])] if ref_src else [])


def test_layer_swap_takes_the_bottom_and_top_layers_from_the_target_reference(dirs, tmp_path):
    out = tmp_path / "swap"
    assert (
        main(
            _args(dirs, out, "--method", "layer_swap", "--swap_bottom", "1", "--swap_top", "0", ref_src=False)
        )
        == 0
    )
    record = json.loads((out / "merge.json").read_text())
    assert record["method"] == "layer_swap" and record["formula"] == METHODS["layer_swap"].formula
    assert record["options"]["swap_bottom"] == 1
    merged, target, task = (load_file(p / "adapter_model.safetensors") for p in (out, dirs["G"], dirs["T"]))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert (merged[key] == target[key]).all() and not (merged[key] == task[key]).all()
    top = key.replace("layers.0", "layers.1")
    assert (merged[top] == task[top]).all()


def test_ties_writes_a_lora_at_the_svd_rank_and_records_its_error(dirs, tmp_path):
    out = tmp_path / "ties"
    assert (
        main(_args(dirs, out, "--method", "ties", "--density", "0.5", "--svd_rank", "4", "--scale", "0.5"))
        == 0
    )
    record = json.loads((out / "merge.json").read_text())
    assert record["method"] == "ties" and 0 < record["svd"]["relative_error"] < 1
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "layer_swap"], "needs swap_bottom and swap_top"),
        (["--method", "adamergex", "--swap_top", "1"], "only apply to --method layer_swap"),
        (["--method", "ties", "--density", "1.5", "--svd_rank", "4"], "density"),
    ],
)
def test_bad_method_options_are_one_line_and_write_nothing(dirs, tmp_path, capsys, extra, message):
    out = tmp_path / "refused"
    needs_src = "layer_swap" not in extra
    assert main(_args(dirs, out, *extra, ref_src=needs_src)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_the_comparison_sweeps_layer_swaps_k_and_needs_it(dirs):
    from adamergex_pl.merging.merge_module import MergeModule

    refs = {"en": str(dirs["S"]), "es": str(dirs["G"])}
    module = MergeModule(
        "builtin:tiny-llama", str(dirs["T"]), refs, methods=["layer_swap", "adamergex"], swaps=[0, 1]
    )
    assert [(v.method, v.scale) for v in module.variants] == [
        ("layer_swap", 0.0),
        ("layer_swap", 1.0),
        ("adamergex", 1.0),
    ]
    module._weights = {
        name: AdapterWeights.load(path)
        for name, path in (("task", dirs["T"]), ("ref:en", dirs["S"]), ("ref:es", dirs["G"]))
    }
    # K = 1: the bottom and the top layer (of 2) from A(R,es)
    swapped = module.merged_adapter(module.variants[1], "es").adapter
    direct = layer_swap(dirs["T"], dirs["G"], swap_bottom=1, swap_top=1).adapter
    assert swapped.tensors.keys() == direct.tensors.keys()
    assert all(
        torch.equal(swapped.tensors[m][p], direct.tensors[m][p])
        for m in direct.tensors
        for p in direct.tensors[m]
    )
    with pytest.raises(ValueError, match="'layer_swap' but swaps is empty"):
        MergeModule("builtin:tiny-llama", str(dirs["T"]), refs, methods=["layer_swap"])
