"""Helpers of ``test_fault_injection.py``: run a function in a forked child and ``kill -9`` it, at a moment
chosen by an event of the run (:class:`KillAt`) or by time, and the invariants a killed run must leave behind.

A forked child shares the parent's imports (torch, Lightning, the tiny model are loaded once), so a fit,
merge or pipeline in it starts in milliseconds instead of the seconds an ``adamergex`` subprocess needs.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sys
import threading
import time
import traceback
from collections import Counter
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


class KillAt:
    """Counts the events of a fit in this (forked) process and ``kill -9``s it at the chosen one.

    The moment is an event, not a time, so the kill lands where it is meant to on any machine load. Events
    (a *phase* and its 1-based ordinal in the run):

    * ``start-up``: the base model is loaded and the adapter attached (before training);
    * ``step``: the end of an optimizer step (the run's checkpoint of that step, if any, is written);
    * ``validation``: a validation batch (sanity check included);
    * ``checkpoint write`` / ``snapshot write``: the rename that puts a written checkpoint or snapshot in
      place, with ``moment`` ``before`` (the temporary file or folder is whole, the old one still in place) or
      ``after`` it (``last`` not yet re-pointed);
    * ``end``: the end of fit (every snapshot written).

    Args:
        phase: the phase of the kill; ``None`` only counts (see :meth:`save_counts`).
        ordinal: which event of ``phase`` (1 is the first).
        moment: ``before`` or ``after`` the rename, for the write phases; ``at`` for the others.
    """

    PHASES = ("start-up", "step", "validation", "checkpoint write", "snapshot write", "end")
    WRITES = ("checkpoint write", "snapshot write")

    def __init__(self, phase: str | None = None, ordinal: int = 1, moment: str = "at") -> None:
        if phase is not None and phase not in self.PHASES:
            raise ValueError(f"phase={phase!r}; expected one of {', '.join(self.PHASES)}")
        self.target = (phase, ordinal, moment)
        self.counts: Counter[str] = Counter()

    def event(self, phase: str, moment: str = "at") -> None:
        if moment != "after":
            self.counts[phase] += 1
        if self.target == (phase, self.counts[phase], moment):
            kill_self()

    def install(self) -> None:
        """Patch the hooks that report the events (in a forked child only: the patches are never undone)."""
        from adamergex_pl import AdapterModule

        def around(name: str, phase: str, first: bool) -> None:
            real = getattr(AdapterModule, name)

            def hook(module, *args, **kwargs):
                if first:
                    self.event(phase)
                result = real(module, *args, **kwargs)
                if not first:
                    self.event(phase)
                return result

            setattr(AdapterModule, name, hook)

        around("configure_model", "start-up", first=False)
        around("on_train_batch_end", "step", first=False)
        around("validation_step", "validation", first=True)
        around("on_fit_end", "end", first=False)
        replace, rename = os.replace, pathlib.Path.rename

        # AtomicCheckpointIO renames .<name>.ckpt.tmp-* to <name>.ckpt, AdapterSnapshot .tmp-epoch=<N>-* to epoch=<N>
        def checkpoint_replace(src, dst, *args, **kwargs):
            write = ".ckpt.tmp-" in os.path.basename(src)
            if write:
                self.event("checkpoint write", "before")
            replace(src, dst, *args, **kwargs)
            if write:
                self.event("checkpoint write", "after")

        def snapshot_rename(path, target):
            write = path.name.startswith(".tmp-epoch=") and pathlib.Path(target).name.startswith("epoch=")
            if write:
                self.event("snapshot write", "before")
            result = rename(path, target)
            if write:
                self.event("snapshot write", "after")
            return result

        os.replace, pathlib.Path.rename = checkpoint_replace, snapshot_rename

    def save_counts(self, path: Path) -> None:
        """Write how many events of each phase happened (for a run that was not killed)."""
        path.write_text(json.dumps(dict(self.counts)))


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
