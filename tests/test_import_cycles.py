"""No import cycles between the project's modules.

Every ``.py`` file of the project's packages is parsed (not imported); each ``import`` and ``from ... import``
anywhere in it, at module level or inside a function, is an edge to the project module it names (relative imports
resolved, ``from package import module`` read as the module). Imports under ``if TYPE_CHECKING:`` never run and
are left out. A strongly connected component of more than one module is a cycle.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("derm_portal", "annotation", "inference", "reports")


def module_files(root: Path, packages) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under ``root``/``packages``."""
    files = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join(parts)] = path
    return files


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node of ``tree``, except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _known(name: str, modules) -> str | None:
    """The longest prefix of dotted ``name`` that is a project module (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in modules:
            return candidate
    return None


def import_graph(root: Path, packages) -> dict[str, set[str]]:
    """Module -> the project modules it imports (itself excluded)."""
    files = module_files(root, packages)
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = mod.split(".") if is_package else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module
                # "from pkg import name": the submodule pkg.name when it is one, else pkg itself
                targets = [f"{prefix}.{a.name}" for a in node.names] or [prefix]
            for t in targets:
                hit = _known(t, graph)
                if hit is not None and hit != mod:
                    graph[mod].add(hit)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return sorted(found)


def _describe(comp: list[str], graph) -> str:
    members = set(comp)
    edges = [f"    {m} -> {t}" for m in comp for t in sorted(graph[m] & members)]
    return " <-> ".join(comp) + "\n" + "\n".join(edges)


@functools.cache
def _project_graph() -> dict[str, set[str]]:
    return import_graph(ROOT, PACKAGES)


def test_project_has_no_import_cycles():
    graph = _project_graph()
    assert len(graph) > 50 and any(graph.values())  # the parse found the project and its imports
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(_describe(c, graph) for c in found)


def test_engine_has_no_import_cycles():
    """Named on its own: the engine (inference.ml) is free of cycles whatever the apps around it do."""
    graph = _project_graph()
    engine = {
        m: {t for t in ts if t.startswith("inference.ml")} for m, ts in graph.items() if m.startswith("inference.ml")
    }
    assert len(engine) > 10 and any(engine.values())
    assert cycles(engine) == []


def _package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_checker_finds_a_cycle_through_a_function_level_relative_import(tmp_path):
    _package(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from .sub import b\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/b.py": "import os\n\ndef f():\n    from ..a import thing\n    return thing\n",
            "pkg/sub/c.py": "from pkg.sub.b import f\n",  # imports into the cycle, not part of it
            "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n",
            "pkg/e.py": "from . import d\n",  # d -> e only for type checkers
        },
    )
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"}
    assert graph["pkg.sub.c"] == {"pkg.sub.b"} and graph["pkg.d"] == set() and graph["pkg.e"] == {"pkg.d"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_checker_finds_every_cycle_and_none_in_a_tree():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}) == [
        ["a", "b", "c"],
        ["d", "e"],
    ]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []
