"""The ``Example:`` blocks of the SLURM package and of the strategy table are run, so they stay true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import adamergex_pl.slurm as slurm_package

MODULES = sorted(info.name for info in pkgutil.iter_modules(slurm_package.__path__, "adamergex_pl.slurm."))
MODULES += ["adamergex_pl.training.strategy_support"]


@pytest.mark.usefixtures("clean_requeue_signal")  # preemption's example arms SIGUSR1
@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name: str, monkeypatch) -> None:
    monkeypatch.delenv("ADAMERGEX_RUN_DIR", raising=False)
    module = importlib.import_module(module_name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} failing example(s) in {module_name}"
