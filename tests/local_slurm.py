"""The local SLURM cluster for ``@pytest.mark.slurm`` tests: start or reuse it, and read job states.

The cluster is ``scripts/slurm/start_local_cluster.sh``'s (root only; it installs the Debian packages with
apt if they are missing). A test session uses a running cluster as it is, or starts one and stops it at the
end, unless another test session still uses it (sessions register under
``$ADAMERGEX_SLURM_DIR/users/<pid>``). Without accounting there is no ``sacct``: job results come from
``scontrol show job`` (kept 600 s after the end).

``ADAMERGEX_SLURM_TESTS=0`` skips these tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "scripts" / "slurm"
STATE_DIR = Path(os.environ.get("ADAMERGEX_SLURM_DIR", "/tmp/adamergex-slurm"))
FINISHED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}


def cluster_is_up() -> bool:
    """True when a controller answers and the node accepts jobs."""
    if shutil.which("scontrol") is None or shutil.which("sinfo") is None:
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30, check=False)
    if "UP" not in ping.stdout:
        return False
    states = subprocess.run(
        ["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30, check=False
    )
    return any(s.strip().rstrip("*") in ("idle", "mixed", "allocated") for s in states.stdout.split())


def skip_reason() -> str | None:
    """Why the SLURM tests cannot run here, or ``None`` if a cluster is up or this session can start one."""
    if os.environ.get("ADAMERGEX_SLURM_TESTS", "1") == "0":
        return "SLURM tests disabled by ADAMERGEX_SLURM_TESTS=0"
    if cluster_is_up():
        return None
    if os.geteuid() != 0:
        return (
            "no SLURM cluster is running, and starting one (scripts/slurm/start_local_cluster.sh) needs root"
        )
    if shutil.which("slurmctld") is None and shutil.which("apt-get") is None:
        return "no SLURM cluster running, SLURM is not installed, and there is no apt-get to install it"
    return None


@dataclass
class LocalCluster:
    """A handle on the cluster for one test session; :meth:`release` stops it if this session started it."""

    started: bool
    user_file: Path | None = None

    @classmethod
    def acquire(cls) -> LocalCluster:
        """Use the running cluster or start one; raises ``RuntimeError`` if the start script fails."""
        started = False
        if not cluster_is_up():
            result = subprocess.run(
                [str(SCRIPTS / "start_local_cluster.sh")],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if result.returncode != 0 or not cluster_is_up():
                raise RuntimeError(
                    f"scripts/slurm/start_local_cluster.sh failed (exit {result.returncode}):\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
                )
            started = True
        user_file = None
        if os.geteuid() == 0:
            user_file = STATE_DIR / "users" / str(os.getpid())
            user_file.parent.mkdir(parents=True, exist_ok=True)
            user_file.touch()
        return cls(started=started, user_file=user_file)

    def release(self) -> None:
        """Unregister; stop the cluster if this session started it and no other live session uses it."""
        if self.user_file is not None:
            self.user_file.unlink(missing_ok=True)
        if self.started and not _other_users():
            subprocess.run(
                [str(SCRIPTS / "stop_local_cluster.sh")], capture_output=True, timeout=120, check=False
            )


def _other_users() -> list[int]:
    users = []
    for path in (STATE_DIR / "users").glob("*"):
        if path.name.isdigit() and Path(f"/proc/{path.name}").exists():
            users.append(int(path.name))
        else:
            path.unlink(missing_ok=True)  # a session that died without releasing
    return users


def job_info(job_id: str) -> dict[str, str]:
    """``scontrol show job`` as a dict (``JobState``, ``Restarts``, ``ExitCode``, ``Reason``, ...)."""
    out = subprocess.run(
        ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    info: dict[str, str] = {}
    last = None
    for token in out.split():
        key, sep, value = token.partition("=")
        if sep and key.isalnum():
            info[key] = value
            last = key
        elif last is not None:  # a value with spaces (Command=..., Reason=...)
            info[last] += " " + token
    return info


def wait_for_job(job_id: str, states: set[str] = FINISHED, timeout: float = 50.0) -> dict[str, str]:
    """Poll until the job reaches one of ``states``; return its info (``TimeoutError`` with the info)."""
    deadline = time.monotonic() + timeout
    info = job_info(job_id)
    while info.get("JobState") not in states:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not in {sorted(states)} after {timeout:.0f} s: {info}")
        time.sleep(0.25)
        info = job_info(job_id)
    return info


def wait_for_file(path: Path, timeout: float = 30.0, job_id: str | None = None) -> str:
    """Poll until ``path`` exists; return its text (``TimeoutError`` with the job's state if given)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            state = f": job {job_id} {job_info(job_id)}" if job_id else ""
            raise TimeoutError(f"{path} did not appear within {timeout:.0f} s{state}")
        time.sleep(0.2)
    return path.read_text()


def cancel(job_ids: list[str]) -> None:
    """Cancel jobs that are still pending or running (ignores finished and unknown ones)."""
    if job_ids:
        subprocess.run(["scancel", *job_ids], capture_output=True, timeout=30, check=False)
