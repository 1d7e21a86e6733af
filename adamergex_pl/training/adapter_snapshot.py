"""Snapshot the trained adapter in PEFT format at the end of every epoch and at the end of fit."""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from adamergex_pl.errors import InvalidValueError, reraise_os_error
from adamergex_pl.training.snapshot_files import (
    finish_interrupted_writes,
    is_within,
    point_last,
    remove_dir,
    replace_dir,
)
from adamergex_pl.training.snapshots import LAST_LINK, SNAPSHOT_JSON, list_snapshots, read_snapshot_info

log = logging.getLogger(__name__)


class AdapterSnapshot(Callback):
    """Writes ``<dirpath>/epoch=<N>/`` (a PEFT adapter directory plus ``snapshot.json``) and points
    ``<dirpath>/last`` at it.

    A snapshot is written at the end of every training epoch and, if training stopped mid-epoch (e.g. at
    ``max_steps``), at the end of fit; only global rank zero writes. Each snapshot is built in a temporary
    directory and renamed into place, and ``last`` is replaced atomically, so an interrupted run never
    leaves a half-written snapshot. A snapshot loads with ``peft.PeftModel.from_pretrained(base, path)``.

    Across restarts (a requeued SLURM job, ``fit --ckpt_path``): the callback's state comes back with the
    checkpoint, so a run resumed mid-epoch writes that epoch's snapshot once, at its end, and the fit-end
    snapshot is not repeated. Snapshots taken *after* the resumed step (left by a run that went on past the
    checkpoint it is resumed from) belong to a timeline that is being redone: they are removed when training
    starts and ``last`` points at the newest remaining one, so ``last`` never runs ahead of training.

    A run's snapshots are its own: they always go under the *current* run's ``dirpath`` (resuming a checkpoint
    of another run never writes to, nor prunes, that run's snapshots), and a fresh fit (no ``--ckpt_path``)
    into a ``dirpath`` that holds snapshots is refused unless ``overwrite`` is set, so two runs never mix their
    epochs. Removals rename a snapshot away before deleting it, so a kill at any moment leaves only complete
    snapshots and a ``last`` that points at one; the next run finishes what a killed one left.

    ``snapshot.json`` records the epoch, global step, the metrics logged so far (``trainer.callback_metrics``),
    the base model, adapter type, task, language, and the run's configuration (the full CLI config when run
    through ``adamergex``, otherwise the module's hyperparameters).

    Args:
        dirpath: where snapshots go. Default: ``<trainer.default_root_dir>/snapshots`` (stable across logger
            versions and requeued jobs).
        keep_last: keep only the newest ``keep_last`` snapshots (``None`` keeps all).
        save_on_fit_end: also snapshot at the end of fit when the last epoch ended early.
        overwrite: let a fresh fit remove the snapshots of an earlier run in ``dirpath`` instead of refusing.

    Raises:
        ValueError: ``keep_last`` is not a positive integer; a fresh fit into a ``dirpath`` that holds
            snapshots (without ``overwrite``).

    Example:
        .. code-block:: yaml

            trainer:
              callbacks:
                - class_path: callbacks.AdapterSnapshot
                  init_args: {dirpath: runs/xnli_en/snapshots, keep_last: 3}
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
                finish_interrupted_writes(root)
            except Exception as err:
                reraise_os_error(err, "snapshot folder", root)

    def check_fresh_run(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """For a fit that resumes nothing: refuse a ``dirpath`` that holds snapshots, or, with ``overwrite``,
        remove them (the CLI calls this before the trainer starts; :meth:`on_train_start` again).

        Raises:
            ValueError: ``dirpath`` holds snapshots and ``overwrite`` is false, or the module starts from one
                of the snapshots that ``overwrite`` would remove.
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
        check_finite = getattr(pl_module, "check_adapter_finite", None)
        if check_finite is not None:  # an AdapterModule: never a snapshot of a diverged adapter
            check_finite()
        root = Path(self.dirpath)
        target = root / f"epoch={epoch}"
        try:
            root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=root))
        except Exception as err:
            reraise_os_error(err, "snapshot", target)
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private
            pl_module.model.save_pretrained(str(tmp))
            info = self._describe(trainer, pl_module, epoch, step)
            (tmp / SNAPSHOT_JSON).write_text(json.dumps(info, indent=2, default=str) + "\n")
            replace_dir(tmp, target)
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
        # the checkpoint's dirpath is not restored: a run resumed from another run's checkpoint writes (and
        # prunes) its own snapshots, never the other run's
        self.last_step = state_dict.get("last_step")
        self.last_epoch = state_dict.get("last_epoch")
