"""The task suite through the real ``adamergex`` entry point on the tiny model and the shipped fixtures."""

from __future__ import annotations

import math

import pytest
from conftest import REPO_ROOT, read_metrics_csv, run_adamergex

QUIET = ("--trainer.enable_progress_bar", "false")
TASKS = {  # task: (fixture languages, metric names)
    "xnli": (["de", "zh"], ["accuracy"]),
    "xcopa": (["tr", "zh"], ["accuracy"]),
    "pawsx": (["de", "zh"], ["accuracy"]),
    "mgsm": (["de", "zh"], ["accuracy", "no_number_rate"]),
    "xquad": (["de", "zh"], ["exact_match", "f1"]),
    "xlsum": (["es", "zh"], ["rouge_l_f1", "rouge_l_precision", "rouge_l_recall"]),
}


def logged(root) -> dict[str, float]:
    rows = read_metrics_csv(root)
    return {k: float(v) for row in rows for k, v in row.items() if v and k.startswith(("val/", "train/"))}


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(TASKS))
def test_validate_logs_per_language_metrics_and_prints_a_table(tmp_path, task):
    languages, names = TASKS[task]
    config = str(REPO_ROOT / f"configs/tiny/{task}.yaml")
    result = run_adamergex("validate", "--config", config, *QUIET, cwd=tmp_path)

    metrics = logged(tmp_path / f"runs/tiny/{task}")
    expected = {f"val/{task}/{lang}/{name}" for lang in languages for name in names}
    expected |= {f"val/{task}/{name}" for name in names}  # macro averages over the languages
    assert set(metrics) == expected
    assert all(0.0 <= value <= 1.0 for value in metrics.values()), metrics
    for name in names:
        mean = sum(metrics[f"val/{task}/{lang}/{name}"] for lang in languages) / len(languages)
        assert math.isclose(metrics[f"val/{task}/{name}"], mean, rel_tol=1e-6, abs_tol=1e-7)

    assert result.stdout.count("Validation results by language") == 1  # one table, on stdout
    table = result.stdout[result.stdout.index("Validation results by language") :].splitlines()
    assert table[1].split() == ["language", *(f"{task}/{name}" for name in names)]
    assert [line.split()[0] for line in table[3 : 3 + len(languages) + 1]] == [*sorted(languages), "mean"]
    assert "dataloader_idx" not in result.stdout


@pytest.mark.slow
def test_fit_trains_on_the_english_file_and_validates_by_generation(tmp_path):
    config = str(REPO_ROOT / "configs/tiny/mgsm.yaml")
    result = run_adamergex("fit", "--config", config, *QUIET, cwd=tmp_path)
    metrics = logged(tmp_path / "runs/tiny/mgsm")
    assert "train/loss" in metrics and math.isfinite(metrics["train/loss"])
    assert {"val/mgsm/de/accuracy", "val/mgsm/zh/accuracy", "val/mgsm/accuracy"} <= set(metrics)
    # fit ends with its last validation's table (once), not with one per validation epoch
    assert result.stdout.count("Validation results by language") == 1
    summary = result.stdout[result.stdout.index("Validation results by language (last validation of fit") :]
    assert summary.splitlines()[1].split() == ["language", "mgsm/accuracy", "mgsm/no_number_rate"]
