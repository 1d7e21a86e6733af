"""The ``Example:`` blocks of the metrics package are run, so the documented API stays true."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import adamergex_pl.metrics as metrics_package

MODULES = sorted(
    info.name for info in pkgutil.iter_modules(metrics_package.__path__, "adamergex_pl.metrics.")
)


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name: str) -> None:
    module = importlib.import_module(module_name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} failing example(s) in {module_name}"
