"""The house rules that keep the layout readable (CONTRIBUTING.md, "Layout"), checked on the source tree."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "adamergex_pl"


TOPS = ("adamergex_pl", "callbacks", "data_modules")


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules its import statements run, at any depth (function-level imports count).

    ``from a.b import c`` runs ``a.b.c`` when that is a module, else ``a.b``'s ``__init__``; importing ``a.b.c``
    also runs the ``__init__`` of every package on the way that the importer is not itself inside.
    """
    paths = {_module_name(path): path for top in TOPS for path in (REPO_ROOT / top).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
        edges = set()
        for target in targets:
            parts = target.split(".")
            for depth in range(1, len(parts) + 1):
                module = ".".join(parts[:depth])
                inside = name == module or name.startswith(module + ".")
                if module in paths and not inside:
                    edges.add(module)
        graph[name] = edges - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_root_holds_only_entry_points():
    modules = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert len(modules) <= 4, modules


def test_no_module_imports_itself_back():
    assert not _cycles(_import_graph())


def test_the_cycle_finder_sees_a_cycle_through_a_function_level_import_and_a_package_init():
    graph = _import_graph()
    # what a lazy import of the CLI from a module under a re-exporting package would add
    graph["adamergex_pl.cli"] |= {"adamergex_pl.merging.methods"}
    graph["adamergex_pl.merging.methods"] |= {"adamergex_pl.cli"}
    assert ["adamergex_pl.cli", "adamergex_pl.merging.methods"] in _cycles(graph)


def test_every_consumer_reads_the_one_method_registry(capsys):
    from adamergex_pl.merging.command import merge
    from adamergex_pl.merging.methods import METHODS, merge_method_names
    from adamergex_pl.pipeline.spec import PipelineSpec

    with pytest.raises(
        SystemExit
    ):  # `adamergex merge --method magic` names every merge method of the registry
        raise SystemExit(merge("t", "g", "o", method="magic"))
    assert ", ".join(merge_method_names()) in capsys.readouterr().err
    from adamergex_pl.errors import InvalidValueError
    from adamergex_pl.merging.merge_module import MergeModule

    with pytest.raises(InvalidValueError, match=", ".join(METHODS)):
        MergeModule("builtin:tiny-llama", "x", {"en": "y"}, methods=["magic"])
    with pytest.raises(InvalidValueError, match=", ".join(METHODS)):
        PipelineSpec.__post_init__(type("S", (), {"methods": ["magic"]})())


def test_both_modules_take_the_shared_base_model_options_with_the_same_defaults():
    from adamergex_pl.merging.merge_module import MergeModule
    from adamergex_pl.training.adapter_module import AdapterModule
    from adamergex_pl.training.base_model import BASE_MODEL_KEYS, BaseModelOptions

    shared = inspect.signature(BaseModelOptions.from_args).parameters
    assert tuple(shared) == BASE_MODEL_KEYS
    for module in (AdapterModule, MergeModule):
        params = inspect.signature(module.__init__).parameters
        for key in BASE_MODEL_KEYS:
            assert key in params, (module.__name__, key)
            assert params[key].default == shared[key].default, (module.__name__, key)
