"""``adamergex pipeline --rehearse``: run a whole recipe end to end in minutes, on a CPU, before a cluster does.

A rehearsal keeps the recipe's shape (every task, language, stage, method, dependency and report) and shrinks
its cost: the base model becomes ``builtin:tiny-llama`` (a 2-layer Llama built locally), every fit trains a
couple of optimizer steps on a few examples, and every evaluation scores a few items per language, on the CPU
in full precision. The data is read as configured, so a rehearsal also checks that every dataset id, config,
split and field loads; offline, point ``ADAMERGEX_DATASET_MIRROR`` at a folder that mirrors the hub (see
:class:`data_modules.sources.DataSource`). Its outputs go to ``<run_dir>/rehearsal`` so they never mix
with the real run's. The numbers it reports are meaningless; that every cell of the table is there is the point.
"""

from __future__ import annotations

import copy
import dataclasses

REHEARSAL_MODEL = "builtin:tiny-llama"
# per DataModule class: the init_args that make it small (only classes of this package are shrunk)
_SHRINK = {
    "TaskDataModule": {
        "max_train_samples": 8,
        "eval_samples": 4,
        "max_length": 96,
        "batch_size": 2,
        "eval_batch_size": 4,
        "max_new_tokens": 8,
        "num_workers": 0,
    },
    "ReferenceLMDataModule": {"max_windows": 4, "window_tokens": 32, "batch_size": 2, "num_workers": 0},
    "InstructionDataModule": {"max_length": 64, "batch_size": 2, "num_workers": 0},
}
_TRAINER = {
    "accelerator": "cpu",
    "devices": 1,
    "precision": "32-true",
    "max_epochs": 1,
    "max_steps": 2,
    "accumulate_grad_batches": 1,
    "limit_val_batches": 1,
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 1,
    "enable_progress_bar": False,
}
_MODEL = {"base_model": REHEARSAL_MODEL, "optimizer": "auto", "dtype": "auto", "compute_dtype": "auto"}


def rehearse(spec):
    """A copy of ``spec`` (a ``PipelineSpec``) shrunk to a rehearsal (see the module docstring)."""
    spec = copy.deepcopy(spec)
    spec.run_dir = f"{spec.run_dir}/rehearsal"
    spec.trainer = {**spec.trainer, **_TRAINER}
    spec.model = {**spec.model, **_MODEL}
    for fit in (spec.reference, *(task.fit for task in spec.tasks.values())):
        fit.data = _shrunk(fit.data)
        fit.trainer = {k: v for k, v in fit.trainer.items() if k not in ("max_epochs", "max_steps")}
    for task in spec.tasks.values():
        task.evaluation = dataclasses.replace(task.evaluation, data=_shrunk(task.evaluation.data))
    return spec


def _shrunk(data: dict) -> dict:
    data = copy.deepcopy(data)
    name = str(data.get("class_path", "")).rsplit(".", 1)[-1]
    init = data.setdefault("init_args", {})
    for key, value in _SHRINK.get(name, {}).items():
        if key == "eval_samples" or key not in init or not isinstance(init[key], int) or init[key] > value:
            init[key] = value
    if name == "TaskDataModule":
        init.pop("pack_sequences", None)
    return data
