"""Every bad input is one clear line (the value, the expected form, a fix) and exit code 2, never a traceback
nor a silently bad result: data files and records, adapter files, merges that would overflow, unwritable
outputs, and commands that are not adamergex commands."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from merge_factories import make_ia3, make_lora

from adamergex_pl.cli import main
from adamergex_pl.merging.merge import merge_adapters
from data_modules import InstructionDataModule, ReferenceLMDataModule
from data_modules.sources import DataSource, load_records

QUIET = ("--trainer.enable_progress_bar", "false")


def one_error(capsys, prefix: str = "adamergex: error:") -> str:
    err = capsys.readouterr().err
    assert err.count(prefix) == 1 and "Traceback" not in err, err
    return err[err.index(prefix) :].strip()


def write_jsonl(path: Path, records: list, *, raw: dict[int, bytes] | None = None) -> str:
    """Records one per line; ``raw`` replaces given (1-based) lines by bytes."""
    lines = [json.dumps(r).encode() for r in records]
    for number, content in (raw or {}).items():
        lines[number - 1] = content
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def records(n: int = 40) -> list[dict]:
    return [{"prompt": f"{i} + 1 =", "completion": f" {i + 1}"} for i in range(n)]


def instruction_error(path: str, **kwargs) -> str:
    data = InstructionDataModule(train=DataSource(path), tokenizer="builtin:tiny-llama", **kwargs)
    with pytest.raises(ValueError) as info:
        data.setup("fit")
    return str(info.value)


# --------------------------------------------------------------------------------------------- data files
def test_a_malformed_jsonl_line_is_named_by_its_line_through_the_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_jsonl(
        tmp_path / "train.jsonl", records(), raw={31: b'{"prompt": "30 + 1 =", "completion" " 31"}'}
    )
    config = str(REPO_ROOT / "configs/tiny/task_lora.yaml")
    assert main(["fit", "--config", config, "--data.init_args.train.path", path, *QUIET]) == 2
    err = one_error(capsys)
    assert err.startswith(
        f"adamergex: error: {path}, line 31, column 37: not valid JSON (Expecting ':' delimiter)"
    )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.ckpt"))


def test_bytes_that_are_not_utf8_are_named_by_line_and_column(tmp_path):
    path = write_jsonl(
        tmp_path / "latin1.jsonl",
        records(),
        raw={7: '{"prompt": "caf\xe9", "completion": "x"}'.encode("latin-1")},
    )
    with pytest.raises(
        ValueError, match=r"latin1.jsonl, line 7, column 16: byte 0xe9 is not UTF-8 text; save it as UTF-8"
    ):
        load_records(DataSource(path))
    text = tmp_path / "text.txt"
    text.write_bytes(b"line one\nline two \xff\n")
    with pytest.raises(ValueError, match=r"text.txt, line 2, column 10: byte 0xff is not UTF-8"):
        load_records(DataSource(str(text)))
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": "c" "completion": "d"}\n]\n')
    with pytest.raises(
        ValueError, match=r"broken.json, line 3, column 18: not valid JSON \(Expecting ',' delimiter\)"
    ):
        load_records(DataSource(str(broken)))


def test_every_record_is_checked_not_only_the_first(tmp_path):
    rows = records()
    for index in (30, 33, 35):  # records 31, 34 and 36 lack their completion
        del rows[index]["completion"]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    message = instruction_error(path)
    assert message == (
        f"{path}, line 31: lacks field 'completion' that completion_template='{{completion}}' names (the record has "
        "['prompt']) (2 more records have problems too); fix the record or drop it"
    )
    rows = records()
    rows[11]["completion"] = None
    assert "line 12: field 'completion' is null, but completion_template='{completion}' needs a value" in (
        instruction_error(write_jsonl(tmp_path / "null.jsonl", rows))
    )
    csv = tmp_path / "train.csv"
    csv.write_text("prompt,completion\n1 + 1 =, 2\n2 + 2 =\n")
    assert instruction_error(str(csv)).startswith(f"{csv}, row 2: field 'completion' is null")
    texts = [{"text": "one"}] * 4 + [{"body": "five"}]
    path = write_jsonl(tmp_path / "wiki.jsonl", texts)
    data = ReferenceLMDataModule(train=DataSource(path), tokenizer="builtin:tiny-llama")
    with pytest.raises(
        ValueError, match=r"wiki.jsonl, line 5: lacks field 'text' that text_fields=\['text'\] names"
    ):
        data.setup("fit")


# ------------------------------------------------------------------------------------------ adapter files
@pytest.fixture(scope="module")
def loras(tiny_llama_path):
    return [make_lora(tiny_llama_path, seed=seed, r=4, lora_alpha=8) for seed in (91, 92, 93)]


def merge(adapters, out: Path, *extra: str) -> int:
    task, src, tgt = adapters
    return main(
        [
            "merge",
            "--task_src",
            str(task),
            "--ref_src",
            str(src),
            "--ref_tgt",
            str(tgt),
            "--out_dir",
            str(out),
            *extra,
        ]
    )


def damaged_copies(adapter: Path, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Copies of ``adapter`` with a damaged file, and the message each must give."""
    weights = (adapter / "adapter_model.safetensors").read_bytes()
    damages = {
        "truncated": ("adapter_model.safetensors", weights[: len(weights) // 2], "is truncated or corrupt ("),
        "garbage": ("adapter_model.safetensors", random.Random(0).randbytes(4096), "is not a safetensors file"),
        "bad header": ("adapter_model.safetensors", weights[:8] + b"\xff" * 40 + weights[48:],
                       "is corrupt (its header is not valid JSON)"),
        "bad config": ("adapter_config.json", b'{"peft_type": "LORA",', "adapter_config.json is not valid JSON"),
    }  # fmt: skip
    copies = {}
    for name, (file, content, message) in damages.items():
        copy = tmp_path / name.replace(" ", "_")
        copy.mkdir()
        for part in adapter.iterdir():
            (copy / part.name).write_bytes(part.read_bytes())
        (copy / file).write_bytes(content)
        copies[name] = (copy, message)
    return copies


def test_damaged_adapter_files_are_one_line_in_merge_validate_and_the_merge_module(loras, tmp_path, capsys):
    for name, (copy, message) in damaged_copies(loras[0], tmp_path).items():
        assert merge([copy, *loras[1:]], tmp_path / "out") == 2, name
        assert message in one_error(capsys, "adamergex merge: error:"), name
        assert not (tmp_path / "out").exists()
    (tmp_path / "v").mkdir()
    copy, message = damaged_copies(loras[1], tmp_path / "v")["truncated"]
    config = str(REPO_ROOT / "configs/tiny/task_lora.yaml")
    assert main(["validate", "--config", config, "--model.init_args.adapter_dir", str(copy), *QUIET]) == 2
    assert f"adapter weights '{copy}/adapter_model.safetensors' {message}" in one_error(capsys)
    merge_config = str(REPO_ROOT / "configs/merge/tiny_lora.yaml")
    args = ["--model.init_args.task_src", str(copy), "--model.init_args.reference_adapters",
            json.dumps({"en": str(loras[1]), "es": str(loras[2])})]  # fmt: skip
    assert main(["validate", "--config", merge_config, *args, *QUIET]) == 2
    assert f"adapter weights '{copy}/adapter_model.safetensors' {message}" in one_error(capsys)


# ------------------------------------------------------------------------------------------------ merges
def test_a_merge_that_would_overflow_is_refused_although_its_factors_are_finite(
    loras, tiny_llama_path, tmp_path, capsys
):
    out = tmp_path / "merged"
    assert merge(loras, out, "--scale", "1e30") == 2
    err = one_error(capsys, "adamergex merge: error:")
    assert (
        "the adamergex merge could overflow: module 'model.layers." in err
        and "use a smaller |t| than scale=1e+30" in err
    )
    assert not out.exists()
    from adamergex_pl.merging import result as result_module

    unchecked = result_module.MergeResult.__post_init__
    result_module.MergeResult.__post_init__ = lambda self: None
    try:  # without the check: every tensor finite, and still the logits are not (what the check is for)
        merged = merge_adapters(*loras, scale=1e30).adapter
    finally:
        result_module.MergeResult.__post_init__ = unchecked
    assert all(torch.isfinite(t).all() for parts in merged.tensors.values() for t in parts.values())
    ia3 = [make_ia3(tiny_llama_path, seed=seed) for seed in (94, 95, 96)]
    with pytest.raises(
        ValueError, match=r"the adamergex merge could overflow: module .* use a smaller \|t\|"
    ):
        merge_adapters(*ia3, scale=1e30)
    assert merge(loras, out, "--scale", "3") == 0  # an ordinary t merges as before
    capsys.readouterr()


def test_an_unwritable_merge_output_is_one_line_and_leaves_nothing(loras, read_only_dir, capsys):
    assert merge(loras, read_only_dir / "merged") == 2
    err = one_error(capsys, "adamergex merge: error:")
    assert f"cannot write merged adapter '{read_only_dir}/merged'" in err and (
        "read-only" in err or "permission" in err
    ), err
    assert list(read_only_dir.iterdir()) == []


# -------------------------------------------------------------------------------------- other commands
def test_submit_refuses_a_command_that_is_no_adamergex_subcommand(capsys):
    assert main(["submit", "--dry-run", "--", "fitt", "--config", "x.yaml"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "", "a script was rendered"
    assert "adamergex submit: error: 'fitt' is not an adamergex command; did you mean 'fit'?" in captured.err
    config = str(REPO_ROOT / "configs/tiny/task_lora.yaml")
    assert main(["submit", "--dry-run", "--", "fit", "--config", config]) == 0
    assert f"fit --config {config}" in capsys.readouterr().out


def test_submit_refuses_a_config_file_that_does_not_exist_before_rendering_anything(capsys, tmp_path):
    for config in (["--config", "x.yaml"], ["--config=x.yaml"]):
        assert main(["submit", "--dry-run", "--workdir", str(tmp_path), "--", "fit", *config]) == 2
        captured = capsys.readouterr()
        assert captured.out == "", "a script was rendered"
        assert captured.err == (
            f"adamergex submit: error: job 'adamergex': --config 'x.yaml' is not a file (in the jobs' working "
            f"directory {tmp_path}); give an existing config file, or --workdir where it is\n"
        )


def test_crossin_build_into_an_unwritable_out_is_one_line(read_only_dir, capsys):
    config = str(REPO_ROOT / "configs/tiny/crossin_x2x.yaml")
    assert main(["crossin", "build", "--config", config, "--out", str(read_only_dir / "mix.jsonl")]) == 2
    err = one_error(capsys)
    assert f"cannot write --out '{read_only_dir}/mix.jsonl'" in err, err
    assert list(read_only_dir.iterdir()) == []


JSONARGPARSE_REFUSALS = {
    "unknown adapter_type": (
        ["--model.init_args.adapter_type", "loraa"],
        "model.init_args.adapter_type='loraa' is not valid; expected one of lora, ia3 (",
    ),
    "unknown quantization": (
        ["--model.init_args.quantization", "nf8"],
        "model.init_args.quantization='nf8' is not valid; expected one of nf4, fp4, int8, none (",
    ),
    "typo'd model key": (
        ["--model.init_args.learning_rat", "0.1"],
        "model.init_args.learning_rat is not an argument of adamergex_pl.AdapterModule",
    ),
    "negative value with a space": (
        ["--model.init_args.learning_rate", "-1e-3"],
        "adamergex: error: model.init_args.learning_rate='-1e-3': a value that starts with '-' after a space is "
        "read as an option; write --model.init_args.learning_rate=-1e-3 (",
    ),
    "not a number": (
        ["--model.init_args.learning_rate=abc"],
        "model.init_args.learning_rate='abc' is not valid; expected a float",
    ),
}


@pytest.mark.parametrize("case", list(JSONARGPARSE_REFUSALS))
def test_jsonargparse_refusals_are_one_line_with_key_value_and_form(case, capsys):
    from adamergex_pl.cli import main

    extra, message = JSONARGPARSE_REFUSALS[case]
    assert main(["fit", "--config", str(REPO_ROOT / "configs/tiny/task_lora.yaml"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_a_yaml_syntax_error_names_the_file_line_and_column(tmp_path, capsys):
    from adamergex_pl.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  init_args: [\n")
    assert main(["fit", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--config {bad}: not valid YAML at line 3, column 1" in err, err
