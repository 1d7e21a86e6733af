"""The stages of the AdaMergeX recipe: their ``adamergex`` configs, what is done, and running them.

    task_<src>        adamergex fit       A(T,src)
    reference_<lang>  adamergex fit       A(R,lang) for the source and every target language
    oracle_<tgt>      adamergex fit       A(T,tgt), where target-language task data exists
    evaluate          adamergex validate  MergeModule: every method and scale on every language

Each stage writes ``<run_dir>/<stage>/`` and, when it finishes, ``stage.json`` with a fingerprint of its
config and of the stages it uses, and digests of its outputs and of the outputs it used
(:mod:`adamergex_pl.pipeline.stage_records`): a stage whose record still matches its config *and* the disk is
skipped, so running the pipeline twice does nothing the second time, changing a setting re-runs exactly the
stages it affects, and deleted or replaced outputs are made again. A fit that was interrupted resumes from its
last adapter-only checkpoint (``callbacks.RunCheckpoint``: a step interval and every epoch end); a damaged
checkpoint is reported and the fit starts again from scratch.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adamergex_pl.errors import InvalidValueError
from adamergex_pl.pipeline import stage_records as records
from adamergex_pl.pipeline.spec import FitSpec, PipelineSpec
from adamergex_pl.results.files import write_text_atomic
from adamergex_pl.training.base_options import BASE_MODEL_KEYS
from adamergex_pl.training.checkpoint_io import checkpoint_problem
from adamergex_pl.training.snapshot_files import remove_dir

STAGE_RECORD = records.STAGE_RECORD
ATTEMPT_RECORD = "attempt.json"


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


def _fit_stage(spec: PipelineSpec, fit: FitSpec, name: str, lang: str) -> Stage:
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
    trainer.setdefault(
        "logger",
        {
            "class_path": "lightning.pytorch.loggers.CSVLogger",
            "init_args": {"save_dir": root, "name": "logs"},
        },
    )
    model = {**copy.deepcopy(spec.model), **copy.deepcopy(fit.model), "task": fit.name, "language": lang}
    return Stage(
        name,
        "fit",
        {
            "seed_everything": spec.seed,
            "trainer": trainer,
            "model": {"class_path": "adamergex_pl.AdapterModule", "init_args": model},
            "data": substitute(copy.deepcopy(fit.data), lang),
        },
    )


def plan(spec: PipelineSpec) -> list[Stage]:
    """Every stage of ``spec``, in an order that respects their dependencies."""
    task = _fit_stage(spec, spec.task, f"task_{spec.src_lang}", spec.src_lang)
    references = [_fit_stage(spec, spec.reference, f"reference_{lang}", lang) for lang in spec.languages]
    oracles = [_fit_stage(spec, spec.task, f"oracle_{lang}", lang) for lang in spec.oracle_langs]
    snapshots = lambda stage: f"{stage_dir(spec, stage.name)}/snapshots"  # noqa: E731
    merge = {key: spec.model[key] for key in BASE_MODEL_KEYS if key in spec.model}
    merge.update(
        task_adapter=snapshots(task),
        reference_adapters={
            lang: snapshots(stage) for lang, stage in zip(spec.languages, references, strict=True)
        },
        src_lang=spec.src_lang,
        methods=list(spec.methods),
        scales=list(spec.scales),
        task=spec.task.name,
        results_dir=str(stage_dir(spec, "evaluate") / "merge_results"),
    )
    if oracles and "oracle" in spec.methods:
        merge["oracle_adapters"] = {
            lang: snapshots(stage) for lang, stage in zip(spec.oracle_langs, oracles, strict=True)
        }
    merge.update(copy.deepcopy(spec.evaluation.merge))
    trainer = {**copy.deepcopy(spec.trainer), **copy.deepcopy(spec.evaluation.trainer)}
    trainer = {k: v for k, v in trainer.items() if k not in ("max_epochs", "max_steps", "callbacks")}
    root = str(stage_dir(spec, "evaluate"))
    trainer.update(default_root_dir=root, logger={
        "class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": root, "name": "logs"}
    })  # fmt: skip
    evaluate = Stage(
        "evaluate",
        "validate",
        {
            "seed_everything": spec.seed,
            "verbose": False,
            "trainer": trainer,
            "model": {"class_path": "adamergex_pl.MergeModule", "init_args": merge},
            "data": copy.deepcopy(spec.evaluation.data),
        },
        depends=tuple(s.name for s in (task, *references, *oracles)),
    )
    return [task, *references, *oracles, evaluate]


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
    write_text_atomic(path, header + yaml.safe_dump(stage.config, sort_keys=False, allow_unicode=True))
    return path


def mark(spec: PipelineSpec, stage: Stage, record: str, fingerprint: str) -> None:
    """Write ``attempt.json`` (``record=ATTEMPT_RECORD``) or, for a finished stage, ``stage.json`` with the
    digests of its outputs and inputs.

    Raises:
        ValueError: a finished stage whose outputs are missing (it wrote no snapshot, or no results).
    """
    root = stage_dir(spec, stage.name)
    root.mkdir(parents=True, exist_ok=True)
    if record != STAGE_RECORD:
        write_text_atomic(root / record, json.dumps({"stage": stage.name, "fingerprint": fingerprint}) + "\n")
        return
    outputs = records.output_digest(root, stage.is_fit)
    if outputs is None:
        raise InvalidValueError(
            f"stage {stage.name} finished but left no {records.outputs_dir(root, stage.is_fit)}; it cannot be "
            "marked done (did the fit run any step?)"
        )
    inputs = {name: records.recorded_outputs(stage_dir(spec, name)) for name in stage.depends}
    write_text_atomic(root / STAGE_RECORD, records.record_entry(stage.name, fingerprint, outputs, inputs))
    (root / ATTEMPT_RECORD).unlink(missing_ok=True)  # the attempt is over: nothing to resume any more


def has_outputs(spec: PipelineSpec, stage: Stage) -> bool:
    """Whether ``stage`` has its outputs on disk now (whatever its record says)."""
    return records.output_digest(stage_dir(spec, stage.name), stage.is_fit) is not None
