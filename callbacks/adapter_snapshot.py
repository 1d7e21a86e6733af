"""The on-disk layout of adapter snapshots, and finding the adapter a path names.

Anything that takes an adapter accepts a PEFT adapter directory or an :class:`AdapterSnapshot` root, whose
``last`` link to the newest ``epoch=<N>/`` is then used.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from adamergex_pl.atomic_files import (
    TMP,
    finish_interrupted_writes,
    is_within,
    publish_dir,
    remove_dir,
    staging_dir,
)
from adamergex_pl.errors import InputNotFoundError, InvalidValueError, reraise_os_error

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SNAPSHOT_JSON = "snapshot.json"
LAST_LINK = "last"
SNAPSHOT_NAME = re.compile(r"^epoch=(\d+)$")
_EXPECTED = (
    f"a PEFT adapter directory ({ADAPTER_CONFIG} + {ADAPTER_WEIGHTS}) or an AdapterSnapshot root "
    f"(epoch=<N>/ directories and a '{LAST_LINK}' link to the newest)"
)


def resolve_adapter_dir(path: str | Path, what: str = "adapter path") -> Path:
    """The PEFT adapter directory that ``path`` stands for: itself, or the ``last`` of a snapshot root.

    Args:
        path: A PEFT adapter directory or an ``AdapterSnapshot`` root (its ``last`` link is followed).
        what: How error messages call the path (e.g. ``adapter_dir``).

    Raises:
        FileNotFoundError: ``path`` is missing, a file, lacks adapter files, or has no valid ``last`` link.
        ValueError: ``adapter_config.json`` is not a JSON object, or the safetensors file is damaged.
    """
    root = Path(path).expanduser()
    if not root.exists():
        raise InputNotFoundError(f"{what} {str(path)!r} does not exist; expected {_EXPECTED}")
    if not root.is_dir():
        raise InputNotFoundError(f"{what} {str(path)!r} is a file; expected {_EXPECTED}")
    if (root / ADAPTER_CONFIG).exists():
        return _checked_adapter_dir(root)
    last = root / LAST_LINK
    if last.is_dir():
        return _checked_adapter_dir(last.resolve())
    if last.is_symlink():
        raise InputNotFoundError(
            f"snapshot root {str(path)!r}: '{LAST_LINK}' points to {str(last.readlink())!r}, which does not exist; "
            "pass one of its epoch=<N> directories instead"
        )
    epochs = [p.name for _, p in list_snapshots(root)]
    if epochs:
        raise InputNotFoundError(
            f"snapshot root {str(path)!r} has {len(epochs)} epoch directories but no '{LAST_LINK}' link; "
            f"pass one of them instead, e.g. {str(root / epochs[-1])!r}"
        )
    raise InputNotFoundError(
        f"{what} {str(path)!r} holds neither {ADAPTER_CONFIG} nor a '{LAST_LINK}' link; expected {_EXPECTED}"
    )


def _checked_adapter_dir(directory: Path) -> Path:
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (directory / name).is_file():
            hint = ""
            if name == ADAPTER_WEIGHTS and (directory / "adapter_model.bin").is_file():
                hint = "; it has the pickle adapter_model.bin: re-save it with safe_serialization=True"
            raise InputNotFoundError(f"adapter directory {str(directory)!r} has no {name}{hint}")
    fix = "re-create it (re-run the fit or the merge that wrote it) or pass another adapter"
    try:
        config = json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidValueError(f"{directory / ADAPTER_CONFIG} is not valid JSON ({err}); {fix}") from None
    except OSError as err:
        raise InvalidValueError(
            f"{directory / ADAPTER_CONFIG} cannot be read ({err.strerror}); {fix}"
        ) from None
    if not isinstance(config, dict):
        raise InvalidValueError(
            f"{directory / ADAPTER_CONFIG} holds {type(config).__name__}, not an object; {fix}"
        )
    problem = safetensors_problem(directory / ADAPTER_WEIGHTS)
    if problem is not None:
        raise InvalidValueError(f"adapter weights {str(directory / ADAPTER_WEIGHTS)!r} {problem}; {fix}")
    return directory


def safetensors_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (truncated, or a damaged header), or ``None``.

    Example:
        >>> safetensors_problem(__file__)  # a Python file is no safetensors file
        'is not a safetensors file (its header length exceeds the file)'
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
            if len(head) < 8:
                return f"is truncated ({size} bytes, less than a safetensors header)"
            length = struct.unpack("<Q", head)[0]
            if length > size - 8:
                return "is not a safetensors file (its header length exceeds the file)"
            header = json.loads(handle.read(length).decode("utf-8"))
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "is corrupt (its header is not valid JSON)"
    try:
        ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return "is corrupt (its header does not describe tensors)"
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        return f"is truncated or corrupt ({size} bytes, its header describes {expected})"
    return None


def list_snapshots(root: str | Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of the complete snapshots under ``root``, oldest first."""
    found = []
    root = Path(root)
    if root.is_dir():
        for child in root.iterdir():
            match = SNAPSHOT_NAME.match(child.name)
            if match and child.is_dir() and not child.is_symlink():
                found.append((int(match.group(1)), child))
    return sorted(found)


def read_snapshot_info(adapter_dir: str | Path) -> dict[str, Any]:
    """The ``snapshot.json`` beside an adapter, or ``{}`` for an adapter that has none."""
    info = Path(adapter_dir) / SNAPSHOT_JSON
    return json.loads(info.read_text()) if info.is_file() else {}


def point_last(root: Path, name: str) -> None:
    """Atomically make ``<root>/last`` a relative symlink to ``name``."""
    link_tmp = root / f"{TMP}{LAST_LINK}"
    link_tmp.unlink(missing_ok=True)
    link_tmp.symlink_to(name)
    os.replace(link_tmp, root / LAST_LINK)


def repair_snapshot_root(root: Path) -> list[str]:
    """Finish a killed run's changes to ``root`` (:mod:`adamergex_pl.atomic_files`) and re-point a dangling
    ``last``; return what was done, for the log.

    Raises:
        OSError: ``root`` cannot be changed (read-only, full).
    """
    done = finish_interrupted_writes(root)
    last = root / LAST_LINK
    if last.is_symlink() and not last.exists():
        remaining = list_snapshots(root)
        if remaining:
            point_last(root, remaining[-1][1].name)
        else:
            last.unlink()
        done.append("re-pointed last")
    return done


log = logging.getLogger(__name__)


class AdapterSnapshot(Callback):
    """Writes ``<dirpath>/epoch=<N>/`` (a PEFT adapter plus ``snapshot.json``) at every epoch end and points
    ``<dirpath>/last`` at it; on resume, snapshots past the resumed step are removed.

    Args:
        dirpath: Where snapshots go. Default: ``<trainer.default_root_dir>/snapshots``.
        keep_last: Keep only the newest ``keep_last`` snapshots (``None`` keeps all).
        save_on_fit_end: Also snapshot at the end of fit when the last epoch ended early.
        overwrite: Let a fresh fit remove the snapshots of an earlier run in ``dirpath`` instead of refusing.

    Raises:
        ValueError: ``keep_last`` is not positive; a fresh fit into a ``dirpath`` with snapshots (no ``overwrite``).

    Example:
        .. code-block:: yaml

            trainer:
              callbacks: [{class_path: callbacks.AdapterSnapshot, init_args: {keep_last: 3}}]
    """

    def __init__(
        self,
        dirpath: str | None = None,
        keep_last: int | None = None,
        save_on_fit_end: bool = True,
        overwrite: bool = False,
    ):
        if keep_last is not None and keep_last < 1:
            raise InvalidValueError(
                f"AdapterSnapshot(keep_last={keep_last!r}) must be a positive integer, or None to keep every snapshot"
            )
        self.dirpath = dirpath
        self.keep_last = keep_last
        self.save_on_fit_end = save_on_fit_end
        self.overwrite = overwrite
        self.run_config: dict[str, Any] | None = None  # set by the adamergex CLI
        self.last_step: int | None = None
        self.last_epoch: int | None = None
        self._written: list[str] = []  # this fit's snapshots, for the one line at its end

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "snapshots")
        root = Path(self.dirpath)
        if not trainer.is_global_zero or stage != "fit":
            return
        if root.exists() and not root.is_dir():
            raise InvalidValueError(
                f"AdapterSnapshot dirpath {str(root)!r} is a file; choose another --trainer.default_root_dir"
            )
        if root.is_dir():
            try:
                repair_snapshot_root(root)
            except Exception as err:
                reraise_os_error(err, "snapshot folder", root)

    def check_fresh_run(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """For a fit that resumes nothing: refuse a ``dirpath`` with snapshots, or remove them with ``overwrite``.

        Raises:
            ValueError: Snapshots without ``overwrite``, or the module starts from one ``overwrite`` would remove.
        """
        root = Path(self.dirpath or os.path.join(trainer.default_root_dir, "snapshots"))
        names = [path.name for _, path in list_snapshots(root)]
        if not names:
            return
        if not self.overwrite:
            raise InvalidValueError(
                f"{root} already holds the snapshots of a run ({', '.join(names)}); resume it with --ckpt_path "
                "last, remove that run's folder, choose another --trainer.default_root_dir, or set overwrite: "
                "true on callbacks.AdapterSnapshot to start over"
            )
        for option in ("adapter_dir", "stack_on"):
            start = getattr(pl_module, option, None)
            if start and is_within(Path(start).resolve(), root.resolve()):
                raise InvalidValueError(
                    f"{option}={start!r} is one of the snapshots in {root} that overwrite: true would remove "
                    "before it is loaded; copy it elsewhere or write this fit to another --trainer.default_root_dir"
                )
        if not trainer.is_global_zero:
            return
        try:
            (root / LAST_LINK).unlink(missing_ok=True)
            for name in names:
                remove_dir(root / name)
        except Exception as err:
            reraise_os_error(err, "snapshot folder", root)
        rank_zero_info(
            f"AdapterSnapshot: removed the snapshots of an earlier run in {root}: {', '.join(names)}"
        )

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # here, not in setup: only now does the trainer know whether it resumed from a checkpoint
        if not trainer.is_global_zero:
            return
        if trainer.ckpt_path is None:
            self.check_fresh_run(trainer, pl_module)
        else:
            self._drop_snapshots_after(Path(self.dirpath), trainer.global_step)

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._snapshot(trainer, pl_module)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.save_on_fit_end and trainer.global_step != self.last_step and trainer.global_step > 0:
            self._snapshot(trainer, pl_module)
        if self._written and trainer.is_global_zero:  # one line per fit, not one per epoch
            names = (
                self._written[0] if len(self._written) == 1 else f"{self._written[0]} … {self._written[-1]}"
            )
            rank_zero_info(
                f"AdapterSnapshot: wrote {len(self._written)} snapshot(s) to {self.dirpath} ({names}); "
                f"last -> {self._written[-1]}"
            )
        self._written = []

    def _snapshot(self, trainer: Trainer, pl_module: LightningModule) -> None:
        epoch, step = trainer.current_epoch, trainer.global_step
        self.last_step, self.last_epoch = step, epoch
        if not trainer.is_global_zero:
            return
        root = Path(self.dirpath)
        target = root / f"epoch={epoch}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = staging_dir(target)
        except Exception as err:
            reraise_os_error(err, "snapshot", target)
        try:
            pl_module.model.save_pretrained(str(tmp))
            info = self._describe(trainer, pl_module, epoch, step)
            (tmp / SNAPSHOT_JSON).write_text(json.dumps(info, indent=2, default=str) + "\n")
            publish_dir(tmp, target)
            point_last(root, target.name)
        except Exception as err:
            reraise_os_error(err, "snapshot", target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._prune(root, keep=target)
        self._written.append(target.name)
        log.debug("AdapterSnapshot: wrote %s (epoch %s, step %s)", target, epoch, step)

    def _drop_snapshots_after(self, root: Path, step: int) -> None:
        """Remove snapshots of a global step beyond ``step`` (the resumed one) and re-point ``last``."""
        dropped = [
            path
            for _, path in list_snapshots(root)
            if int(read_snapshot_info(path).get("global_step", -1)) > step
        ]
        if dropped:
            remaining = [path for _, path in list_snapshots(root) if path not in dropped]
            if remaining:  # re-point `last` first: it never dangles, whenever the run is killed
                point_last(root, remaining[-1].name)
            else:
                (root / LAST_LINK).unlink(missing_ok=True)
            for path in dropped:
                remove_dir(path)
            names = ", ".join(path.name for path in dropped)
            rank_zero_info(
                f"AdapterSnapshot: removed {names} under {root}: newer than the resumed step {step}"
            )

    def _describe(
        self, trainer: Trainer, pl_module: LightningModule, epoch: int, step: int
    ) -> dict[str, Any]:
        hparams = dict(pl_module.hparams)
        metrics = {
            k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1
        }
        return {
            "epoch": epoch,
            "global_step": step,
            "metrics": metrics,
            "base_model": hparams.get("base_model"),
            "adapter_type": hparams.get("adapter_type"),
            "quantization": hparams.get("quantization"),
            "task": hparams.get("task"),
            "language": hparams.get("language"),
            "config": self.run_config if self.run_config is not None else {"model": hparams},
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }

    def _prune(self, root: Path, keep: Path) -> None:
        if self.keep_last is None:
            return
        snapshots = [path for _, path in list_snapshots(root)]
        for path in snapshots[: max(0, len(snapshots) - self.keep_last)]:
            if path != keep:
                remove_dir(path)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"dirpath": self.dirpath, "last_step": self.last_step, "last_epoch": self.last_epoch}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # the dirpath is not restored: a run resumed from another run's checkpoint never touches its snapshots
        self.last_step = state_dict.get("last_step")
        self.last_epoch = state_dict.get("last_epoch")
