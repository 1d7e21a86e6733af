"""The ``adamergex`` command: LightningCLI for ``fit``/``validate``/``test``/``predict``, plus extra commands.

    adamergex fit --config configs/tiny/task_lora.yaml
    adamergex validate --config configs/tiny/task_lora.yaml --model.init_args.adapter_dir runs/tiny/snapshots
    adamergex merge --task_src A --ref_src B --ref_tgt C --out D

``model`` and ``data`` take any LightningModule / LightningDataModule by ``class_path`` (``AdapterModule``,
``MergeModule``, the DataModules in ``data_modules``). The DataModule's tokenizer follows the model's
``base_model``. Bad input ends with one ``adamergex: error: ...`` line and exit code 2.

Output is quiet by default (:mod:`adamergex_pl.quiet`; ``adamergex --verbose <command>`` shows everything), and
``validate``/``test`` end with the modules' own table on stdout instead of Lightning's.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import itertools
import os
import re
import shutil
import sys
import traceback
from pathlib import Path

from adamergex_pl import quiet
from adamergex_pl.errors import OutputNotWritableError, RunInterrupted, UserInputError, os_error_reason
from callbacks.slurm_requeue import RequeueStop

# Extra commands: name -> "module:function" taking argv (without the command name) and returning an exit code.
EXTRA_COMMANDS: dict[str, str] = {
    "pipeline": "adamergex_pl.pipeline.command:main",  # the whole recipe; no arguments: the embedded demo
    "merge": "adamergex_pl.merging.command:main",  # structure-adaptive merge of three adapters
    "diagnose": "adamergex_pl.merging.diagnose:main",  # does the language gap transfer across tasks?
    "crossin": "data_modules.crossin_mixture:main",  # `adamergex crossin build` writes a CrossIn mixture to JSONL
    "submit": "adamergex_pl.slurm.submit:main",  # sbatch jobs for any adamergex command
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# One line per command, for `adamergex --help`.
COMMAND_HELP: dict[str, str] = {
    "fit": "fine-tune a LoRA or (IA)³ adapter (AdapterModule), with a PEFT snapshot per epoch",
    "validate": "evaluate an adapter per language, or compare merge methods per language (MergeModule)",
    "test": "like validate, on the DataModule's test sets",
    "predict": "greedy completions of the DataModule's predict data",
    "pipeline": "the whole AdaMergeX recipe from one YAML, resumable (no arguments: the embedded demo)",
    "merge": "merge a task adapter with reference adapters into one PEFT adapter (AdaMergeX, AriMerge, ...)",
    "diagnose": "does the language gap of the reference adapters transfer to the task? (cosine per module)",
    "crossin": "'crossin build': write a CrossIn instruction-tuning mixture to JSONL",
    "submit": "run any adamergex command as SLURM jobs (sbatch; --dry-run prints the script)",
}
# `adamergex <command> --help` also lists the arguments of the module that command is mostly used with
# (LightningCLI's subclass mode shows only `--model CLASS_PATH`; `--model.help <class>` shows a class's).
HELP_MODULES = {
    "fit": "adamergex_pl.AdapterModule",
    "validate": "adamergex_pl.MergeModule",
    "test": "adamergex_pl.AdapterModule",
    "predict": "adamergex_pl.AdapterModule",
}


def _lightning_cli():
    """Build the LightningCLI subclass lazily: importing Lightning takes seconds."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
    from lightning.pytorch.utilities import rank_zero_info

    quiet.apply()  # again: importing Lightning put its own filter for its deprecations in front of ours

    class AdaMergeXCLI(LightningCLI):
        """LightningCLI with the tokenizer linked to the base model and the run config given to snapshots."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.link_arguments("model.init_args.base_model", "data.init_args.tokenizer", apply_on="parse")

        def _parse_ckpt_path(self) -> None:
            # LightningCLI would replace model.init_args by the checkpoint's hyperparameters (a LoRA config
            # silently turning into (IA)³); the config stays what the user wrote, AdapterModule refuses a
            # checkpoint of another adapter naming both, and a missing or damaged file is one line.
            from callbacks.run_checkpoint import check_checkpoint

            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if ckpt_path and ckpt_path not in ("last", "best", "hpc"):
                check_checkpoint(ckpt_path)

        def before_instantiate_classes(self) -> None:
            # A run that names no logger logs to CSV and TensorBoard. In a job from `adamergex submit`: output
            # into the pinned run dir, fixed logger versions, and `fit` resumes from the run dir's HPC
            # checkpoint on a restart (adamergex_pl/slurm/pinning.py).
            from adamergex_pl.slurm.pinning import pin_config, pinned_run_dir, restart_count

            run_dir = pinned_run_dir()
            trainer = self.config[self.subcommand].trainer
            if trainer.logger is None or trainer.logger is True:
                trainer.logger = _default_loggers(str(run_dir or trainer.default_root_dir or os.getcwd()))
            if run_dir is not None:
                resume = pin_config(self.config[self.subcommand], self.subcommand, run_dir)
                if resume is not None:
                    rank_zero_info(
                        f"adamergex: restart {restart_count()} of this job: resuming from {resume}"
                    )

        def instantiate_trainer(self, **kwargs):
            # In a job: the preemption-safe SlurmRequeue callback, and Lightning's own requeue handler off.
            from adamergex_pl.slurm.pinning import pinned_run_dir, requeue_trainer_kwargs

            if pinned_run_dir() is not None:
                kwargs = {
                    **requeue_trainer_kwargs(self._get(self.config_init, "trainer", default={})),
                    **kwargs,
                }
            return super().instantiate_trainer(**kwargs)

        def before_fit(self) -> None:
            # a fresh fit into a folder that holds another run is refused (one line) before the base model
            # loads and before anything is written; the callbacks check again when training starts
            if self.config[self.subcommand].get("ckpt_path") is None:
                for callback in self.trainer.callbacks:
                    if callable(getattr(callback, "check_fresh_run", None)):
                        callback.check_fresh_run(self.trainer, self.model)

        def _run_subcommand(self, subcommand: str) -> None:
            # a run refused after start-up leaves nothing behind: not the log folders it had just created,
            # and not its config.yaml over the one of the run whose folder it is (logger false: default_root_dir)
            log_dir = Path(self.trainer.log_dir) if self.trainer.log_dir else None
            folders = [
                Path(d)
                for d in (log_dir, *(getattr(lg, "log_dir", None) for lg in self.trainer.loggers))
                if d
            ]
            created = list(
                dict.fromkeys(p for d in folders for p in (*reversed(d.parents), d) if not p.exists())
            )
            config = (
                None
                if log_dir is None
                else log_dir / self.save_config_kwargs.get("config_filename", "config.yaml")
            )
            previous = config.read_bytes() if config is not None and config.is_file() else None
            try:
                super()._run_subcommand(subcommand)
            except Exception as err:
                if _user_input_error(err) is not None and self.trainer.is_global_zero:
                    _undo_refused_run(created, config, previous, trained=self.trainer.global_step > 0)
                raise

        def after_instantiate_classes(self) -> None:
            from callbacks.adapter_snapshot import AdapterSnapshot

            self._dump_config()
            for callback in self.trainer.callbacks:
                if isinstance(callback, AdapterSnapshot):
                    callback.run_config = self.config_dump

    def run(args: list[str] | None) -> None:
        AdaMergeXCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},  # a requeued job rewrites its own config
            auto_configure_optimizers=False,
            # parse errors raise, so that main() prints them as one line instead of the full usage
            parser_kwargs={
                "exit_on_error": False,
                **{c: {"exit_on_error": False} for c in LIGHTNING_COMMANDS},
            },
            args=args,
        )

    return run


def _default_loggers(root: str) -> list:
    """The loggers of a run whose config names none (Lightning's default is one of the two):
    ``<root>/lightning_logs/version_<n>/metrics.csv`` and TensorBoard's ``<root>/tensorboard/version_<n>/``."""
    from jsonargparse import Namespace

    loggers = {"CSVLogger": "lightning_logs", "TensorBoardLogger": "tensorboard"}
    return [
        Namespace(
            class_path=f"lightning.pytorch.loggers.{name}", init_args=Namespace(save_dir=root, name=folder)
        )
        for name, folder in loggers.items()
    ]


def _usage() -> str:
    width = max(len(name) for name in COMMAND_HELP)
    commands = "\n".join(f"  {name:<{width}}  {line}" for name, line in COMMAND_HELP.items())
    return (
        "usage: adamergex [--verbose] <command> [options]\n"
        "       adamergex {fit,validate,test,predict} --config CONFIG.yaml [--key value ...]\n\n"
        f"commands:\n{commands}\n\n"
        "options:\n  --verbose  show every third-party warning and notice (also ADAMERGEX_VERBOSE=1)\n\n"
        "Run 'adamergex <command> --help' for the options of a command; for a model or DataModule class:\n"
        "'adamergex fit --model.help adamergex_pl.AdapterModule', "
        "'adamergex validate --data.help data_modules.TaskDataModule'."
    )


def run_function(function, argv: list[str], prog: str) -> int:
    """Run an extra command: its flags are the typed arguments of ``function`` (jsonargparse, as for the
    Lightning commands: ``--config`` YAML files, ``--print_config``, types checked), and ``function`` returns the
    exit code. Bad flags raise ``argparse.ArgumentError``, which :func:`main` prints as one line.
    """
    from jsonargparse import ActionConfigFile, ArgumentParser

    summary = (function.__doc__ or "").strip().split("\n\n")[0]
    parser = ArgumentParser(prog=prog, description=summary, exit_on_error=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options (repeatable)")
    parser.add_function_arguments(function, fail_untyped=True)
    try:
        config = parser.parse_args(argv)
    except SystemExit as done:  # --help, --print_config
        return int(done.code or 0)
    except argparse.ArgumentError as err:
        print(
            f"{prog}: error: {parse_error_line(err, argv)} (run '{prog} --help' for the options)",
            file=sys.stderr,
        )
        return 2
    options = config.as_dict()
    options.pop("config", None)
    return int(function(**options) or 0)


def _negative_value(argv: list[str]) -> str | None:
    """For ``--key -1e-3`` (argparse takes ``-1e-3`` for an option): the line that names the key and the fix."""
    for flag, value in itertools.pairwise(argv):
        if flag.startswith("--") and "=" not in flag and re.fullmatch(r"-(\d|\.\d|inf|nan)\S*", value, re.I):
            return (
                f"{flag.lstrip('-')}={value!r}: a value that starts with '-' after a space is read as an option; "
                f"write {flag}={value}"
            )
    return None


def parse_error_line(err: BaseException, argv: list[str] | None = None) -> str:
    r"""jsonargparse's message for a value it refused, as one line: the full key and the value first, then the
    forms it accepts (instead of its multi-line dump of a union's subtypes).

    Args:
        err: the parser's error.
        argv: the command line, to name the ``--config`` file whose YAML does not parse.

    Example:
        >>> parse_error_line(ValueError('Parser key "scale":\n  Expected a <class \'float\'>. Got value: nan'))
        "scale='nan' is not valid; expected a float"
    """
    text = str(err)
    if "Problems parsing config" in text and argv:
        return _yaml_error(argv) or _flat(text)
    keys = re.findall(r'Parser key "([^"]+)":', text)
    inner = text.split("Problem with given class_path", 1)
    if (
        len(inner) == 2
    ):  # a class's own argument: model.init_args.<key>, its forms only (not the outer union's)
        class_path = re.match(r" '([^']+)'", inner[1])
        rejected = re.search(r"Option '([^']+)' is not accepted", inner[1])
        if rejected and keys:
            where = class_path.group(1) if class_path else "the class"
            return (
                f"{keys[0]}.init_args.{rejected.group(1)} is not an argument of {where}; see "
                f"'--{keys[0]}.help {where}' for its arguments"
            )
        text = inner[1].split("\n    - ", 1)[0]
        keys = [keys[0], "init_args", *re.findall(r'Parser key "([^"]+)":', text)] if keys else keys
    value = re.search(r"(?:Got value|Given value): (.*)$", text, re.M)
    if not (keys and value):
        if "expected one argument" in text:
            negative = _negative_value(argv or [])
            if negative is not None:
                return negative
            return _flat(text) + " (a value that starts with '-' is written --key=value)"
        return _flat(text)
    forms = []
    for found in re.findall(r"Expected an? (.+?)(?:\. Got value:.*)?$", text, re.M):
        form = _TYPE_WORDS.get(found.strip(), found.strip())
        literal = re.fullmatch(r"typing\.Literal\[(.*)\]", found.strip())
        if literal:
            form = "one of " + ", ".join(v.strip().strip("'\"") for v in literal.group(1).split(","))
        if form not in forms:
            forms.append(form)
    expected = f"; expected {' or '.join(forms)}" if forms else ""
    return f"{'.'.join(keys)}={value.group(1).strip()!r} is not valid{expected}"


def _flat(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _yaml_error(argv: list[str]) -> str | None:
    """The first ``--config`` file of ``argv`` whose YAML does not parse, with the parser's line and column."""
    import yaml

    paths = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config"]
    paths += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    for path in paths:
        try:
            yaml.safe_load(Path(path).read_text())
        except (OSError, UnicodeDecodeError):
            continue
        except yaml.YAMLError as bad:
            mark = getattr(bad, "problem_mark", None)
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            return f"--config {path}: not valid YAML at{where}: {getattr(bad, 'problem', bad)}; fix the file"
    return None


_TYPE_WORDS = {
    "<class 'float'>": "a float",
    "<class 'int'>": "an integer",
    "<class 'str'>": "a string",
    "<class 'bool'>": "true or false",
    "<class 'NoneType'>": "null",
}


def _help_requested(argv: list[str]) -> bool:
    return bool(argv) and argv[0] in LIGHTNING_COMMANDS and bool({"-h", "--help"} & set(argv))


def _module_help(command: str) -> None:
    """After LightningCLI's help: the arguments of the command's usual module, with their docstrings."""
    module = HELP_MODULES[command]
    print(
        f"\n{'=' * 100}\nThe arguments of {module} (`--model.init_args.<name>`, or `model.init_args` in YAML):\n"
    )
    with contextlib.suppress(SystemExit):  # jsonargparse exits after printing a help
        _lightning_cli()([command, "--model.help", module])
    others = [m for m in sorted(set(HELP_MODULES.values())) if m != module]
    print(
        f"\nOther classes: adamergex {command} --model.help {others[0]}; DataModules: adamergex {command} "
        "--data.help data_modules.<TaskDataModule|InstructionDataModule|ReferenceLMDataModule|"
        "CrossInDataModule|CrossXDataModule>"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``adamergex`` console script."""
    from_sys_argv = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--verbose":  # passed on to child processes (pipeline stages, DDP ranks, jobs)
        argv, from_sys_argv = argv[1:], False
        os.environ[quiet.VERBOSE_ENV] = "1"
    quiet.apply()
    try:
        if argv and argv[0] in EXTRA_COMMANDS:
            module_name, function_name = EXTRA_COMMANDS[argv[0]].split(":")
            command = getattr(importlib.import_module(module_name), function_name)
            return int(command(argv[1:]) or 0)
        if not argv or (argv[0] in ("-h", "--help") and len(argv) == 1):
            print(_usage())
            return 0 if argv else 2
        _arm_requeue_signal()
        if _help_requested(argv) and not any(a.startswith(("--model", "--data")) for a in argv):
            try:
                _lightning_cli()(argv)
            except SystemExit as done:
                if done.code not in (0, None):
                    raise
            _module_help(argv[0])
            return 0
        # LightningCLI reads sys.argv itself when given None, and warns when given both
        _lightning_cli()(None if from_sys_argv else argv)
        return 0
    except RunInterrupted as stop:  # a fit stopped by SIGTERM/SIGINT, checkpointed (callbacks.RunCheckpoint)
        print(f"adamergex: {stop}", file=sys.stderr)
        return stop.exit_code
    except SystemExit as stop:
        # Lightning ends a run that got SIGTERM with SystemExit(None): never exit code 0
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(stop, SIGTERMException):
            raise
        print("adamergex: stopped by SIGTERM before the run ended", file=sys.stderr)
        return 143
    except RequeueStop as stop:  # a run checkpointed for its requeue (callbacks/slurm_requeue.py)
        if stop.exit_code:  # not requeued: say how to resume (a successful requeue was logged already)
            print(f"adamergex: {stop.message()}", file=sys.stderr)
        return stop.exit_code
    except argparse.ArgumentError as err:
        command = (
            argv[0] if argv and (argv[0] in LIGHTNING_COMMANDS or argv[0] in EXTRA_COMMANDS) else "<command>"
        )
        print(
            f"adamergex: error: {parse_error_line(err, argv)} (run 'adamergex {command} --help' for the options)",
            file=sys.stderr,
        )
        return 2
    except Exception as err:
        user_error = _user_input_error(err)
        if user_error is None:
            raise
        if os.environ.get("ADAMERGEX_DEBUG"):
            traceback.print_exc()
        print(f"adamergex: error: {user_error}", file=sys.stderr)
        return 2


def _arm_requeue_signal() -> None:
    """In a job from ``adamergex submit``, record the requeue signal from now on instead of dying of it.

    Before the model loads (minutes for a large one) and before data-loader workers fork, so that an early
    signal is kept for ``SlurmRequeue`` to act on at the first safe step.
    """
    from adamergex_pl.slurm.pinning import pinned_run_dir
    from callbacks import slurm_requeue

    if pinned_run_dir() is not None:
        slurm_requeue.arm(slurm_requeue.requeue_signal())


def _undo_refused_run(
    created: list[Path], config: Path | None, previous: bytes | None, *, trained: bool
) -> None:
    """Remove the folders a refused run created (innermost first) when they hold no more than its
    ``config.yaml``, ``hparams.yaml`` and, if it trained no step, TensorBoard's event file; put back the
    ``config.yaml`` it replaced (or remove the one it added). A run that trained keeps its logs and config (e.g.
    the curves of a diverged fit)."""
    from adamergex_pl.atomic_files import write_atomic

    def removable(name: str) -> bool:
        return name in ("config.yaml", "hparams.yaml") or (not trained and name.startswith(_EVENTS))

    for folder in sorted(created, key=lambda path: len(path.parts), reverse=True):  # innermost first
        if folder.is_dir() and all(removable(p.name) for p in folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
    if (
        config is None or config.parent in created or trained
    ):  # a run that trained keeps its config with its logs
        return
    with contextlib.suppress(OSError):
        if previous is not None and config.is_file() and config.read_bytes() != previous:
            write_atomic(config, previous)
        elif previous is None:
            config.unlink(missing_ok=True)


# jsonargparse's PathError (a TypeError) for a file it cannot write, e.g. SaveConfigCallback's config.yaml
_UNWRITABLE_PATH = re.compile(
    r"^\w+ is not (?:creatable since parent directory not writable|writable): '(.+)'$"
)


_EVENTS = "events.out.tfevents."  # TensorBoard's event file, written when its logger starts


def _user_input_error(err: BaseException) -> UserInputError | None:
    """The ``UserInputError`` behind ``err`` (jsonargparse wraps errors raised while instantiating classes), or
    one made of an ``OSError`` that the user's paths or disk caused (read-only, full, not a directory)."""
    seen, chain = set(), []
    while err is not None and id(err) not in seen:
        if isinstance(err, UserInputError):
            return err
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or err.__context__
    for cause in chain:
        unwritable = _UNWRITABLE_PATH.search(str(cause)) if isinstance(cause, TypeError) else None
        if unwritable is not None:  # jsonargparse checks the file it saves (the run's config.yaml) first
            file = Path(unwritable.group(1))
            return OutputNotWritableError(
                f"cannot write {file.name} in {str(file.parent)!r}: the folder is not writable; choose a writable "
                "--trainer.default_root_dir (or fix the folder's permissions)"
            )
        reason = os_error_reason(cause)
        if reason is not None:
            filename = getattr(cause, "filename", None)
            where = f" {str(filename)!r}" if filename else ""
            return OutputNotWritableError(f"cannot write or read{where}: {reason[0]}; {reason[1]}")
    return None


if __name__ == "__main__":
    sys.exit(main())
