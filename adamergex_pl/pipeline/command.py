"""``adamergex pipeline``: the whole AdaMergeX recipe from one YAML, resumable, locally or on SLURM.

    adamergex pipeline                                   # the embedded demo (offline, CPU, a few minutes)
    adamergex pipeline --config configs/pipeline/tiny.yaml
    adamergex pipeline --config X --dry-run              # list the stages, their state and commands
    adamergex pipeline --config X --stage task_en        # run one stage (its dependencies must be done)
    adamergex pipeline --config X --submit --slurm.time 04:00:00 --slurm.gpus_per_node 1   # sbatch jobs
    adamergex pipeline --config X --status               # each stage: done, running, waiting, failed, to run

Stages whose results exist are skipped (see :mod:`adamergex_pl.pipeline.stages`); the report (table and plots)
is written to the run directory after the evaluation. Each stage's output starts with
``[pipeline k/N] <stage>: <command>`` and ends with its elapsed time.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import json
import shlex
import sys
import time
from pathlib import Path

from adamergex_pl.assets.builtin import ASSETS_DIR
from adamergex_pl.atomic_files import write_atomic
from adamergex_pl.errors import InputNotFoundError, InvalidValueError
from adamergex_pl.pipeline import stages as st
from adamergex_pl.pipeline.budget import (
    EvalBudget,
    FitBudget,
    count_offline,
    eval_budget,
    fit_budget,
    gpu_hours,
)
from adamergex_pl.pipeline.diagnosis import diagnose
from adamergex_pl.pipeline.experiment_table import write_experiment_table
from adamergex_pl.pipeline.plan_checks import check_plan
from adamergex_pl.pipeline.report import plot_training, training_curves, write_report
from adamergex_pl.pipeline.spec import PipelineSpec
from adamergex_pl.pipeline.status import SUBMISSION_RECORD, elapsed, status_report

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
    if spec.swaps:  # layer_swap's K bottom and K top layers must fit the rehearsal model's layers
        from adamergex_pl.assets.builtin import tiny_llama_config

        most = tiny_llama_config().num_hidden_layers // 2
        spec.swaps = sorted({min(k, most) for k in spec.swaps})
    for fit in (*spec.references.values(), *(task.fit for task in spec.tasks.values())):
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


DEFAULT_CONFIG = ASSETS_DIR / "demo" / "pipeline.yaml"


def build_parser():
    from jsonargparse import ActionConfigFile, ArgumentParser

    from adamergex_pl.slurm.resources import JobResources

    parser = ArgumentParser(
        prog="adamergex pipeline",
        description="Run the AdaMergeX recipe: task and reference fits, then every method on every language.",
        exit_on_error=False,
    )
    parser.add_argument(
        "--config", action=ActionConfigFile, help="the pipeline YAML (default: the embedded demo)"
    )
    parser.add_class_arguments(PipelineSpec)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the stages and their state, what each fit trains on and each evaluation evaluates; run nothing",
    )
    parser.add_argument(
        "--throughput",
        type=float | None,
        default=None,
        help="with --dry-run: tokens per second of one GPU, to price fits and evaluation in GPU-hours (one rate "
        "for both: an evaluation token, forward only, costs less than a training one, so its hours are an upper "
        "bound; a generated token, one decoding step, may cost more)",
    )
    parser.add_argument(
        "--stage", type=list[str] | None, default=None, help="run only these stages, e.g. [task_en]"
    )
    parser.add_argument(
        "--submit", action="store_true", help="submit the stages as SLURM jobs instead of running"
    )
    parser.add_argument(
        "--status",
        action="store_true",
        help="each stage's state (done, running, waiting, failed, to run; from SLURM for a submitted run) and "
        "the command that continues the run; runs nothing",
    )
    parser.add_argument(
        "--rehearse",
        action="store_true",
        help="run the recipe's every stage tiny: builtin:tiny-llama, 2 steps per fit, 4 items per language, "
        "CPU, outputs in <run_dir>/rehearsal (adamergex_pl/pipeline/command.py)",
    )
    parser.add_class_arguments(JobResources, "slurm", help="SLURM resources of every job (with --submit)")
    return parser


def merge_configs(argv: list[str]) -> list[str]:
    """``argv`` with several ``--config`` files merged into one, deeply and in order: a later file (an overlay
    such as ``configs/pipeline/paper_llama2_7b_ia3.yaml``) changes only the keys it names; lists replace."""
    paths, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] == "--config" and i + 1 < len(argv):
            paths.append(argv[i + 1])
            i += 2
            continue
        if argv[i].startswith("--config="):
            paths.append(argv[i].split("=", 1)[1])
        else:
            rest.append(argv[i])
        i += 1
    if len(paths) < 2:
        return argv
    import yaml

    merged: dict = {}
    for path in paths:
        if not Path(path).is_file():
            raise InputNotFoundError(f"--config {path!r}: no such file; expected a pipeline YAML")
        _deep_update(merged, yaml.safe_load(Path(path).read_text()) or {})
    return ["--config", yaml.safe_dump(merged, sort_keys=False, allow_unicode=True), *rest]


def _deep_update(into: dict, overlay: dict) -> None:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_update(into[key], value)
        else:
            into[key] = value


def parse(argv: list[str]) -> tuple[PipelineSpec, object, list[str]]:
    """The pipeline spec, the parsed options, and the argv that reproduces the spec (for SLURM jobs)."""
    if not any(a == "--config" or a.startswith("--config=") for a in argv) and not {"-h", "--help"} & set(
        argv
    ):
        argv = ["--config", str(DEFAULT_CONFIG), *argv]
    parser = build_parser()
    config = parser.parse_args(merge_configs(argv))
    init = parser.instantiate(config)
    spec = PipelineSpec(**{f.name: getattr(init, f.name) for f in dataclasses.fields(PipelineSpec)})
    if init.rehearse:
        spec = rehearse(spec)
    spec_argv = [a for a in argv if a not in ("--dry-run", "--submit", "--status")]  # jobs --rehearse too
    return spec, init, spec_argv


def describe(
    spec: PipelineSpec, plan: list[st.Stage], prints: dict[str, str], throughput: float | None = None
) -> str:
    tasks = "; ".join(f"{n}: {t.src_lang} -> {', '.join(t.tgt_langs)}" for n, t in spec.tasks.items())
    lines = [f"AdaMergeX pipeline in {spec.run_dir}: {tasks}", f"methods: {', '.join(spec.methods)}"]
    budgets: list[FitBudget] = []
    width = max(28, *(len(stage.name) + 1 for stage in plan))
    evaluations: list[EvalBudget] = []
    for stage in plan:
        if st.is_done(spec, stage, prints[stage.name]):
            state = "done"
        elif st.resume_checkpoint(spec, stage, prints[stage.name]):
            state = "resume"
        else:
            state = "to run"
        config = Path(spec.run_dir) / "configs" / f"{stage.name}.yaml"
        line = f"{stage.name:<{width}} {state:<7} adamergex {stage.command} --config {config}"
        if stage.is_fit:
            budget = fit_budget(stage.config)
            budgets.append(budget)
            line += f"  [{budget.describe()}]"
        elif stage.config.get("model", {}).get("class_path") == "adamergex_pl.MergeModule":
            evaluation = eval_budget(stage.config)
            evaluations.append(evaluation)
            line += f"  [{evaluation.describe()}]"
        lines.append(line)
    known = [b for b in budgets if b.examples is not None]
    unknown = len(budgets) - len(known)
    bound = "<=" if any(b.upper_bound for b in known) else ""
    fit_tokens = sum(b.tokens for b in known)
    lines.append(
        f"total: {len(plan)} stages, {len(budgets)} fits: {bound}{sum(b.examples for b in known):,} examples, "
        f"{bound}{fit_tokens:,} tokens"
        + (f" (+{unknown} fits that could not be counted here)" if unknown else "")
    )
    counted = [e for e in evaluations if e.items is not None]
    forward, generated = sum(e.tokens for e in counted), sum(e.generated for e in counted)
    runs = sum(e.evaluations for e in counted)
    le = "<=" if any(e.upper_bound for e in counted) else ""
    lines.append(
        f"total: {len(evaluations)} evaluations: {le}{runs:,} adapter-item evaluations, {le}{forward:,} forward "
        f"tokens, <={generated:,} generated tokens"
        + (
            f" (+{len(evaluations) - len(counted)} that could not be counted here)"
            if len(counted) < len(evaluations)
            else ""
        )
    )
    if throughput:
        fits, evaluation = gpu_hours(fit_tokens, throughput), gpu_hours(forward + generated, throughput)
        lines.append(
            f"at {throughput:,.0f} tokens/s: fits {bound}{fits:,.1f} GPU-hours, evaluation {le}{evaluation:,.1f} "
            f"GPU-hours, together {fits + evaluation:,.1f} (counted parts only)"
        )
    return "\n".join(lines)


def run_stage(
    spec: PipelineSpec, stage: st.Stage, fingerprint: str, tag: str, note: str | None = None
) -> int:
    """Run one stage in process, mark it done if it succeeded and left its outputs, and return its exit code.

    An interrupted fit resumes from its checkpoint; otherwise earlier attempts' leftovers are removed first.
    A failure is recorded in ``attempt.json`` for ``--status``.
    """
    path = st.write_config(spec, stage)
    args = [stage.command, "--config", str(path)]
    print(f"{tag}: adamergex {' '.join(args)}", flush=True)
    if note:
        print(f"{tag}: {note}", flush=True)
    started = time.monotonic()
    checkpoint = st.resume_checkpoint(spec, stage, fingerprint)
    if checkpoint is not None:
        args += ["--ckpt_path", str(checkpoint)]
        print(f"{tag}: resuming from {checkpoint}", flush=True)
    else:
        damaged = st.damaged_checkpoint(spec, stage, fingerprint)
        if damaged:
            print(f"{tag}: cannot resume from {damaged}; fitting it again", flush=True)
        removed = st.clear_outputs(spec, stage)
        if removed:
            print(f"{tag}: removed {', '.join(removed)} of an earlier attempt", flush=True)
    st.mark(spec, stage, st.ATTEMPT_RECORD, fingerprint)
    code = _run_recording_failure(spec, stage, args)
    if code == 0 and checkpoint is not None and not st.has_outputs(spec, stage):
        # the checkpoint was of a finished fit whose snapshots are gone: resuming it trains nothing
        print(f"{tag}: its checkpoint is of a finished fit; fitting it again", flush=True)
        st.clear_outputs(spec, stage)
        code = _run_recording_failure(spec, stage, args[:3])
    took = elapsed(time.monotonic() - started)
    if code != 0:  # the stage printed its own one-line error: say which stage, and stop
        print(f"{tag}: failed after {took} (exit code {code}); its config is {path}", flush=True)
        return code
    st.mark(spec, stage, st.STAGE_RECORD, fingerprint)
    print(f"{tag}: done in {took}", flush=True)
    return 0


class _ErrorLine:
    """``sys.stderr`` as it is, remembering the last ``adamergex: ...`` line written to it (a stage's error)."""

    def __init__(self, stream) -> None:
        self.stream, self.line = stream, None

    def write(self, text: str) -> int:
        self.line = next(
            (ln for ln in reversed(text.splitlines()) if ln.startswith("adamergex: ")), self.line
        )
        return self.stream.write(text)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _run_recording_failure(spec: PipelineSpec, stage: st.Stage, args: list[str]) -> int:
    """``adamergex <args>`` in process; a failure (an exit code, or an exception) goes into ``attempt.json``."""
    from adamergex_pl.cli import main as adamergex

    errors = _ErrorLine(sys.stderr)
    try:
        with contextlib.redirect_stderr(errors):
            code = adamergex(args)
    except Exception as err:
        st.mark_failed(spec, stage, 1, f"{type(err).__name__}: {err}".splitlines()[0])
        raise
    finally:
        gc.collect()
    if code != 0:
        st.mark_failed(spec, stage, code, errors.line)
    return code


def submit(spec: PipelineSpec, plan: list[st.Stage], resources, spec_argv: list[str], dry_run: bool) -> int:
    """Every stage as a SLURM job (``adamergex pipeline --stage``) that waits ``afterok`` for its inputs; a last
    job writes the report."""
    from adamergex_pl.slurm.jobs import SlurmJob, adamergex_command, submit_jobs

    stages = [
        SlurmJob(
            adamergex_command(["pipeline", *spec_argv, "--stage", f"[{s.name}]"]),
            dataclasses.replace(resources, job_name=s.name),
            after=list(s.depends),
        )
        for s in plan
    ]
    final = SlurmJob(  # every stage is done by then: this run only writes the report
        adamergex_command(["pipeline", *spec_argv]),
        dataclasses.replace(resources, job_name="report"),
        after=[s.name for s in plan if not s.is_fit],
    )
    submissions = submit_jobs([*stages, final], jobs_dir=str(Path(spec.run_dir) / "slurm"), dry_run=dry_run)
    for job in submissions:
        if dry_run:
            print(f"# ---- {job.name}: sbatch {' '.join(job.sbatch_args)} {job.script_path}\n{job.script}")
        else:
            print(f"{job.name}\t{job.job_id}")
    if not dry_run:  # what --status reads: the jobs, their logs, and the command that submits the run again
        record = {
            "command": shlex.join(["adamergex", "pipeline", *spec_argv, "--submit"]),
            "jobs": {
                job.name: {"id": job.job_id, "log": str(Path(job.log_path).absolute())} for job in submissions
            },
        }
        write_atomic(Path(spec.run_dir) / SUBMISSION_RECORD, json.dumps(record, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``adamergex pipeline``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--dry-run" in argv and "--submit" not in argv:
        count_offline()
    spec, options, spec_argv = parse(argv)
    plan = st.plan(spec)
    prints = st.fingerprints(plan)
    names = {s.name for s in plan}
    chosen = options.stage or [s.name for s in plan]
    unknown = [name for name in chosen if name not in names]
    if unknown:
        raise InvalidValueError(
            f"--stage {unknown} are not stages of this pipeline; its stages are {sorted(names)}"
        )
    if options.status:  # what is on disk and in SLURM now; nothing is checked or run
        command = shlex.join(["adamergex", "pipeline", *(a for a in argv if a != "--status")])
        print(status_report(spec, plan, prints, command))
        return 0
    check_plan(spec, plan)  # languages, metrics, methods and data files: before the first fit
    if options.submit:
        return submit(spec, plan, options.slurm, spec_argv, options.dry_run)
    if options.dry_run:
        print(describe(spec, plan, prints, options.throughput))
        return 0
    Path(spec.run_dir).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    for k, stage in enumerate(plan, 1):
        if stage.name not in chosen:
            continue
        tag = f"[pipeline {k}/{len(plan)}] {stage.name}"
        missing = [
            d for d in stage.depends if not st.is_done(spec, next(s for s in plan if s.name == d), prints[d])
        ]
        if missing:
            raise InvalidValueError(
                f"stage {stage.name} needs {missing} first; run them (or the whole pipeline)"
            )
        reason = st.not_done_reason(spec, stage, prints[stage.name])
        if reason is None:
            print(f"{tag}: done, skipped", flush=True)
            continue
        note = None if reason == "never finished" else f"runs again: {reason}"
        code = run_stage(spec, stage, prints[stage.name], tag, note)
        if code != 0:
            return code
    print(f"[pipeline] {len(chosen)} of {len(plan)} stages done in {elapsed(time.monotonic() - started)}")
    report(spec, plan, prints)
    return 0


def report(spec: PipelineSpec, plan: list[st.Stage], prints: dict[str, str]) -> None:
    """Write the report once every evaluation is done (per task in ``<run_dir>/<task>/`` when there are several),
    with the diagnostic wherever an oracle exists."""
    by_name = {stage.name: stage for stage in plan}
    done = {
        name: {
            ref: st.stage_dir(spec, stage) / "merge_results"
            for ref, stage in st.evaluations(spec, name).items()
        }
        for name in spec.tasks
        if all(st.is_done(spec, by_name[s], prints[s]) for s in st.evaluations(spec, name).values())
    }
    if len(done) < len(spec.tasks):
        return
    run_dir = Path(spec.run_dir)
    curves = {stage.name: training_curves(st.metrics_files(spec, stage)) for stage in plan if stage.is_fit}
    plot_training(curves, run_dir / "plots" / "training.png")
    means = diagnose(spec, run_dir)
    if len(spec.tasks) == 1:
        name, task = next(iter(spec.tasks.items()))
        cosines = {(ref, lang): mean for (n, ref, lang), mean in means.items() if n == name}
        table = write_report(done[name], run_dir, task.metric, task.src_lang, cosines)
        print(f"\n{table}\nResults: {run_dir}/results.{{csv,json,md}}, plots in {run_dir}/plots/")
        return
    for name, task in spec.tasks.items():
        (run_dir / name).mkdir(parents=True, exist_ok=True)
        cosines = {(ref, lang): mean for (n, ref, lang), mean in means.items() if n == name}
        write_report(done[name], run_dir / name, task.metric, task.src_lang, cosines)
    table = write_experiment_table(spec, run_dir)
    print(f"\n{table}\nResults: {run_dir}/results.{{csv,json,md}}; per task in {run_dir}/<task>/")


if __name__ == "__main__":
    sys.exit(main())
