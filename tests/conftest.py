"""Test environment: offline, single-threaded, with every cache in a temporary directory.

The variables are set at import time, before any test imports torch or transformers, and are inherited by
the ``adamergex`` subprocesses that the end-to-end tests start.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import adamergex_pl  # noqa: F401  (portable CPU numerics: set before any test computes with torch)

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="adamergex-tests-"))
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_HOME=str(_SESSION_TMP / "hf_home"),
    ADAMERGEX_CACHE=str(_SESSION_TMP / "adamergex_cache"),
    OMP_NUM_THREADS="1",
    MKL_NUM_THREADS="1",
    TOKENIZERS_PARALLELISM="false",
    TRANSFORMERS_VERBOSITY="error",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    HF_DATASETS_DISABLE_PROGRESS_BARS="1",
    # Lightning warns in every Trainer once `srun` is on PATH (the local SLURM cluster installs it) unless the
    # process runs under srun; the warning says nothing about tests outside SLURM jobs.
    PYTHONWARNINGS="ignore::DeprecationWarning,ignore:The `srun` command is available:UserWarning",
)

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
SHARED = REPO_ROOT.parent / "shared"
ADAMERGEX_BIN = Path(sys.executable).with_name("adamergex")


@pytest.fixture(scope="session")
def tiny_llama_path() -> str:
    """Directory of ``builtin:tiny-llama`` (built once per test session)."""
    from adamergex_pl.assets.builtin import resolve_base_model

    return resolve_base_model("builtin:tiny-llama")


def run_adamergex(
    *args: str, cwd: Path, timeout: float = 300, check: bool = True, launcher: list[str] | None = None
):
    """Run the real ``adamergex`` console script in a subprocess (inherits the offline test environment).

    ``launcher`` replaces the console script by another command that ends in the same ``main`` (e.g.
    ``tests/cpu_kind.py``)."""
    import subprocess

    result = subprocess.run(
        [*(launcher or [str(ADAMERGEX_BIN)]), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"adamergex {' '.join(args)} exited with {result.returncode}\n--- stdout\n{result.stdout[-4000:]}"
            f"\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def read_metrics_csv(root: Path) -> list[dict[str, str]]:
    """Rows of the newest CSVLogger ``metrics.csv`` under ``root``."""
    import csv

    files = sorted(root.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise AssertionError(f"no metrics.csv under {root}")
    with files[-1].open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def clean_requeue_signal(monkeypatch):
    """For tests that arm the requeue signal (``adamergex`` does inside a job): restore the process's SIGUSR1
    and SIGTERM handlers afterwards, forget recorded signals, and hide any SLURM job this test runs in."""
    import signal

    from callbacks import slurm_requeue

    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    saved = {number: signal.getsignal(number) for number in (signal.SIGUSR1, signal.SIGTERM)}
    slurm_requeue.clear()
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)
    slurm_requeue.clear()


@pytest.fixture(scope="session")
def slurm_cluster():
    """The local SLURM cluster (``tests/local_slurm.py``): reused if up, else started; skips if impossible."""
    from local_slurm import LocalCluster, skip_reason

    if (reason := skip_reason()) is not None:
        pytest.skip(reason)
    try:
        cluster = LocalCluster.acquire()
    except RuntimeError as err:
        pytest.fail(str(err))
    yield cluster
    cluster.release()


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder that cannot be written: a read-only tmpfs as root (root ignores permission bits)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)]).returncode:
            pytest.skip("mounting a read-only tmpfs failed (no CAP_SYS_ADMIN)")
        yield folder
        subprocess.run(["umount", str(folder)], check=True)
    else:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
