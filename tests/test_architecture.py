"""The package's import graph has no cycle, function-level imports included.

The graph is built from the source with ``ast`` (nothing is imported), with the installed names:
``tfdropblock.export`` is ``export/`` and ``tfdropblock.models`` is ``models/`` (pyproject's
package-dir). ``from P import N`` depends on the module ``P.N`` when there is one, else on
``P``; a submodule's implicit import of its parent package is not an edge (every package whose
``__init__`` imports its submodules would otherwise be a cycle).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"tfdropblock": "tfdropblock", "tfdropblock.export": "export",
            "tfdropblock.models": "models"}


def package_modules(root=ROOT):
    """{module name: source file} of every module the wheel installs."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def imported_modules(name, path, modules):
    """The package modules that module ``name`` imports, anywhere in its source."""
    base = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base.split(".")[:len(base.split(".")) - node.level + 1]
                source = ".".join(parent + ([node.module] if node.module else []))
            else:
                source = node.module
            targets += [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                        for a in node.names]
    found = set()
    for target in targets:
        while target and target not in modules:  # an object inside a module: the module
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def import_graph(root=ROOT):
    modules = package_modules(root)
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph):
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "tfdropblock.export.formats.base" in graph  # the mapping was resolved
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(
        " <-> ".join(c) + " (" + ", ".join(f"{m} imports {sorted(graph[m] & set(c))}"
                                           for m in c) + ")" for c in found)


@pytest.mark.parametrize("where", ["top", "function"])
def test_a_new_cycle_is_found_at_module_or_function_level(tmp_path, where):
    for package, folder in PACKAGES.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "export" / "a.py").write_text("from tfdropblock.export.b import thing\n")
    body = ("from tfdropblock.export import a\n" if where == "top"
            else "def later():\n    from . import a\n")  # relative, inside a function
    (tmp_path / "export" / "b.py").write_text(body)
    assert cycles(import_graph(tmp_path)) == [["tfdropblock.export.a", "tfdropblock.export.b"]]
