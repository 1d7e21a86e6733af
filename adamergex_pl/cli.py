"""The ``adamergex`` command: LightningCLI for ``fit``/``validate``/``test``/``predict``, plus extra commands.

    adamergex fit --config configs/tiny/task_lora.yaml
    adamergex validate --config configs/tiny/task_lora.yaml --model.init_args.adapter_dir runs/tiny/snapshots
    adamergex merge --task-src A --ref-src B --ref-tgt C --out D

``model`` and ``data`` take any LightningModule / LightningDataModule by ``class_path`` (``AdapterModule``,
``MergeModule``, the DataModules in ``data_modules``). The DataModule's tokenizer follows the model's
``base_model``. Bad input ends with one ``adamergex: error: ...`` line and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
import warnings

from adamergex_pl.errors import OutputNotWritableError, UserInputError, os_error_reason
from adamergex_pl.slurm.preemption import RequeueStop

# Extra commands: name -> "module:function" taking argv (without the command name) and returning an exit code.
EXTRA_COMMANDS: dict[str, str] = {
    "pipeline": "adamergex_pl.pipeline.command:main",  # the whole recipe; no arguments: the embedded demo
    "merge": "adamergex_pl.merging.command:main",  # structure-adaptive merge of three adapters
    "diagnose": "adamergex_pl.merging.diagnose_command:main",  # does the language gap transfer across tasks?
    "crossin": "adamergex_pl.crossin.command:main",  # `adamergex crossin build` writes a CrossIn mixture to JSONL
    "submit": "adamergex_pl.slurm.submit:main",  # sbatch jobs for any adamergex command
}
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _lightning_cli():
    """Build the LightningCLI subclass lazily: importing Lightning takes seconds."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
    from lightning.pytorch.utilities import rank_zero_info

    class AdaMergeXCLI(LightningCLI):
        """LightningCLI with the tokenizer linked to the base model and the run config given to snapshots."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.link_arguments("model.init_args.base_model", "data.init_args.tokenizer", apply_on="parse")

        def _parse_ckpt_path(self) -> None:
            # LightningCLI would replace model.init_args by the checkpoint's hyperparameters (a LoRA config
            # silently turning into (IA)³); the config stays what the user wrote, AdapterModule refuses a
            # checkpoint of another adapter naming both, and a missing or damaged file is one line.
            from adamergex_pl.training.checkpoint_io import check_checkpoint

            subcommand = self.config.get("subcommand")
            ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
            if ckpt_path and ckpt_path not in ("last", "best", "hpc"):
                check_checkpoint(ckpt_path)

        def before_instantiate_classes(self) -> None:
            # In a job from `adamergex submit`: output into the pinned run dir, fixed logger versions, and
            # `fit` resumes from the run dir's HPC checkpoint on a restart (adamergex_pl/slurm/pinning.py).
            from adamergex_pl.slurm.pinning import pin_config
            from adamergex_pl.slurm.run_env import pinned_run_dir, restart_count

            run_dir = pinned_run_dir()
            if run_dir is not None:
                resume = pin_config(self.config[self.subcommand], self.subcommand, run_dir)
                if resume is not None:
                    rank_zero_info(
                        f"adamergex: restart {restart_count()} of this job: resuming from {resume}"
                    )

        def instantiate_trainer(self, **kwargs):
            # In a job: the preemption-safe SlurmRequeue callback, and Lightning's own requeue handler off.
            from adamergex_pl.slurm.pinning import requeue_trainer_kwargs
            from adamergex_pl.slurm.run_env import pinned_run_dir

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

        def after_instantiate_classes(self) -> None:
            from adamergex_pl.training.adapter_snapshot import AdapterSnapshot

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


def _usage() -> str:
    extra = "".join(f"\n  adamergex {name} ..." for name in EXTRA_COMMANDS)
    return (
        "usage: adamergex {fit,validate,test,predict} --config CONFIG.yaml [--key value ...]"
        f"{extra}\n\nRun 'adamergex <command> --help' for the options of a command."
    )


def _quiet_lightning() -> None:
    """Drop two start-up messages that do not apply to adamergex runs.

    * the ``srun`` hint: on a machine with SLURM installed, Lightning warns in every process that is not a
      SLURM step, including the tests and ``--dry-run``; jobs from ``adamergex submit`` do use ``srun``;
    * the LitLogger advertisement printed by every Trainer, and the note that the default logger is a
      CSVLogger when tensorboard is not installed;
    * LightningCLI's warning when ``main(argv)`` is called in process while ``sys.argv`` holds something else.
    """
    warnings.filterwarnings("ignore", message="The `srun` command is available on your system")
    # without tensorboard installed, Lightning's default logger is the CSVLogger; that is what adamergex wants
    warnings.filterwarnings("ignore", message="Starting from v1.9.0, `tensorboardX` has been removed")
    # main(argv) is called in process by the pipeline and the tests, whose own sys.argv means nothing here
    warnings.filterwarnings(
        "ignore", message="LightningCLI's args parameter is intended to run from within Python"
    )

    class _DropTip(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "litlogger" not in record.getMessage()

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch"):
        logging.getLogger(name).addFilter(_DropTip())


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``adamergex`` console script."""
    from_sys_argv = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in EXTRA_COMMANDS:
            module_name, function_name = EXTRA_COMMANDS[argv[0]].split(":")
            command = getattr(importlib.import_module(module_name), function_name)
            return int(command(argv[1:]) or 0)
        if not argv or (argv[0] in ("-h", "--help") and len(argv) == 1):
            print(_usage())
            return 0 if argv else 2
        _quiet_lightning()
        _arm_requeue_signal()
        # LightningCLI reads sys.argv itself when given None, and warns when given both
        _lightning_cli()(None if from_sys_argv else argv)
        return 0
    except RequeueStop as stop:  # a run checkpointed for its requeue (adamergex_pl/slurm/requeue_callback.py)
        if stop.exit_code:  # not requeued: say how to resume (a successful requeue was logged already)
            print(f"adamergex: {stop.message()}", file=sys.stderr)
        return stop.exit_code
    except argparse.ArgumentError as err:
        command = argv[0] if argv and argv[0] in LIGHTNING_COMMANDS else "<command>"
        print(f"adamergex: error: {err}\n(run 'adamergex {command} --help' for the options)", file=sys.stderr)
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
    from adamergex_pl.slurm import preemption
    from adamergex_pl.slurm.run_env import pinned_run_dir

    if pinned_run_dir() is not None:
        preemption.arm(preemption.requeue_signal())


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
        reason = os_error_reason(cause)
        if reason is not None:
            filename = getattr(cause, "filename", None)
            where = f" {str(filename)!r}" if filename else ""
            return OutputNotWritableError(f"cannot write or read{where}: {reason[0]}; {reason[1]}")
    return None


if __name__ == "__main__":
    sys.exit(main())
