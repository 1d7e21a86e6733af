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

from adamergex_pl.errors import InvalidValueError
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

    ``snapshot.json`` records the epoch, global step, the metrics logged so far (``trainer.callback_metrics``),
    the base model, adapter type, task, language, and the run's configuration (the full CLI config when run
    through ``adamergex``, otherwise the module's hyperparameters).

    Args:
        dirpath: where snapshots go. Default: ``<trainer.default_root_dir>/snapshots`` (stable across logger
            versions and requeued jobs).
        keep_last: keep only the newest ``keep_last`` snapshots (``None`` keeps all).
        save_on_fit_end: also snapshot at the end of fit when the last epoch ended early.

    Raises:
        ValueError: ``keep_last`` is not a positive integer.

    Example:
        .. code-block:: yaml

            trainer:
              callbacks:
                - class_path: callbacks.AdapterSnapshot
                  init_args: {dirpath: runs/xnli_en/snapshots, keep_last: 3}
    """

    def __init__(
        self, dirpath: str | None = None, keep_last: int | None = None, save_on_fit_end: bool = True
    ):
        if keep_last is not None and keep_last < 1:
            raise InvalidValueError(
                f"AdapterSnapshot(keep_last={keep_last!r}) must be a positive integer, or None to keep every snapshot"
            )
        self.dirpath = dirpath
        self._dirpath_given = dirpath is not None
        self.keep_last = keep_last
        self.save_on_fit_end = save_on_fit_end
        self.run_config: dict[str, Any] | None = None  # set by the adamergex CLI
        self.last_step: int | None = None
        self.last_epoch: int | None = None
        self._written: list[str] = []  # this fit's snapshots, for the one line at its end

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = os.path.join(trainer.default_root_dir, "snapshots")
        if trainer.is_global_zero and Path(self.dirpath).is_dir():
            for stale in Path(self.dirpath).glob(".tmp-*"):  # left by a run that was killed mid-write
                shutil.rmtree(stale, ignore_errors=True)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.ckpt_path is not None and trainer.is_global_zero:
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
        root.mkdir(parents=True, exist_ok=True)
        target = root / f"epoch={epoch}"
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=root))
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            pl_module.model.save_pretrained(str(tmp))
            info = self._describe(trainer, pl_module, epoch, step)
            (tmp / SNAPSHOT_JSON).write_text(json.dumps(info, indent=2, default=str) + "\n")
            _replace_dir(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _point_last(root, target.name)
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
        for path in dropped:
            shutil.rmtree(path, ignore_errors=True)
        if dropped:
            remaining = list_snapshots(root)
            if remaining:
                _point_last(root, remaining[-1][1].name)
            else:
                (root / LAST_LINK).unlink(missing_ok=True)
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
                shutil.rmtree(path, ignore_errors=True)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"dirpath": self.dirpath, "last_step": self.last_step, "last_epoch": self.last_epoch}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._dirpath_given and state_dict.get("dirpath"):
            self.dirpath = state_dict["dirpath"]  # a resumed run keeps writing where it started
        self.last_step = state_dict.get("last_step")
        self.last_epoch = state_dict.get("last_epoch")


def _point_last(root: Path, name: str) -> None:
    """Atomically make ``<root>/last`` a relative symlink to ``name``."""
    link_tmp = root / f".tmp-{LAST_LINK}"
    link_tmp.unlink(missing_ok=True)
    link_tmp.symlink_to(name)
    os.replace(link_tmp, root / LAST_LINK)


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing an existing ``target`` (a re-run epoch) without a gap."""
    if not target.exists():
        new.rename(target)
        return
    trash = target.with_name(f".tmp-old-{target.name}")
    shutil.rmtree(trash, ignore_errors=True)
    target.rename(trash)
    new.rename(target)
    shutil.rmtree(trash, ignore_errors=True)
