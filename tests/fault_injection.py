"""Helpers of ``test_fault_injection.py``: run a function in a forked child and ``kill -9`` it, at a moment
chosen by an event of the run (:class:`KillAt`), and the invariants a killed run must leave behind.

A forked child shares the parent's imports (torch, Lightning, the tiny model are loaded once), so a fit,
merge or pipeline in it starts in milliseconds instead of the seconds an ``adamergex`` subprocess needs.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

KILLED = -signal.SIGKILL


def run_forked(function: Callable[[], int], timeout: float = 120) -> int:
    """Run ``function`` in a forked child; return its exit code, or ``KILLED`` when it was killed.

    Args:
        function: returns the child's exit code (an exception is exit code 99, with its traceback).
        timeout: kill the child and fail after this long.
    """
    sys.stdout.flush(), sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 99
        try:
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


def with_events(function: Callable[[], int], kill: KillAt, counts: Path | None = None) -> Callable[[], int]:
    """``function`` run with ``kill``'s events reported (for :func:`run_forked`); a run that ends writes their
    counts to ``counts``."""

    def child() -> int:
        kill.install()
        code = function()
        if counts is not None:
            kill.save_counts(counts)
        return code

    return child


def read_counts(path: Path) -> dict[str, int]:
    return json.loads(path.read_text())


def kill_self() -> None:
    """``kill -9`` of the current process (a forked child)."""
    sys.stdout.flush(), sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt:
    """Counts the events of a fit, merge or pipeline in this (forked) process and ``kill -9``s it at the chosen
    one.

    The moment is an event, not a time, so the kill lands where it is meant to on any machine load. Events
    (a *phase* and its 1-based ordinal in the run):

    * ``start-up``: an ``AdapterModule``'s base model is loaded and its adapter attached (before training);
    * ``step``: the end of an optimizer step (the run's checkpoint of that step, if any, is written);
    * ``validation``: an ``AdapterModule``'s validation batch (sanity check included);
    * ``checkpoint write`` / ``snapshot write``: the rename that puts a written checkpoint or snapshot in
      place, ``before`` it (the temporary file or folder is whole, the old one still in place) or ``after``
      it (``last`` not yet re-pointed);
    * ``end``: the end of a fit (every snapshot written);
    * ``adapter load``: an adapter read by a merge (``AdapterWeights.load``);
    * ``merged write``: a merged adapter's weights written to its staging folder;
    * ``rename``: any other rename of a folder (a merge's output moved aside or into place), ``before`` or
      ``after`` it.

    Args:
        phase: the phase of the kill; ``None`` only counts (see :meth:`save_counts`).
        ordinal: which event of ``phase`` (1 is the first).
        moment: ``before`` or ``after`` the rename, for the rename phases; ``at`` for the others.
    """

    FIT_PHASES = ("start-up", "step", "validation", "checkpoint write", "snapshot write", "end")
    MERGE_PHASES = ("adapter load", "merged write", "rename")
    RENAMES = ("checkpoint write", "snapshot write", "rename")

    def __init__(self, phase: str | None = None, ordinal: int = 1, moment: str = "at") -> None:
        if phase is not None and phase not in self.FIT_PHASES + self.MERGE_PHASES:
            raise ValueError(
                f"phase={phase!r}; expected one of {', '.join(self.FIT_PHASES + self.MERGE_PHASES)}"
            )
        self.target = (phase, ordinal, moment)
        self.counts: Counter[str] = Counter()

    def event(self, phase: str, moment: str = "at") -> None:
        if moment != "after":
            self.counts[phase] += 1
        if self.target == (phase, self.counts[phase], moment):
            kill_self()

    def install(self) -> None:
        """Patch the functions that report the events (in a forked child only: the patches are never undone)."""
        from adamergex_pl import AdapterModule
        from adamergex_pl.merging.adapters import AdapterWeights

        def around(owner, name: str, phase: str, first: bool = False) -> None:
            real = getattr(owner, name)  # a function, or a classmethod bound to ``owner``

            def hook(*args, **kwargs):
                if first:
                    self.event(phase)
                result = real(*args, **kwargs)
                if not first:
                    self.event(phase)
                return result

            setattr(owner, name, hook)

        around(AdapterModule, "configure_model", "start-up")
        around(AdapterModule, "on_train_batch_end", "step")
        around(AdapterModule, "validation_step", "validation", first=True)
        around(AdapterModule, "on_fit_end", "end")
        around(AdapterWeights, "load", "adapter load")
        around(AdapterWeights, "save", "merged write")
        replace, rename = os.replace, pathlib.Path.rename

        # atomic_files renames a checkpoint's .tmp-<name>.ckpt.* over <name>.ckpt, a snapshot's staging folder
        # .tmp-epoch=<N>-* to epoch=<N>
        def checkpoint_replace(src, dst, *args, **kwargs):
            phase = "checkpoint write" if os.fspath(dst).endswith(".ckpt") else None
            if phase:
                self.event(phase, "before")
            replace(src, dst, *args, **kwargs)
            if phase:
                self.event(phase, "after")

        def folder_rename(path, target):
            snapshot = path.name.startswith(".tmp-epoch=") and pathlib.Path(target).name.startswith("epoch=")
            phase = "snapshot write" if snapshot else "rename" if path.is_dir() else None
            if phase:
                self.event(phase, "before")
            result = rename(path, target)
            if phase:
                self.event(phase, "after")
            return result

        os.replace, pathlib.Path.rename = checkpoint_replace, folder_rename

    def save_counts(self, path: Path) -> None:
        """Write how many events of each phase happened (for a run that was not killed)."""
        path.write_text(json.dumps(dict(self.counts)))

    @classmethod
    def chosen(cls, rng, counts: dict[str, int], phase: str) -> KillAt:
        """A random event of ``phase`` (``rng``: a seeded ``random.Random``) among ``counts``, the events of an
        uninterrupted run, at a random moment of it."""
        moment = rng.choice(["before", "after"]) if phase in cls.RENAMES else "at"
        return cls(phase, rng.randint(1, counts[phase]), moment)

    def __str__(self) -> str:
        phase, ordinal, moment = self.target
        return f"{'' if moment == 'at' else moment + ' '}{phase} {ordinal}"


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
