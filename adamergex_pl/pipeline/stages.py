"""The stages of the AdaMergeX recipe: their ``adamergex`` configs, what is done, and running them.

    reference_<lang>            adamergex fit       A(R,lang), once per language for every task
    task_<task>_<src>           adamergex fit       A(T,src)
    task_<task>_<src>_stacked   adamergex fit       A(T,src) on top of a frozen A(R,src) (the stack method)
    task_<task>_<tgt>           adamergex fit       the oracle A(T,tgt), where target-language task data exists
    evaluate_<task>             adamergex validate  MergeModule: every method and scale on the task's languages

With several reference tasks the stages that depend on one carry its name (``reference_<ref>_<lang>``,
``task_<task>_<src>_stacked_<ref>``, ``evaluate_<task>_<ref>``).

Each stage writes ``<run_dir>/<stage>/`` and a ``stage.json`` record
(:mod:`adamergex_pl.pipeline.stage_records`); a stage whose record matches its config and the disk is skipped.
An interrupted fit resumes from its last checkpoint (``callbacks.RunCheckpoint``).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adamergex_pl.atomic_files import remove_dir, write_atomic
from adamergex_pl.errors import InvalidValueError
from adamergex_pl.merging.methods import reference_method_names
from adamergex_pl.pipeline import stage_records as records
from adamergex_pl.pipeline.spec import FitSpec, PipelineSpec
from adamergex_pl.results.statistics import BASELINE
from adamergex_pl.training.base_model import BASE_MODEL_KEYS
from callbacks.run_checkpoint import checkpoint_problem

STAGE_RECORD = records.STAGE_RECORD
ATTEMPT_RECORD = "attempt.json"
LOGS = "logs"  # <run_dir>/<stage>/logs/<version>/metrics.csv
TENSORBOARD = "tensorboard"  # <run_dir>/tensorboard/<fit stage>/


@dataclass(frozen=True)
class Stage:
    """One ``adamergex fit`` or ``validate`` run of the recipe."""

    name: str
    command: str
    config: dict[str, Any]
    depends: tuple[str, ...] = ()

    @property
    def is_fit(self) -> bool:
        return self.command == "fit"


def substitute(tree: Any, lang: str) -> Any:
    """``tree`` with ``{lang}`` replaced by ``lang`` in every string (other braces are left alone)."""
    if isinstance(tree, str):
        return tree.replace("{lang}", lang)
    if isinstance(tree, dict):
        return {key: substitute(value, lang) for key, value in tree.items()}
    if isinstance(tree, list):
        return [substitute(value, lang) for value in tree]
    return tree


def stage_dir(spec: PipelineSpec, name: str) -> Path:
    return Path(spec.run_dir) / name


def _fit_stage(
    spec: PipelineSpec,
    fit: FitSpec,
    name: str,
    lang: str,
    depends: tuple[str, ...] = (),
    **model_args: Any,
) -> Stage:
    root = str(stage_dir(spec, name))
    every = spec.checkpoint_every_n_train_steps
    callbacks = [
        {"class_path": "callbacks.AdapterSnapshot", "init_args": {"dirpath": f"{root}/snapshots"}},
        {
            "class_path": "callbacks.RunCheckpoint",
            "init_args": {"dirpath": f"{root}/checkpoints", "every_n_train_steps": every},
        },
    ]
    trainer = {**copy.deepcopy(spec.trainer), **copy.deepcopy(fit.trainer), "default_root_dir": root}
    trainer["callbacks"] = callbacks + list(trainer.get("callbacks") or [])
    trainer.setdefault("logger", [_csv_logger(root), _tensorboard_logger(spec, name)])
    model = {**copy.deepcopy(spec.model), **copy.deepcopy(fit.model), "task": fit.name, "language": lang}
    model.update(model_args)
    return Stage(
        name,
        "fit",
        {
            "seed_everything": spec.seed,
            "trainer": trainer,
            "model": {"class_path": "adamergex_pl.AdapterModule", "init_args": model},
            "data": substitute(copy.deepcopy(fit.data), lang),
        },
        depends=depends,
    )


def _csv_logger(root: str) -> dict[str, Any]:
    return {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": root, "name": LOGS},
    }


def _tensorboard_logger(spec: PipelineSpec, name: str) -> dict[str, Any]:
    """A fit's TensorBoard logger: every fit of the run under ``<run_dir>/tensorboard/<stage>/``, side by side
    (each run of a stage in a ``version_<n>`` of its own, like its CSV logs; ``job_<id>`` in a SLURM job)."""
    return {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": str(Path(spec.run_dir) / TENSORBOARD), "name": name},
    }


def metrics_files(spec: PipelineSpec, stage: Stage) -> list[Path]:
    """The stage's ``metrics.csv`` files, oldest first: one per run of it (a resumed fit adds one, and so does
    one that started again from scratch)."""
    found = stage_dir(spec, stage.name).glob(f"{LOGS}/*/metrics.csv")
    return sorted(found, key=lambda path: path.stat().st_mtime_ns)


def snapshots(spec: PipelineSpec, stage_name: str) -> str:
    """Where a fit stage's ``AdapterSnapshot`` writes (its ``last`` is the adapter a later stage uses)."""
    return f"{stage_dir(spec, stage_name)}/snapshots"


def per_reference(spec: PipelineSpec, name: str, reference: str) -> str:
    """The name of a stage that exists once per reference task: ``name`` with one reference task,
    ``name_<reference>`` with several (``reference_<ref>_<lang>`` for the reference fits themselves)."""
    if len(spec.references) == 1:
        return name
    if name.startswith("reference_"):
        return f"reference_{reference}_{name.removeprefix('reference_')}"
    return f"{name}_{reference}"


def reference_stage(spec: PipelineSpec, reference: str, lang: str) -> str:
    """The stage that trains ``A(R,lang)`` of one reference task."""
    return per_reference(spec, f"reference_{lang}", reference)


def plan(spec: PipelineSpec) -> list[Stage]:
    """Every stage of ``spec`` (see the module docstring), in an order that respects their dependencies."""
    references = {
        (ref, lang): _fit_stage(spec, fit, reference_stage(spec, ref, lang), lang)
        for ref, fit in spec.references.items()
        for lang in spec.languages
    }
    stages = list(references.values())
    for name, task in spec.tasks.items():
        src = task.src_lang
        fit = _fit_stage(spec, task.fit, f"task_{name}_{src}", src)
        oracles = [_fit_stage(spec, task.fit, f"task_{name}_{lang}", lang) for lang in task.oracle_langs]
        stacked, evaluations = [], []
        for i, ref in enumerate(spec.references):
            fits = [fit]
            if "stack" in spec.methods:
                beneath = references[(ref, src)].name
                fits.append(
                    _fit_stage(
                        spec,
                        task.fit,
                        per_reference(spec, f"task_{name}_{src}_stacked", ref),
                        src,
                        (beneath,),
                        stack_on=snapshots(spec, beneath),
                    )
                )
                stacked.append(fits[-1])
            own = {lang: references[(ref, lang)] for lang in task.languages}
            evaluations.append(_evaluate_stage(spec, name, task, ref, fits, oracles if i == 0 else [], own))
        stages += [fit, *stacked, *oracles, *evaluations]
    return stages


def _evaluate_stage(
    spec, name: str, task, ref: str, fits: list[Stage], oracles: list[Stage], references
) -> Stage:
    methods = [m for m in spec.methods if m != "oracle" or oracles]  # a task without target data: no oracle
    if ref != next(iter(spec.references)):  # every other method is the same whatever the reference task
        methods = [m for m in methods if m in reference_method_names() or m == BASELINE]
    evaluation = per_reference(spec, f"evaluate_{name}", ref)
    merge = {key: spec.model[key] for key in BASE_MODEL_KEYS if key in spec.model}
    merge.update(
        task_src=snapshots(spec, fits[0].name),
        reference_adapters={lang: snapshots(spec, references[lang].name) for lang in task.languages},
        src_lang=task.src_lang,
        methods=methods,
        scales=list(spec.scales),
        **({"swaps": list(spec.swaps)} if "layer_swap" in methods else {}),
        task=name,
        reference_task=ref,
        results_dir=str(stage_dir(spec, evaluation) / "merge_results"),
    )
    if len(fits) > 1:
        merge["task_src_stacked"] = snapshots(spec, fits[1].name)
    if oracles and "oracle" in methods:
        merge["oracle_adapters"] = {
            lang: snapshots(spec, stage.name) for lang, stage in zip(task.oracle_langs, oracles, strict=True)
        }
    merge.update(copy.deepcopy(task.evaluation.merge))
    trainer = {**copy.deepcopy(spec.trainer), **copy.deepcopy(task.evaluation.trainer)}
    trainer = {k: v for k, v in trainer.items() if k not in ("max_epochs", "max_steps", "callbacks")}
    root = str(stage_dir(spec, evaluation))
    trainer.update(default_root_dir=root, logger=_csv_logger(root))
    data = copy.deepcopy(task.evaluation.data)
    init = data.setdefault("init_args", {})
    if isinstance(init.get("val"), dict):  # one {lang} template: a source per language of the task
        init["val"] = [substitute(init["val"], lang) for lang in task.eval_languages]
    elif "val" not in init and "languages" not in init:  # TaskDataModule, CrossXDataModule: name them here
        init["languages"] = list(task.eval_languages)
    inputs = [*fits, *oracles, *(references[lang] for lang in task.languages)]
    return Stage(
        evaluation,
        "validate",
        {
            "seed_everything": spec.seed,
            "verbose": False,
            "trainer": trainer,
            "model": {"class_path": "adamergex_pl.MergeModule", "init_args": merge},
            "data": data,
        },
        depends=tuple(dict.fromkeys(stage.name for stage in inputs)),
    )


def evaluations(spec: PipelineSpec, name: str) -> dict[str, str]:
    """``{reference task: evaluate stage}`` of task ``name``, the first reference first."""
    return {ref: per_reference(spec, f"evaluate_{name}", ref) for ref in spec.references}


def fingerprints(stages: list[Stage]) -> dict[str, str]:
    """A hash of each stage's config and of the fingerprints of the stages it uses."""
    found: dict[str, str] = {}
    for stage in stages:
        text = json.dumps(
            {"command": stage.command, "config": stage.config, "depends": [found[d] for d in stage.depends]},
            sort_keys=True,
        )
        found[stage.name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return found


def is_done(spec: PipelineSpec, stage: Stage, fingerprint: str) -> bool:
    """Whether ``stage`` finished with this fingerprint and its outputs (and its inputs') are unchanged."""
    return not_done_reason(spec, stage, fingerprint) is None


def not_done_reason(spec: PipelineSpec, stage: Stage, fingerprint: str) -> str | None:
    """Why ``stage`` must run (``"never finished"``, ``"its outputs ... are missing ..."``), ``None`` if done."""
    inputs = {name: records.recorded_outputs(stage_dir(spec, name)) for name in stage.depends}
    return records.not_done_reason(stage_dir(spec, stage.name), stage.is_fit, fingerprint, inputs)


def resume_checkpoint(spec: PipelineSpec, stage: Stage, fingerprint: str) -> Path | None:
    """The last checkpoint of an interrupted attempt at this same stage config, if there is a whole one."""
    last = _attempt_checkpoint(spec, stage, fingerprint)
    return last if last is not None and checkpoint_problem(last) is None else None


def damaged_checkpoint(spec: PipelineSpec, stage: Stage, fingerprint: str) -> str | None:
    """What is wrong with the interrupted attempt's checkpoint (``"<path>: it is truncated ..."``), if it
    cannot be resumed from."""
    last = _attempt_checkpoint(spec, stage, fingerprint)
    problem = checkpoint_problem(last, thorough=True) if last is not None else None
    return f"{last}: {problem}" if problem else None


def _attempt_checkpoint(spec: PipelineSpec, stage: Stage, fingerprint: str) -> Path | None:
    root = stage_dir(spec, stage.name)
    attempt, last = root / ATTEMPT_RECORD, root / "checkpoints" / "last.ckpt"
    if not stage.is_fit or not attempt.is_file() or not last.is_file():
        return None
    record = records.read_record(root, ATTEMPT_RECORD)
    return last if record is not None and record.get("fingerprint") == fingerprint else None


def clear_outputs(spec: PipelineSpec, stage: Stage) -> list[str]:
    """Remove what earlier attempts at ``stage`` left (snapshots, checkpoints, results) before it starts from
    scratch, so that its run is not refused and never mixes with them; return what was removed."""
    root = stage_dir(spec, stage.name)
    removed = []
    for name in ("snapshots", "checkpoints", records.RESULTS_DIR):
        if (root / name).exists():
            remove_dir(root / name)
            removed.append(name)
    (root / STAGE_RECORD).unlink(missing_ok=True)
    return removed


def write_config(spec: PipelineSpec, stage: Stage) -> Path:
    """Write the stage's ``adamergex`` config to ``<run_dir>/configs/<stage>.yaml``."""
    path = Path(spec.run_dir) / "configs" / f"{stage.name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Stage '{stage.name}' of an AdaMergeX pipeline, written by `adamergex pipeline`.\n"
        f"#   adamergex {stage.command} --config {path}\n"
    )
    write_atomic(path, header + yaml.safe_dump(stage.config, sort_keys=False, allow_unicode=True))
    return path


def mark(spec: PipelineSpec, stage: Stage, record: str, fingerprint: str) -> None:
    """Write ``attempt.json`` (``record=ATTEMPT_RECORD``) or a finished stage's ``stage.json``.

    Raises:
        ValueError: a finished stage whose outputs are missing (it wrote no snapshot, or no results).
    """
    root = stage_dir(spec, stage.name)
    root.mkdir(parents=True, exist_ok=True)
    if record != STAGE_RECORD:  # who runs it, for --status: this process, and its SLURM job if any
        entry = {
            "stage": stage.name,
            "fingerprint": fingerprint,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
        entry.update(started=_now(), slurm_job=os.environ.get("SLURM_JOB_ID"))
        write_atomic(root / record, json.dumps(entry) + "\n")
        return
    outputs = records.output_digest(root, stage.is_fit)
    if outputs is None:
        raise InvalidValueError(
            f"stage {stage.name} finished but left no {records.outputs_dir(root, stage.is_fit)}; it cannot be "
            "marked done (did the fit run any step?)"
        )
    inputs = {name: records.recorded_outputs(stage_dir(spec, name)) for name in stage.depends}
    write_atomic(root / STAGE_RECORD, records.record_entry(stage.name, fingerprint, outputs, inputs))
    (root / ATTEMPT_RECORD).unlink(missing_ok=True)  # the attempt is over: nothing to resume any more


def has_outputs(spec: PipelineSpec, stage: Stage) -> bool:
    """Whether ``stage`` has its outputs on disk now (whatever its record says)."""
    return records.output_digest(stage_dir(spec, stage.name), stage.is_fit) is not None


def mark_failed(spec: PipelineSpec, stage: Stage, exit_code: int, error: str | None) -> None:
    """Add to the stage's ``attempt.json`` that it failed, with its one-line error (``--status`` shows it);
    the next attempt's record replaces it."""
    root = stage_dir(spec, stage.name)
    record = records.read_record(root, ATTEMPT_RECORD) or {"stage": stage.name}
    record["failed"] = {"exit_code": exit_code, "error": error, "at": _now()}
    write_atomic(root / ATTEMPT_RECORD, json.dumps(record) + "\n")


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
