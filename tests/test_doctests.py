"""Every ``Example:`` block in the package runs as a doctest, so the documented API stays true."""

from __future__ import annotations

import doctest
import importlib

import pytest
from conftest import REPO_ROOT

MODULES = sorted(
    ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
    for top in ("adamergex_pl", "callbacks", "data_modules")
    for path in (REPO_ROOT / top).rglob("*.py")
    if path.name != "__main__.py"
)


@pytest.mark.usefixtures("clean_requeue_signal")  # the requeue signal's example arms SIGUSR1
@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name: str, monkeypatch) -> None:
    monkeypatch.delenv("ADAMERGEX_RUN_DIR", raising=False)
    module = importlib.import_module(module_name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.failed == 0, f"{result.failed} failing example(s) in {module_name}"
