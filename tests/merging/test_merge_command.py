"""``adamergex merge``: in-process through ``command.main`` and once as ``python -m`` in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from merge_factories import make_ia3, make_lora

from adamergex_pl.merging.adapters import AdapterWeights, sha256_file
from adamergex_pl.merging.command import main
from adamergex_pl.merging.merge import merge_adapters


@pytest.fixture(scope="module")
def dirs(tiny_llama_path):
    return {
        "task": make_lora(tiny_llama_path, seed=71, r=4, lora_alpha=8),
        "src": make_lora(tiny_llama_path, seed=72, r=4, lora_alpha=8),
        "tgt": make_lora(tiny_llama_path, seed=73, r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]),
        "ia3_task": make_ia3(tiny_llama_path, seed=74),
        "ia3_src": make_ia3(tiny_llama_path, seed=75),
        "ia3_tgt": make_ia3(tiny_llama_path, seed=76),
    }


def _args(dirs, out, *extra, prefix=""):
    return [
        "--task_src", str(dirs[f"{prefix}task"]),
        "--ref_src", str(dirs[f"{prefix}src"]),
        "--ref_tgt", str(dirs[f"{prefix}tgt"]),
        "--out_dir", str(out),
        "--allow_partial_modules", "true",  # the fixture's ref_tgt adapts q_proj and v_proj only
        *extra,
    ]  # fmt: skip


def test_merge_writes_adapter_and_record(dirs, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(_args(dirs, out, "--scale", "0.5")) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1
    assert line.startswith("adamergex merge of 3 lora adapters (exact, t=0.5): 14 modules, ranks 8-10, ")
    assert line.rstrip().endswith(f"10 partial modules -> {out}")
    record = json.loads((out / "merge.json").read_text())
    assert record["method"] == "adamergex" and record["mode"] == "exact" and record["scale"] == 0.5
    assert record["formula"] == "A(T,tgt) = A(T,src) ⊕ t·(A(R,tgt) ⊖ A(R,src))"
    assert record["library"] == {"name": "adamergex-pl", "version": "0.1.0"}
    assert [(i["role"], i["weight"]) for i in record["inputs"]] == [
        ("task_src", 1.0),
        ("ref_tgt", 0.5),
        ("ref_src", -0.5),
    ]
    for entry, key in zip(record["inputs"], ("task", "tgt", "src"), strict=True):
        assert entry["path"] == str(dirs[key])
        assert entry["sha256"] == sha256_file(dirs[key] / "adapter_model.safetensors")
    assert record["partial_modules"]["model.layers.0.mlp.up_proj"] == ["ref_tgt"]
    assert record["allow_partial_modules"] is True
    assert record["svd"] is None and record["rank"] == {"min": 8, "max": 10}
    written = AdapterWeights.load(out)
    expected = merge_adapters(
        dirs["task"], dirs["src"], dirs["tgt"], scale=0.5, allow_partial_modules=True
    ).adapter
    assert written.config == expected.config
    for module, parts in expected.tensors.items():
        for name, tensor in parts.items():
            assert torch.equal(written.tensors[module][name], tensor)


def test_svd_mode_records_its_error(dirs, tmp_path, capsys):
    out = tmp_path / "svd"
    assert main(_args(dirs, out, "--lora_mode", "svd", "--svd_rank", "3")) == 0
    assert "svd relative error" in capsys.readouterr().out
    svd = json.loads((out / "merge.json").read_text())["svd"]
    assert svd["rank"] == 3 and 0 < svd["relative_error"] <= svd["max_module_error"] < 1
    assert len(svd["per_module"]) == 14


def test_ia3_and_arimerge(dirs, tmp_path, capsys):
    assert main(_args(dirs, tmp_path / "ia3", "--ia3_mode", "loglinear", prefix="ia3_")) == 0
    assert "(loglinear, t=1)" in capsys.readouterr().out
    args = [
        "--task_src",
        str(dirs["task"]),
        "--ref_tgt",
        str(dirs["tgt"]),
        "--out_dir",
        str(tmp_path / "ari"),
        "--allow_partial_modules",
        "true",
    ]
    assert main([*args, "--method", "arimerge", "--scale", "-0.25"]) == 0
    record = json.loads((tmp_path / "ari" / "merge.json").read_text())
    assert record["method"] == "arimerge" and [i["role"] for i in record["inputs"]] == ["task_src", "ref_tgt"]


# case: (flags to set or add, given the adapter dirs and tmp_path; a None value is a bare flag; message)
REFUSALS = {
    "missing input": (lambda d, t: {"--ref_src": str(t / "nowhere")}, "does not exist"),
    "mixed types": (lambda d, t: {"--ref_tgt": str(d["ia3_tgt"])}, "different peft types"),
    "snapshot without last": (lambda d, t: {"--ref_src": str(_snapshot_root(t))}, "no 'last' link"),
    "factor ranks": (lambda d, t: {"--lora_mode": "factor"}, "needs equal ranks"),
    "svd without rank": (lambda d, t: {"--lora_mode": "svd"}, "--lora_mode svd needs --svd_rank"),
    "rank without svd": (lambda d, t: {"--svd_rank": "4"}, "--svd_rank only applies to --lora_mode svd"),
    "ia3 mode on lora": (lambda d, t: {"--ia3_mode": "paper"}, "the inputs are LoRA adapters"),
    "arimerge with ref-src": (lambda d, t: {"--method": "arimerge"}, "takes no --ref_src"),
    "partial modules": (
        lambda d, t: {"--allow_partial_modules": "false"},
        "allow_partial_modules=false: the inputs adapt different modules (ref_tgt (",
    ),
    "non-finite scale": (lambda d, t: {"--scale": "nan"}, "scale='nan' is not valid; expected a float"),
}


def _snapshot_root(tmp_path):
    root = tmp_path / "snapshot_root"
    (root / "epoch=0").mkdir(parents=True)
    return root


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_print_one_line_and_write_nothing(dirs, tmp_path, capsys, case):
    overrides, message = REFUSALS[case]
    args = _args(dirs, tmp_path / "out")
    for flag, value in overrides(dirs, tmp_path).items():
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag] if value is None else [flag, value]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("adamergex merge: error: ") and captured.err.count("\n") == 1
    assert message in captured.err
    assert not (tmp_path / "out").exists()


def test_partial_modules_are_refused_unless_allowed(dirs, tmp_path, capsys):
    args = _args(dirs, tmp_path / "out")
    del args[args.index("--allow_partial_modules") : args.index("--allow_partial_modules") + 2]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(
        f"adamergex merge: error: allow_partial_modules=false: the inputs adapt different modules (ref_tgt "
        f"({dirs['tgt']}) lacks 'model.layers.0.mlp.down_proj', 'model.layers.0.mlp.gate_proj', "
        "'model.layers.0.mlp.up_proj' and 7 more)"
    )
    assert "pass allow_partial_modules=True (--allow_partial_modules true) to accept it" in err
    assert not (tmp_path / "out").exists()
    assert main([*args, "--allow_partial_modules", "true"]) == 0
    record = json.loads((tmp_path / "out" / "merge.json").read_text())
    assert record["allow_partial_modules"] is True and len(record["partial_modules"]) == 10
    # inputs that adapt the same modules need no option, and the record says it was not given
    same = _args(dirs, tmp_path / "same", "--allow_partial_modules", "false")
    same[same.index("--ref_tgt") + 1] = str(dirs["src"])
    assert main(same) == 0
    record = json.loads((tmp_path / "same" / "merge.json").read_text())
    assert record["allow_partial_modules"] is False and record["partial_modules"] == {}


def test_existing_out_needs_overwrite(dirs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(_args(dirs, out)) == 2
    assert "already exists; pass overwrite=True (--overwrite true)" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert main(_args(dirs, out, "--overwrite", "true")) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "merge.json",
    ]


def test_bad_flags_are_one_line_and_exit_2(dirs, tmp_path, capsys):
    assert main(_args(dirs, tmp_path / "out", "--method", "magic")) == 2
    assert (
        "method='magic' is not a merge method; expected one of arimerge, adamergex" in capsys.readouterr().err
    )
    assert main(_args(dirs, tmp_path / "out", "--lora_mode", "exactly")) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1 and "lora_mode='exactly' is not valid; expected one of exact, factor, svd" in err
    )
    assert main(["--help"]) == 0
    assert "--lora_mode" in capsys.readouterr().out


def test_flags_can_come_from_a_yaml_config(dirs, tmp_path, capsys):
    config = tmp_path / "merge.yaml"
    config.write_text(
        f"task_src: {dirs['task']}\nref_src: {dirs['src']}\nref_tgt: {dirs['tgt']}\nout_dir: {tmp_path / 'out'}\n"
        "scale: 0.5\nallow_partial_modules: true\n"
    )
    assert main(["--config", str(config)]) == 0
    assert json.loads((tmp_path / "out" / "merge.json").read_text())["scale"] == 0.5


def test_module_entry_point_in_a_subprocess(dirs, tmp_path):
    command = [
        sys.executable,
        "-m",
        "adamergex_pl.merging.command",
        *_args(dirs, tmp_path / "out", "--scale", "2"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("adamergex merge of 3 lora adapters (exact, t=2)")
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2
    assert again.stderr.startswith("adamergex merge: error: out_dir") and again.stderr.count("\n") == 1
    assert "Traceback" not in again.stderr


def _merge_concurrently(args_per_run: list[list[str]], tmp_path) -> list[tuple[int, str]]:
    """Run ``command.main`` once per argument list, in forked children that interleave at the worst moments:
    each stages its folder, waits until every run has staged, then (as a run that starts just then would)
    repairs the folder's interrupted writes, waits again, and publishes. Returns ``(exit code, stderr)``."""
    import contextlib
    import multiprocessing
    import os

    from adamergex_pl.atomic_files import finish_interrupted_writes
    from adamergex_pl.merging import output

    staged, repaired = (multiprocessing.get_context("fork").Barrier(len(args_per_run)) for _ in range(2))
    real_staging, real_publish = output.staging_dir, output.publish_dir

    def staging_dir(target):
        staging = real_staging(target)
        staged.wait(timeout=120)  # a bound for a stuck child, never reached by a run that works
        return staging

    passed = []  # in a child: whether it passed both barriers (then nobody waits for it any more)

    def publish_dir(staging, target, **options):
        finish_interrupted_writes(target.parent, target.name)
        repaired.wait(timeout=120)
        passed.append(True)
        return real_publish(staging, target, **options)

    children = []
    for i, args in enumerate(args_per_run):
        err = tmp_path / f"stderr_{i}.txt"
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 99
            try:
                output.staging_dir, output.publish_dir = staging_dir, publish_dir
                with err.open("w") as stream, contextlib.redirect_stderr(stream):
                    code = main(args)
            finally:
                if not passed:  # a run that ended before the barriers: the others must not wait for it
                    staged.abort(), repaired.abort()
                os._exit(code)
        children.append((pid, err))
    return [(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), err.read_text()) for pid, err in children]


@pytest.mark.parametrize("overwrite", [True, False])
def test_concurrent_merges_into_one_out_dir(dirs, tmp_path, overwrite):
    out = tmp_path / "merged"
    scales = ["0.25", "0.5", "1", "2"]
    runs = [_args(dirs, out, "--scale", t, "--overwrite", str(overwrite).lower()) for t in scales]
    done = _merge_concurrently(runs, tmp_path)
    codes = [code for code, _ in done]
    if overwrite:  # every run succeeds and the last publish wins
        assert codes == [0] * len(runs), done
    else:  # the first publish wins; the others are refused in one line
        assert sorted(codes) == [0] + [2] * (len(runs) - 1), done
        for code, err in done:
            if code == 2:
                assert err.count("\n") == 1 and err.startswith(
                    f"adamergex merge: error: out_dir {str(out)!r} was written by another run meanwhile; pass "
                    "overwrite=True"
                ), err
    assert all(err == "" for code, err in done if code == 0)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("stderr_")) == ["merged"]
    assert sorted(p.name for p in out.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "merge.json",
    ]
    scale = json.loads((out / "merge.json").read_text())["scale"]
    assert scale in [float(t) for t in scales]  # the folder is one whole run's merge
    written = AdapterWeights.load(out)
    expected = merge_adapters(dirs["task"], dirs["src"], dirs["tgt"], scale=scale, allow_partial_modules=True)
    for module, parts in expected.adapter.tensors.items():
        for name, tensor in parts.items():
            assert torch.equal(written.tensors[module][name], tensor), (module, name)
