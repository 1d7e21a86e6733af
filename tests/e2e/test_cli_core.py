"""The real ``adamergex`` entry point: fit, validate, resume, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO_ROOT, read_metrics_csv, run_adamergex

from adamergex_pl.cli import main

TASK_CONFIGS = {
    "lora": REPO_ROOT / "configs/tiny/task_lora.yaml",
    "ia3": REPO_ROOT / "configs/tiny/task_ia3.yaml",
}
QUIET = ("--trainer.enable_progress_bar", "false")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("adapter_type", "quantization"), [("lora", "none"), ("lora", "nf4"), ("ia3", "none"), ("ia3", "nf4")]
)
def test_fit_then_validate_through_the_cli(tmp_path, adapter_type, quantization):
    config = str(TASK_CONFIGS[adapter_type])
    run_dir = tmp_path / f"runs/tiny/task_{adapter_type}"
    run_adamergex(
        "fit", "--config", config, "--model.init_args.quantization", quantization, *QUIET, cwd=tmp_path
    )

    snapshots = run_dir / "snapshots"
    assert sorted(p.name for p in snapshots.iterdir()) == ["epoch=0", "epoch=1", "last"]
    info = json.loads((snapshots / "last" / "snapshot.json").read_text())
    assert info["config"]["model"]["init_args"]["quantization"] == quantization  # the run's full CLI config
    assert info["epoch"] == 1 and info["global_step"] == 18
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert checkpoint.stat().st_size < 300_000, "checkpoints must be adapter-sized, not model-sized"

    result = run_adamergex(
        "validate", "--config", config, "--model.init_args.quantization", quantization,
        "--model.init_args.adapter_dir", str(snapshots), "--trainer.default_root_dir", str(tmp_path / "val"),
        *QUIET, cwd=tmp_path,
    )  # fmt: skip
    rows = read_metrics_csv(tmp_path / "val")
    metrics = {k: float(v) for row in rows for k, v in row.items() if v and k.startswith("val/")}
    assert set(metrics) == {
        "val/en/loss",
        "val/en/perplexity",
        "val/es/loss",
        "val/es/perplexity",
        "val/loss",
    }
    assert metrics["val/en/loss"] == pytest.approx(info["metrics"]["val/en/loss"], rel=1e-4)
    assert "dataloader_idx" not in result.stdout


@pytest.mark.slow
def test_resume_from_a_mid_epoch_adapter_checkpoint_matches_an_uninterrupted_run(tmp_path):
    overrides = tmp_path / "every_step.yaml"
    overrides.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {dirpath: ckpt, every_n_train_steps: 1, save_top_k: -1, filename: '{step}'}\n"
    )
    common = ("--config", str(TASK_CONFIGS["lora"]), "--config", str(overrides))
    common += ("--model.init_args.quantization", "nf4", *QUIET)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    straight.mkdir(), resumed.mkdir()
    run_adamergex("fit", *common, cwd=straight)
    run_adamergex("fit", *common, "--ckpt_path", str(straight / "ckpt/step=12.ckpt"), cwd=resumed)

    assert not (resumed / "ckpt/step=12.ckpt").exists(), "the resumed run must continue after step 12"
    assert sorted(p.name for p in (resumed / "ckpt").iterdir())[0] == "step=13.ckpt"
    a = torch.load(straight / "ckpt/step=18.ckpt", weights_only=False)
    b = torch.load(resumed / "ckpt/step=18.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 18 and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][key], b["state_dict"][key], rtol=0, atol=1e-6)
    state_a, state_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    for index in state_a:
        assert int(state_a[index]["step"]) == int(state_b[index]["step"]) == 18
        torch.testing.assert_close(
            state_a[index]["exp_avg_sq"], state_b[index]["exp_avg_sq"], rtol=1e-5, atol=1e-9
        )
    assert a["lr_schedulers"][0]["last_epoch"] == b["lr_schedulers"][0]["last_epoch"] == 18


def _cli_error(capsys, *args) -> str:
    """The error message of a refused command: exactly one ``adamergex: error:`` message, exit code 2."""
    assert main(list(args)) == 2
    err = capsys.readouterr().err
    assert err.count("adamergex: error:") == 1, err
    return err[err.index("adamergex: error:") :]


def test_bad_input_stops_before_training_with_one_line_and_no_snapshot(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = ("fit", "--config", str(TASK_CONFIGS["lora"]), *QUIET)

    err = _cli_error(capsys, *config, "--data.init_args.train.path", "data/missing.jsonl")
    assert err.startswith("adamergex: error: data file 'data/missing.jsonl' does not exist")
    err = _cli_error(capsys, *config, "--model.init_args.target_modules", "[q_proj, query]")
    assert "target_modules ['query'] not found in the base model (LlamaForCausalLM)" in err
    err = _cli_error(capsys, *config, "--data.init_args.prompt_template", "{question} =")
    assert "prompt_template='{question} =' names field(s) ['question']" in err
    err = _cli_error(capsys, *config, "--data.init_args.max_length", "3")
    assert "no rows left after dropping the 66 whose prompt alone reaches max_length=3" in err
    err = _cli_error(capsys, *config, "--model.init_args.adapter_type", "prefix")
    assert "model.init_args.adapter_type='prefix' is not valid; expected one of lora, ia3" in err
    err = _cli_error(capsys, *config, "--model.init_args.quantization", "nf8")
    assert "model.init_args.quantization='nf8' is not valid; expected one of nf4, fp4, int8, none" in err
    err = _cli_error(capsys, *config, "--model.init_args.base_model", "./no/such/model")
    assert "base_model='./no/such/model': no such directory" in err
    assert not (tmp_path / "runs/tiny/task_lora/snapshots").exists()
