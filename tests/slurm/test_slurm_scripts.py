"""The local-cluster scripts and the tests' skip rules, without starting a cluster."""

from __future__ import annotations

import os
import shutil
import subprocess

import local_slurm
import pytest

SCRIPTS = local_slurm.SCRIPTS


@pytest.mark.parametrize("name", ["start_local_cluster.sh", "stop_local_cluster.sh"])
def test_scripts_are_valid_bash(name):
    path = SCRIPTS / name
    assert os.access(path, os.X_OK), f"{path} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert "set -euo pipefail" in path.read_text()


def test_start_refuses_without_root():
    cmd = [str(SCRIPTS / "start_local_cluster.sh")]
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("runuser is needed to run the script as another user")
        cmd = ["runuser", "-u", "nobody", "--", "bash", *cmd]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "must run as root" in result.stderr


def test_stop_without_a_cluster_is_a_no_op(tmp_path):
    result = subprocess.run(
        [str(SCRIPTS / "stop_local_cluster.sh")],
        env={**os.environ, "ADAMERGEX_SLURM_DIR": str(tmp_path / "none"), "ADAMERGEX_SLURM_LOCKED": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "stopped" not in result.stdout


def test_skip_reasons(monkeypatch):
    monkeypatch.setattr(local_slurm, "cluster_is_up", lambda: False)
    monkeypatch.setenv("ADAMERGEX_SLURM_TESTS", "0")
    assert local_slurm.skip_reason() == "SLURM tests disabled by ADAMERGEX_SLURM_TESTS=0"
    monkeypatch.delenv("ADAMERGEX_SLURM_TESTS")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in local_slurm.skip_reason()
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "no apt-get" in local_slurm.skip_reason()
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    assert local_slurm.skip_reason() is None
    monkeypatch.setattr(local_slurm, "cluster_is_up", lambda: True)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert local_slurm.skip_reason() is None  # a running cluster is used by anyone
