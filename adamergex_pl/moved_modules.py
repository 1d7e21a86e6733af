"""Old import paths of modules that moved into the package's wings, kept working for users' YAML and code.

Before the package was split into wings, ``adamergex_pl.adapter_module.AdapterModule`` and
``adamergex_pl.merge_module.MergeModule`` were valid ``class_path`` values, and
``adamergex_pl.resumable_csv_logger.ResumableCSVLogger`` was written into pinned SLURM configs. Importing an old
name gives the module at its new place (the same module object, so classes compare equal).

Example:
    >>> import adamergex_pl.adapter_module as old
    >>> import adamergex_pl.training.adapter_module as new
    >>> old is new
    True
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "adamergex_pl.adapter_module": "adamergex_pl.training.adapter_module",
    "adamergex_pl.adapter_spec": "adamergex_pl.training.adapter_spec",
    "adamergex_pl.base_model": "adamergex_pl.training.base_model",
    "adamergex_pl.optim": "adamergex_pl.training.optim",
    "adamergex_pl.peft_model": "adamergex_pl.training.peft_model",
    "adamergex_pl.strategy_support": "adamergex_pl.training.strategy_support",
    "adamergex_pl.snapshots": "adamergex_pl.training.snapshots",
    "adamergex_pl.builtin_models": "adamergex_pl.assets.builtin",
    "adamergex_pl.choice_evaluator": "adamergex_pl.evaluation.choice_evaluator",
    "adamergex_pl.generation_evaluator": "adamergex_pl.evaluation.generation_evaluator",
    "adamergex_pl.option_scoring": "adamergex_pl.evaluation.option_scoring",
    "adamergex_pl.shared_prompt_scoring": "adamergex_pl.evaluation.shared_prompt_scoring",
    "adamergex_pl.generation": "adamergex_pl.evaluation.generation",
    "adamergex_pl.results_table": "adamergex_pl.results.tables",
    "adamergex_pl.merge_module": "adamergex_pl.merging.merge_module",
    "adamergex_pl.merge_results": "adamergex_pl.merging.merge_results",
    "adamergex_pl.resumable_csv_logger": "adamergex_pl.slurm.resumable_csv_logger",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module name to the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        """Nothing to run: the module was executed at its new place (the import system files it under the old
        name in ``sys.modules`` too)."""


def install() -> None:
    """Register the finder once (``adamergex_pl/__init__.py`` does on import)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
