"""The house rules that keep the layout readable (CONTRIBUTING.md, "Layout"), checked on the source tree."""

from __future__ import annotations

import ast
import inspect
import itertools
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "adamergex_pl"


def _imports(path: Path) -> set[str]:
    """Every module a file imports (at any depth: lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def _owner(path: Path) -> str:
    """``adamergex_pl.<wing>`` for a file of a wing, else its top-level package."""
    parts = path.relative_to(REPO_ROOT).parts
    return ".".join(parts[:2]) if parts[0] == "adamergex_pl" and len(parts) > 2 else parts[0]


def _package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for top in ("adamergex_pl", "callbacks", "data_modules"):
        for path in (REPO_ROOT / top).rglob("*.py"):
            owner = _owner(path)
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] not in ("adamergex_pl", "callbacks", "data_modules"):
                    continue
                target = ".".join(parts[:2]) if parts[0] == "adamergex_pl" and len(parts) > 1 else parts[0]
                if target != owner:
                    graph.setdefault(owner, set()).add(target)
    return graph


def test_the_package_root_holds_only_entry_points():
    modules = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(modules) <= 4, modules


def test_no_two_packages_import_each_other():
    graph = _package_graph()
    cycles = [
        (a, b) for a, b in itertools.combinations(sorted(graph), 2) if b in graph[a] and a in graph.get(b, ())
    ]
    assert not cycles, cycles
    wings = {owner for owner in graph if owner.startswith("adamergex_pl")}
    for wing in wings:  # the wings never import the DataModules or the callbacks (they build on the wings)
        assert not graph[wing] & {"data_modules", "callbacks"}, (wing, graph[wing])


def test_old_module_paths_still_import_the_moved_modules():
    import importlib

    from adamergex_pl.moved_modules import MOVED

    for old, new in MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new)


def test_every_consumer_reads_the_one_method_registry():
    from adamergex_pl.merging.command import build_parser
    from adamergex_pl.merging.methods import METHODS, merge_method_names
    from adamergex_pl.pipeline.spec import PipelineSpec

    method_action = next(a for a in build_parser()._actions if a.dest == "method")
    assert tuple(method_action.choices) == merge_method_names()
    from adamergex_pl.errors import InvalidValueError
    from adamergex_pl.merging.merge_module import MergeModule

    with pytest.raises(InvalidValueError, match=", ".join(METHODS)):
        MergeModule("builtin:tiny-llama", "x", {"en": "y"}, methods=["magic"])
    with pytest.raises(InvalidValueError, match=", ".join(METHODS)):
        PipelineSpec.__post_init__(type("S", (), {"methods": ["magic"]})())


def test_both_modules_take_the_shared_base_model_options_with_the_same_defaults():
    from adamergex_pl.merging.merge_module import MergeModule
    from adamergex_pl.training.adapter_module import AdapterModule
    from adamergex_pl.training.base_options import BASE_MODEL_KEYS, BaseModelOptions

    shared = inspect.signature(BaseModelOptions.from_args).parameters
    assert tuple(shared) == BASE_MODEL_KEYS
    for module in (AdapterModule, MergeModule):
        params = inspect.signature(module.__init__).parameters
        for key in BASE_MODEL_KEYS:
            assert key in params, (module.__name__, key)
            assert params[key].default == shared[key].default, (module.__name__, key)
