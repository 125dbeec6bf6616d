"""The ``operators`` package's import graph, read from the source with ``ast`` (no bpy).

A module that imports a sibling inside a function is dodging a cycle; a cycle means one
Generate wanders back and forth between modules. Neither may come back.
"""

from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "operators"
MODULES = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}


def _siblings(node: ast.ImportFrom) -> set[str]:
    """The sibling modules an ``from . import x`` / ``from .x import y`` names (level 1 only)."""
    if node.level != 1:
        return set()
    if node.module:
        return {node.module.split(".")[0]} & MODULES
    return {alias.name for alias in node.names} & MODULES


def _imports(tree: ast.Module) -> tuple[set[str], list[tuple[str, int]]]:
    """(siblings imported at module level, (sibling, line) imported inside a function)."""
    module_level: set[str] = set()
    in_functions: list[tuple[str, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                for name in _siblings(child):
                    if in_function:
                        in_functions.append((name, child.lineno))
                    else:
                        module_level.add(name)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return module_level, in_functions


def _graph() -> tuple[dict[str, set[str]], dict[str, list[tuple[str, int]]]]:
    graph, late = {}, {}
    for name in sorted(MODULES):
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        graph[name], late[name] = _imports(tree)
    return graph, late


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a path of module names, or [] (depth-first search)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = "open"
        path.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                return [*path[path.index(target):], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[name] = "done"
        path.pop()
        return []

    for name in sorted(graph):
        if name not in state:
            found = visit(name)
            if found:
                return found
    return []


def test_the_graph_is_read_from_the_sources():
    graph, _late = _graph()
    # Known edges, read by eye from the sources: the reader must see them, or it proves nothing.
    assert "addon" in graph["controller"] and "media" in graph["job_setup"]
    assert "cut_video" in graph["cut_audio"]  # imported under ``if __package__:`` at module level


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_operators_import_each_other_without_a_cycle():
    graph, _late = _graph()
    assert _cycle(graph) == []


def test_no_operators_module_imports_a_sibling_inside_a_function():
    late = _graph()[1]
    assert {name: found for name, found in late.items() if found} == {}
