"""Helpers of ``test_fault_injection.py``: run a function in a forked child and ``kill -9`` it, and the
invariants a killed run must leave behind.

A forked child shares the parent's imports (torch, Lightning, the tiny model are loaded once), so a fit,
merge or pipeline in it starts in milliseconds instead of the seconds an ``adamergex`` subprocess needs.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

KILLED = -signal.SIGKILL


def run_forked(function: Callable[[], int], kill_after: float | None = None, timeout: float = 120) -> int:
    """Run ``function`` in a forked child; return its exit code, or ``KILLED`` when it was killed.

    Args:
        function: returns the child's exit code (an exception is exit code 99, with its traceback).
        kill_after: the child SIGKILLs itself this many seconds after it starts (timed in the child, so the
            fork itself does not count), if it still runs.
        timeout: kill the child and fail after this long.
    """
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 99
        try:
            if kill_after is not None:
                threading.Timer(kill_after, kill_self).start()
            code = int(function() or 0)
        except SystemExit as stop:
            code = int(stop.code or 0)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os._exit(code)
    start = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the child ran longer than {timeout} s")
        time.sleep(0.005)


def timed(function: Callable[[], int], record: Path) -> Callable[[], int]:
    """``function`` that also writes how long it ran to ``record`` (read it with :func:`seconds`)."""

    def child() -> int:
        start = time.monotonic()
        code = function()
        record.write_text(f"{time.monotonic() - start}\n")
        return code

    return child


def seconds(record: Path) -> float:
    return float(record.read_text())


def kill_self() -> None:
    """``kill -9`` of the current process (a forked child)."""
    sys.stdout.flush(), sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def snapshot_weights(root: Path) -> dict[str, dict[str, torch.Tensor]]:
    """``{epoch=N: tensors}`` of every snapshot under ``root``."""
    return {p.name: load_file(p / "adapter_model.safetensors") for p in sorted(root.glob("epoch=*"))}


def check_snapshot_root(root: Path, base) -> list[str]:
    """Every snapshot under ``root`` loads with peft, and ``last`` (if any) points at one of them; returns
    the snapshot names. ``base`` makes a fresh base model."""
    from peft import PeftModel

    if not root.exists():
        return []
    names = sorted(p.name for p in root.glob("epoch=*"))
    for name in names:
        model = PeftModel.from_pretrained(base(), str(root / name)).eval()
        with torch.no_grad():
            assert torch.isfinite(model(input_ids=torch.tensor([[1, 40, 41, 42]])).logits).all(), name
    last = root / "last"
    if last.is_symlink() or last.exists():
        assert last.is_dir() and last.resolve().name in names, f"{last} -> {os.readlink(last)} of {names}"
    return names


def assert_same_weights(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), (what, sorted(a), sorted(b))
    for name in a:
        assert a[name].keys() == b[name].keys(), (what, name)
        for key in a[name]:
            torch.testing.assert_close(
                a[name][key], b[name][key], rtol=0, atol=1e-6, msg=f"{what} {name} {key}"
            )


def leftovers(root: Path) -> list[str]:
    """Hidden temporary files or folders under ``root`` (what an interrupted write leaves)."""
    return sorted(
        str(p.relative_to(root)) for p in root.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name
    )


def small_pipeline(path: Path, **overrides) -> Path:
    """``configs/pipeline/tiny.yaml`` made smaller (one task epoch, 24 reference windows, two methods, one
    ``t``, a checkpoint every 2 steps), with ``overrides`` of its top-level keys, written to ``path``."""
    import yaml

    raw = yaml.safe_load((Path(__file__).parents[1] / "configs/pipeline/tiny.yaml").read_text())
    raw.update(methods=["zero_shot", "adamergex"], scales=[1.0], checkpoint_every_n_train_steps=2)
    raw["task"]["trainer"] = {"max_epochs": 1}
    raw["reference"]["data"]["init_args"]["max_windows"] = 24
    raw["evaluation"]["data"]["init_args"]["max_val_samples"] = 4
    raw["trainer"]["enable_progress_bar"] = False
    raw.update(overrides)
    path.write_text(yaml.safe_dump(raw))
    return path
