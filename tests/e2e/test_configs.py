"""Every YAML under configs/ parses, through the exact command written in its header."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml
from conftest import REPO_ROOT

from adamergex_pl.cli import LIGHTNING_COMMANDS, main

CONFIGS = sorted((REPO_ROOT / "configs").rglob("*.yaml"))


def header_commands(path) -> list[list[str]]:
    """The ``adamergex ...`` commands in the comment header (lines continued with a backslash)."""
    commands, current = [], None
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if current is not None:
            current += " " + text.rstrip("\\").strip()
        elif text.startswith("adamergex "):
            current = text.rstrip("\\").strip()
        if current is not None and not text.endswith("\\"):
            commands.append(shlex.split(re.sub(r"\s+#.*$", "", current))[1:])
            current = None
    return commands


def test_there_are_configs_for_the_tiny_and_the_paper_settings():
    names = {p.relative_to(REPO_ROOT / "configs").as_posix() for p in CONFIGS}
    assert {"tiny/task_lora.yaml", "tiny/task_ia3.yaml", "llama2_7b/reference_wiki_lora.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(REPO_ROOT / "configs").as_posix())
def test_config_parses_through_its_header_command(path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    commands = [c for c in header_commands(path) if str(path.relative_to(REPO_ROOT)) in c]
    assert commands, f"{path} needs a header line with the exact `adamergex ...` command that uses it"
    for command in commands:
        if command[0] == "pipeline":  # parsed, planned and listed without running anything
            if "--dry-run" not in command:
                assert main([*command, "--dry-run"]) == 0, capsys.readouterr().err
                assert "evaluate" in capsys.readouterr().out
            continue
        if command[0] not in LIGHTNING_COMMANDS:
            continue
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--print_config"])
        assert exit_info.value.code in (0, None), capsys.readouterr().err
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["model"]["class_path"].startswith("adamergex_pl.")
        assert printed["data"]["class_path"].startswith("data_modules.")
        if command[0] == "fit":  # resumable after a kill at any moment: a step interval and every epoch end
            callbacks = printed["trainer"]["callbacks"] or []
            every = [
                c["init_args"]["every_n_train_steps"]
                for c in callbacks
                if c["class_path"].endswith("RunCheckpoint")
            ]
            assert every and every[0] >= 1, f"{path}: fit without callbacks.RunCheckpoint"
            assert not any(c["class_path"].endswith(".ModelCheckpoint") for c in callbacks), path
