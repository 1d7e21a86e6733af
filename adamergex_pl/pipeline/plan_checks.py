"""What ``adamergex pipeline`` checks before its first fit, so that a bad setting fails in a second: every
stage's DataModule builds and its local records have the fields it needs (``check_local_records``), the
evaluation covers the pipeline's languages and metrics, every method can run.
DataModules that return ``None`` from ``planned_val_languages()`` / ``metric_names()`` are checked later.
"""

from __future__ import annotations

from typing import Any

from adamergex_pl.errors import InputNotFoundError, InvalidValueError, UserInputError
from adamergex_pl.merging.methods import check_adapter_type
from data_modules.sources import DataSource


def check_plan(spec, plan) -> None:
    """Refuse a pipeline that cannot run to its end.

    Args:
        spec: the :class:`~adamergex_pl.pipeline.spec.PipelineSpec`.
        plan: its stages (:func:`adamergex_pl.pipeline.stages.plan`).

    Raises:
        ValueError: a DataModule that does not build, wrong evaluation languages or metric, a method the
            pipeline cannot run, or local training or evaluation records without a field their DataModule needs.
        FileNotFoundError: a local data file that does not exist.
    """
    for stage in plan:
        datamodule = build_datamodule(stage.config["data"], f"stage {stage.name}")
        _check_local_files(datamodule, stage.name)
        _check_local_records(datamodule, stage.name)
        if stage.is_fit:
            continue
        merge = stage.config["model"]["init_args"]
        task = spec.tasks[merge["task"]]
        _check_languages(datamodule, task.eval_languages, stage.name)
        for option, wanted in (
            ("metric", task.metric),
            ("evaluation.merge.selection_metric", merge.get("selection_metric")),
        ):
            _check_metric(datamodule, option, wanted, stage.name)
        _check_methods(spec, task, merge)


def _check_local_records(datamodule, stage: str) -> None:
    """Every record of the stage's local files has the fields its DataModule needs (training and evaluation
    data alike: a DataModule's ``check_local_records``, read offline, without a tokenizer)."""
    check_records = getattr(datamodule, "check_local_records", None)
    if check_records is None:
        return
    try:
        check_records()
    except UserInputError as err:
        raise type(err)(f"stage {stage}: {err}") from None


def build_datamodule(config: dict[str, Any], what: str):
    """The DataModule a stage's ``data`` config describes (``class_path`` and ``init_args``), built as the CLI
    would build it, without a tokenizer and without reading any data.

    Raises:
        ValueError: the config does not build, with jsonargparse's reason.
    """
    from jsonargparse import ArgumentParser
    from lightning.pytorch import LightningDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True)
    try:
        return parser.instantiate_classes(parser.parse_object({"data": config})).data
    except UserInputError as err:
        raise InvalidValueError(f"{what}: data: {err}") from err
    except Exception as err:  # jsonargparse's parse errors: unknown keys, wrong types, unknown classes
        raise InvalidValueError(f"{what}: data ({config.get('class_path')}): {_reason(str(err))}") from err


def _reason(message: str) -> str:
    """The part of a jsonargparse error that says what is wrong with the class's arguments, on one line."""
    lines = [line.strip() for line in message.strip().splitlines()]
    start = next(
        (i for i, line in enumerate(lines) if line.startswith("- Problem with given class_path")), None
    )
    if start is None:
        return lines[0] if lines else message
    detail = []
    for line in lines[start + 1 :]:
        if line.startswith("- "):
            break
        detail.append(line)
    return " ".join(detail) or lines[start]


def _check_local_files(datamodule, stage: str) -> None:
    for source in _sources(vars(datamodule)):
        if source.is_local and not source.local_path().is_file():
            raise InputNotFoundError(
                f"stage {stage}: data file {source.path!r} does not exist (resolved to "
                f"{source.local_path().resolve()}); fix the path in the pipeline YAML"
            )


def _sources(values: dict[str, Any]) -> list[DataSource]:
    found = []
    for value in values.values():
        items = value if isinstance(value, (list, tuple)) else [value]
        found += [item for item in items if isinstance(item, DataSource)]
    return found


def _check_languages(datamodule, languages: list[str], stage: str) -> None:
    planned = getattr(datamodule, "planned_val_languages", lambda: None)()
    if planned is None:
        return
    missing = [lang for lang in languages if lang not in planned]
    if missing:
        raise InvalidValueError(
            f"stage {stage}: evaluation.data validates on {planned}, so the table would have no column for "
            f"{missing}; the task's languages are {languages} (src_lang + tgt_langs): give evaluation "
            "data in every one of them"
        )


def _check_metric(datamodule, option: str, wanted: str | None, stage: str) -> None:
    names = getattr(datamodule, "metric_names", lambda: None)()
    if wanted is None or names is None:
        return
    if not any(name == wanted or name.endswith("/" + wanted) for name in names):
        raise InvalidValueError(
            f"stage {stage}: {option}={wanted!r} is not a metric the evaluation reports; it reports "
            f"{', '.join(names)} (give one of them, or its last part)"
        )


def _check_methods(spec, task, merge: dict[str, Any]) -> None:
    adapter_types = {spec.model.get("adapter_type", "lora"), task.fit.model.get("adapter_type")}
    adapter_types |= {fit.model.get("adapter_type") for fit in spec.references.values()}
    for adapter_type in sorted(t for t in adapter_types if t):
        check_adapter_type(merge["methods"], adapter_type)
    if merge.get("lora_mode") == "svd" and not merge.get("svd_rank"):
        raise InvalidValueError("evaluation.merge has lora_mode: svd but no svd_rank; add svd_rank: 8 (say)")
