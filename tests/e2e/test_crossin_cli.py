"""End to end through the real `adamergex` entry point: fit on a tiny CrossIn mixture, validate on Cross-MMLU."""

from __future__ import annotations

import json
import math

import pytest
from conftest import REPO_ROOT, read_metrics_csv, run_adamergex

QUIET = ("--trainer.enable_progress_bar", "false")
LANGS = ("en", "zh", "vi", "es")


@pytest.mark.slow
def test_fit_on_a_crossin_mixture_then_validate_on_cross_mmlu(tmp_path):
    run_adamergex("fit", "--config", str(REPO_ROOT / "configs/tiny/crossin_x2x.yaml"), *QUIET, cwd=tmp_path)
    snapshots = tmp_path / "runs/tiny/crossin_x2x/snapshots"
    info = json.loads((snapshots / "last" / "snapshot.json").read_text())
    assert info["global_step"] == 6  # 10 base + 16 en2x + 16 x2en rows, batches of 8
    assert {"val/base/loss", "val/en2x/loss", "val/x2en/loss"} <= set(info["metrics"])
    adapter_config = json.loads((snapshots / "last" / "adapter_config.json").read_text())
    assert sorted(adapter_config["modules_to_save"]) == ["embed_tokens", "lm_head"]
    train_rows = [
        row for row in read_metrics_csv(tmp_path / "runs/tiny/crossin_x2x") if row.get("train/loss")
    ]
    assert len(train_rows) == 6

    result = run_adamergex(
        "validate", "--config", str(REPO_ROOT / "configs/tiny/crossx_validate.yaml"),
        "--model.init_args.adapter_dir", str(snapshots), "--data.init_args.max_items", "8",
        "--trainer.default_root_dir", str(tmp_path / "val"), *QUIET, cwd=tmp_path,
    )  # fmt: skip
    rows = read_metrics_csv(tmp_path / "val")
    metrics = {k: float(v) for row in rows for k, v in row.items() if v and k.startswith("val/")}
    expected = {f"val/cross_mmlu/{lang}/accuracy" for lang in LANGS} | {"val/cross_mmlu/accuracy"}
    expected |= {f"val/cross_mmlu/{name}_{k}" for k in (2, 3, 4) for name in ("consistency", "ac3")}
    assert set(metrics) == expected
    assert all(0.0 <= v <= 1.0 for v in metrics.values())
    for lang in LANGS:  # 8 items per language: accuracies are multiples of 1/8
        assert (8 * metrics[f"val/cross_mmlu/{lang}/accuracy"]) % 1 == pytest.approx(0, abs=1e-9)
    acc, c3 = metrics["val/cross_mmlu/accuracy"], metrics["val/cross_mmlu/consistency_3"]
    assert metrics["val/cross_mmlu/ac3_3"] == pytest.approx(
        2 * acc * c3 / (acc + c3 + 1e-10) if acc + c3 else 0.0
    )
    assert not any(math.isnan(v) for v in metrics.values())
    assert "dataloader_idx" not in result.stdout
