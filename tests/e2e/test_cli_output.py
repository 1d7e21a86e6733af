"""What ``adamergex`` prints: quiet by default (``--verbose`` brings it all back), a summary at the end of fit,
one snapshot line per fit, and help that describes every command and the module's arguments."""

from __future__ import annotations

import os

import pytest
from conftest import ADAMERGEX_BIN, REPO_ROOT

from adamergex_pl import quiet
from adamergex_pl.cli import COMMAND_HELP, EXTRA_COMMANDS, LIGHTNING_COMMANDS, main

NOISE = {  # what each filter removes, as it appears on the console
    "bitsandbytes kernels": "Failed to load CPU gemm_4bit_forward",
    "gradient checkpointing": "`is_gradient_checkpointing` is deprecated",
    "stray source line": "warnings.warn(",
    "LeafSpec": "LeafSpec",
    "litmodels tip": "litmodels",
    "litlogger tip": "litlogger",
    "srun hint": "The `srun` command is available",
}
# A tiny fit whose only checkpoint callback is Lightning's default one, so that Lightning prints its tips.
ONE_EPOCH = "trainer:\n  max_epochs: 1\n  callbacks:\n    - class_path: callbacks.AdapterSnapshot\n"


def test_the_cli_applies_exactly_the_test_suites_warning_filters():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert tuple(pyproject["tool"]["pytest"]["ini_options"]["filterwarnings"]) == quiet.WARNING_FILTERS


def _fit(tmp_path, *flags: str):
    import subprocess

    (tmp_path / "one_epoch.yaml").write_text(ONE_EPOCH)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", quiet.VERBOSE_ENV)}
    args = [str(ADAMERGEX_BIN), *flags, "fit", "--config", str(REPO_ROOT / "configs/tiny/task_lora.yaml")]
    args += ["--config", "one_epoch.yaml", "--trainer.enable_progress_bar", "false"]
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_a_tiny_fit_prints_no_noise_and_verbose_brings_it_back(tmp_path):
    (tmp_path / "quiet").mkdir()
    quiet_run = _fit(tmp_path / "quiet")
    output = quiet_run.stdout + quiet_run.stderr
    assert {name for name, line in NOISE.items() if line in output} == set(), output[-3000:]
    assert quiet_run.stderr.count("AdapterSnapshot: wrote") == 1  # one line per fit, not per epoch
    summary = quiet_run.stdout[quiet_run.stdout.index("Validation results by language (last validation") :]
    assert [line.split()[0] for line in summary.splitlines()[3:6]] == ["en", "es", "mean"]

    (tmp_path / "verbose").mkdir()
    verbose_run = _fit(tmp_path / "verbose", "--verbose")
    output = verbose_run.stdout + verbose_run.stderr
    # the srun hint needs SLURM installed; every other notice is printed by this fit
    shown = {name for name, line in NOISE.items() if line in output}
    assert shown >= set(NOISE) - {"srun hint"}, sorted(set(NOISE) - shown)


def test_help_describes_every_command_in_a_line(capsys):
    assert main(["--help"]) == 0
    usage = capsys.readouterr().out
    assert set(COMMAND_HELP) == set(EXTRA_COMMANDS) | set(LIGHTNING_COMMANDS)
    for name, line in COMMAND_HELP.items():
        assert f"  {name}" in usage and line in usage, name
    assert "--verbose" in usage


@pytest.mark.slow
def test_fit_help_lists_the_adapter_modules_arguments_with_their_docstrings(capsys):
    assert main(["fit", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--trainer.max_epochs" in text  # Lightning's own help comes first
    after = text[text.index("The arguments of adamergex_pl.AdapterModule") :]
    for argument, doc in (("--model.lora_r", "LoRA rank"), ("--model.quantization", "storage of the frozen")):
        assert argument in after and doc in after, argument
    assert "--model.help adamergex_pl.MergeModule" in after
