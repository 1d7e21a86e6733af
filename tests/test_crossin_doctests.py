"""The ``Example:`` blocks of the CrossIn / CrossX modules are run, so the documented API stays true."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "adamergex_pl.crossin.crossx_evaluator",
    "adamergex_pl.crossin.mixture",
    "adamergex_pl.crossin.modes",
    "adamergex_pl.crossin.parallel",
    "data_modules.instruction_format",
]


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name: str) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.attempted > 0 and result.failed == 0, f"{result.failed} failing example(s) in {module_name}"
