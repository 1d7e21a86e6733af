"""What adapter a checkpoint holds, and refusing to resume one into a model that trains another.

An ``AdapterModule`` checkpoint records its adapter's *signature* (type, LoRA rank, adapted modules); resuming
checks it against the configured model, so a LoRA checkpoint never trains on as (IA)³, nor rank 8 as rank 4.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from typing_extensions import override

from adamergex_pl.atomic_files import finish_interrupted_writes, write_atomic
from adamergex_pl.errors import InputNotFoundError, InvalidValueError, reraise_os_error

# "...layers.0.self_attn.q_proj.lora_A.default.weight" -> q_proj; "...mlp.down_proj.ia3_l.default" -> down_proj
_ADAPTED = re.compile(r"(?:^|\.)([^.]+)\.(lora_A|lora_B|ia3_l)(?:\.|$)")


def adapter_signature(adapter_type: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``{"adapter_type", "rank", "target_modules"}`` of the adapter tensors in ``state_dict`` (others ignored).

    Example:
        >>> import torch
        >>> adapter_signature("lora", {"m.layers.0.q_proj.lora_A.default.weight": torch.zeros(4, 8)})
        {'adapter_type': 'lora', 'rank': 4, 'target_modules': ['q_proj']}
    """
    modules, ranks = set(), set()
    for key, tensor in state_dict.items():
        match = _ADAPTED.search(key)
        if match is None:
            continue
        modules.add(match.group(1))
        if match.group(2) == "lora_A":
            ranks.add(int(tensor.shape[0]))
    rank = sorted(ranks)[0] if len(ranks) == 1 else (sorted(ranks) or None)
    return {"adapter_type": adapter_type, "rank": rank, "target_modules": sorted(modules)}


def describe_signature(signature: Mapping[str, Any]) -> str:
    """``"a lora adapter of rank 8 on k_proj, q_proj"``, for messages."""
    kind = str(signature.get("adapter_type"))
    rank = f" of rank {signature['rank']}" if signature.get("rank") is not None else ""
    modules = ", ".join(signature.get("target_modules") or []) or "no modules"
    return f"{'an' if kind[:1] in 'aeiou' else 'a'} {kind} adapter{rank} on {modules}"


def check_checkpoint_fits(
    checkpoint: Mapping[str, Any],
    adapter_type: str,
    own_state: Mapping[str, Any],
    adapter_keys: set[str],
    where: str = "the checkpoint",
) -> None:
    """Refuse a checkpoint whose adapter is not the one this model trains.

    Raises:
        ValueError: Another adapter type, rank, target modules, tensors, or tensor shapes (naming both).
    """
    state = checkpoint.get("state_dict", {})
    ours = adapter_signature(adapter_type, {k: v for k, v in own_state.items() if k in adapter_keys})
    theirs = (checkpoint.get("adamergex") or {}).get("adapter")
    if theirs is not None and dict(theirs) != ours:
        raise InvalidValueError(
            f"{where} holds {describe_signature(theirs)}, but this config trains {describe_signature(ours)}; "
            "resume with the adapter_type, lora_r and target_modules that wrote the checkpoint, or start a "
            "fresh fit without --ckpt_path"
        )
    found = set(state)
    if found != adapter_keys:
        missing, unexpected = sorted(adapter_keys - found), sorted(found - adapter_keys)
        raise InvalidValueError(
            f"the checkpoint's adapter does not match this model's: {len(missing)} adapter tensors missing "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}); resume with the "
            "same adapter_type, target_modules and rank that wrote the checkpoint"
        )
    wrong = [k for k in sorted(adapter_keys) if tuple(state[k].shape) != tuple(own_state[k].shape)]
    if wrong:
        key = wrong[0]
        raise InvalidValueError(
            f"{where}: {len(wrong)} adapter tensors have other shapes than this model's (e.g. {key}: "
            f"{tuple(state[key].shape)} in the checkpoint, {tuple(own_state[key].shape)} here); resume with the "
            "base model, lora_r and target_modules that wrote the checkpoint"
        )


_FIX = "resume from another checkpoint (e.g. an hpc_ckpt_<n>.ckpt) or start the fit again without --ckpt_path"


def checkpoint_problem(path: str | os.PathLike[str], *, thorough: bool = False) -> str | None:
    """Why ``path`` cannot be a checkpoint, or ``None`` when it looks whole.

    ``thorough`` also checks every member's CRC; by default only the zip directory (at the end) is read.

    Example:
        >>> checkpoint_problem("no/such.ckpt")
        'it does not exist'
    """
    file = Path(path)
    if not file.exists():
        return "it does not exist"
    if file.is_dir():
        return "it is a directory, not a checkpoint file"
    if file.stat().st_size == 0:
        return "it is empty (0 bytes)"
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
            if not any(name.endswith("data.pkl") for name in names):
                return "it is a zip file but not a torch checkpoint (no data.pkl)"
            bad = archive.testzip() if thorough else None
    except zipfile.BadZipFile as err:
        return f"it is truncated or not a checkpoint ({err})"
    except OSError as err:
        return f"it cannot be read ({err.strerror or err})"
    if bad is not None:
        return f"it is corrupt (member {bad} fails its checksum)"
    return None


def check_checkpoint(path: str | os.PathLike[str], what: str = "--ckpt_path") -> Path:
    """``path`` if it is a whole checkpoint file, else a one-line error.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` is a directory, empty, truncated or corrupt.
    """
    problem = checkpoint_problem(path)
    if problem == "it does not exist":
        raise InputNotFoundError(
            f"{what} {str(path)!r} does not exist; give an existing checkpoint, 'last' (the newest of this "
            "run), or no --ckpt_path to start a fresh fit"
        )
    if problem is not None:
        raise InvalidValueError(f"{what} {str(path)!r} cannot be loaded: {problem}; {_FIX}")
    return Path(path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose writes are atomic and whose bad reads are one line.

    Example:
        ``Trainer(plugins=[AtomicCheckpointIO()])``; ``AdapterModule`` installs it by itself.
    """

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None:
            raise InvalidValueError(
                f"AtomicCheckpointIO does not take storage_options (got {storage_options!r}); drop them"
            )
        target = Path(path)
        buffer = io.BytesIO()  # serialised first: a full disk is then a plain OSError of the write below
        torch.save(checkpoint, buffer)
        try:
            write_atomic(target, buffer.getbuffer(), durable=True)
        except BaseException as err:
            reraise_os_error(err, "checkpoint", target)

    @override
    def load_checkpoint(self, path: Any, map_location: Any = lambda storage, loc: storage, weights_only=None):
        check_checkpoint(path)
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except Exception as err:
            problem = checkpoint_problem(path, thorough=True)
            if problem is None:
                raise  # a whole file that fails to load: not the user's input, keep the traceback
            raise InvalidValueError(f"checkpoint {str(path)!r} cannot be loaded: {problem}; {_FIX}") from err


def install(strategy) -> None:
    """Route ``strategy``'s checkpoint I/O through :class:`AtomicCheckpointIO` unless another plugin is set."""
    if type(strategy.checkpoint_io) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


LAST_CHECKPOINT = "last.ckpt"


class RunCheckpoint(ModelCheckpoint):
    """Writes ``<dirpath>/last.ckpt`` atomically every ``every_n_train_steps`` optimizer steps, at every epoch
    end and at the end of fit, so that a fit killed at any moment resumes with ``--ckpt_path last``.

    Args:
        dirpath: Where ``last.ckpt`` goes. Default: ``<trainer.default_root_dir>/checkpoints``.
        every_n_train_steps: Optimizer steps between checkpoints (besides every epoch end).
        overwrite: Let a fresh fit remove the checkpoints of an earlier run in ``dirpath`` instead of refusing.

    Raises:
        ValueError: A bad step count; a fresh fit over checkpoints; ``--ckpt_path last`` without ``last.ckpt``.

    Example:
        .. code-block:: yaml

            trainer:
              callbacks: [{class_path: callbacks.RunCheckpoint, init_args: {every_n_train_steps: 500}}]
    """

    def __init__(
        self, dirpath: str | None = None, every_n_train_steps: int = 50, overwrite: bool = False
    ) -> None:
        if isinstance(every_n_train_steps, bool) or not isinstance(every_n_train_steps, int):
            raise InvalidValueError(
                f"RunCheckpoint(every_n_train_steps={every_n_train_steps!r}) must be a positive integer, e.g. 50"
            )
        if every_n_train_steps < 1:
            raise InvalidValueError(
                f"RunCheckpoint(every_n_train_steps={every_n_train_steps}) must be a positive integer, e.g. 50: "
                "a run that checkpoints only at the end of fit cannot resume after a kill"
            )
        super().__init__(
            dirpath=dirpath,
            save_last=True,
            save_top_k=0,
            every_n_train_steps=every_n_train_steps,
            enable_version_counter=False,  # always last.ckpt, never last-v1.ckpt beside a stale one
        )
        self.overwrite = overwrite

    def run_dirpath(self, trainer: Trainer) -> Path:
        """The folder of this run's checkpoints (also before :meth:`setup`, to resolve ``--ckpt_path last``)."""
        return Path(self.dirpath or os.path.realpath(os.path.join(trainer.default_root_dir, "checkpoints")))

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self.dirpath = str(self.run_dirpath(trainer))
        super().setup(trainer, pl_module, stage)
        if stage != "fit" or not trainer.is_global_zero:
            return
        directory = Path(self.dirpath)
        if directory.exists() and not directory.is_dir():
            raise InvalidValueError(
                f"RunCheckpoint folder {str(directory)!r} is a file; choose another --trainer.default_root_dir"
            )
        try:
            finish_interrupted_writes(directory)  # temporary files of writes that were killed
        except Exception as err:
            reraise_os_error(err, "checkpoint folder", directory)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # here, not in setup: only now does the trainer know whether it resumed from a checkpoint
        if trainer.is_global_zero and trainer.ckpt_path is None:
            self.check_fresh_run(trainer, pl_module)

    def check_fresh_run(self, trainer: Trainer, pl_module: LightningModule | None = None) -> None:
        """For a fit that resumes nothing: refuse a folder with checkpoints, or remove them with ``overwrite``.

        Raises:
            ValueError: The folder holds checkpoints and ``overwrite`` is false.
        """
        directory = self.run_dirpath(trainer)
        earlier = sorted(path.name for path in directory.glob("*.ckpt")) if directory.is_dir() else []
        if not earlier:
            return
        if not self.overwrite:
            shown = ", ".join(earlier[:3]) + (f" and {len(earlier) - 3} more" if len(earlier) > 3 else "")
            raise InvalidValueError(
                f"{directory} already holds the checkpoints of a run ({shown}); resume it with --ckpt_path last, "
                "remove that run's folder, choose another --trainer.default_root_dir, or set overwrite: true on "
                "callbacks.RunCheckpoint to start over"
            )
        if not trainer.is_global_zero:
            return
        try:
            for name in earlier:
                (directory / name).unlink(missing_ok=True)
        except Exception as err:
            reraise_os_error(err, "checkpoint folder", directory)
        rank_zero_info(
            f"RunCheckpoint: removed {len(earlier)} checkpoint(s) of an earlier run in {directory}"
        )

    @override
    def _find_last_checkpoints(self, trainer: Trainer) -> set[str]:
        # only called to resolve --ckpt_path last: refuse instead of Lightning's warning and a silent restart
        last = self.run_dirpath(trainer) / LAST_CHECKPOINT
        if not last.is_file():
            raise InputNotFoundError(
                f"--ckpt_path last: there is no {last}, so this run has no checkpoint to resume from; start "
                "it without --ckpt_path, or give a checkpoint file"
            )
        return {str(last)}

    def _may_save(self, trainer: Trainer) -> bool:
        return (
            not trainer.fast_dev_run
            and trainer.state.fn == TrainerFn.FITTING
            and not trainer.sanity_checking
            and trainer.global_step > 0
        )

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after validation and the snapshot, even if a step checkpoint was written at this step before them
        if self._may_save(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        return  # the epoch end and the step interval cover every save; nothing is monitored

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # a fit stopped mid-epoch (max_steps, a stop request) checkpoints its final step too
        if self._may_save(trainer) and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
