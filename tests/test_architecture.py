"""The package's import graph follows the stage order, and has no cycle.

The graph is built from the source with ``ast`` (nothing is imported), function-level imports
included, with the installed names: ``tfdropblock.export`` is ``export/`` and
``tfdropblock.models`` is ``models/`` (pyproject's package-dir). ``from P import N`` depends on
the module ``P.N`` when there is one, else on ``P``; ``from tfdropblock.export import N`` of a
lazily exported name depends on the module that defines it (``_EXPORTS`` in
``export/__init__.py``). A submodule's implicit import of its parent package is not an edge
(every package whose ``__init__`` imports its submodules would otherwise be a cycle).

:data:`STAGES` is the order data flows in: a module's stage is read from its path, and a
module imports only modules of its own stage or of earlier ones. docs/ARCHITECTURE.md lists
the same stages, with the same paths, in the same order (checked below).
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"tfdropblock": "tfdropblock", "tfdropblock.export": "export",
            "tfdropblock.models": "models"}

# (stage, the paths that hold its modules), in the order data flows. A module belongs to the
# stage of the longest path that holds it.
STAGES = (
    ("layers", ("tfdropblock/", "models/")),
    ("core", ("export/core/",)),
    ("model", ("export/model/",)),
    ("run", ("export/run/",)),
    ("checks", ("export/checks/",)),
    ("formats", ("export/formats/",)),
    ("pipeline", ("export/pipeline/",)),
    ("report", ("export/report/",)),
    ("execution", ("export/execution/",)),
    ("api", ("export/__init__.py",)),
    ("cli", ("tfdropblock/cli.py", "tfdropblock/__main__.py")),
)

# {(importer, imported): why} for imports allowed against the order. None survive.
EXCEPTIONS: dict = {}


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


def lazy_exports(root=ROOT):
    """{name: module} of ``tfdropblock.export``'s lazily imported public names."""
    tree = ast.parse((root / "export" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS"
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def imported_modules(name, path, modules, lazy=None):
    """The package modules that module ``name`` imports, anywhere in its source."""
    lazy = lazy or {}
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
            for alias in node.names:
                full = f"{source}.{alias.name}"
                if full in modules:
                    targets.append(full)
                elif source == "tfdropblock.export" and alias.name in lazy:
                    targets.append(lazy[alias.name])
                else:
                    targets.append(source)
    found = set()
    for target in targets:
        while target and target not in modules:  # an object inside a module: the module
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def import_graph(root=ROOT):
    modules = package_modules(root)
    lazy = lazy_exports(root) if (root / "export" / "__init__.py").exists() else {}
    return {name: imported_modules(name, path, modules, lazy) for name, path in modules.items()}


def stage_of(path, root=ROOT):
    """The stage of the module at ``path``: that of the longest stage path holding it."""
    rel = path.relative_to(root).as_posix()
    best = None
    for index, (stage, paths) in enumerate(STAGES):
        for prefix in paths:
            if (rel == prefix or (prefix.endswith("/") and rel.startswith(prefix))) and (
                    best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def backward_imports(root=ROOT):
    """``(importer, imported, importer's stage, imported's stage)`` of every import of a later
    stage, and ``(module, None, None, None)`` of every module whose path has no stage."""
    modules = package_modules(root)
    graph = import_graph(root)
    stages = {name: stage_of(path, root) for name, path in modules.items()}
    found = [(name, None, None, None) for name, stage in stages.items() if stage is None]
    for name, targets in graph.items():
        for target in sorted(targets):
            if stages[name] is None or stages[target] is None:
                continue
            if stages[target] > stages[name] and (name, target) not in EXCEPTIONS:
                found.append((name, target, STAGES[stages[name]][0],
                              STAGES[stages[target]][0]))
    return found


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


def test_every_import_goes_to_an_earlier_stage_or_the_same():
    found = backward_imports()
    assert not found, "imports against the stage order:\n" + "\n".join(
        f"{m}: its path is in no stage of STAGES" if t is None else
        f"{m} ({s}) imports {t} ({ts})" for m, t, s, ts in found)


def test_the_exceptions_are_still_needed():
    graph = import_graph()
    stale = [pair for pair in EXCEPTIONS if pair[1] not in graph.get(pair[0], ())]
    assert not stale, f"exceptions no import needs any more: {stale}"


def test_every_export_module_sits_in_a_stage_folder():
    """The stage is readable from the path: no module directly in export/ but its __init__."""
    loose = sorted(p.name for p in (ROOT / "export").glob("*.py") if p.name != "__init__.py")
    assert not loose, f"modules in export/ outside any stage folder: {loose}"
    folders = {p.name for p in (ROOT / "export").iterdir()
               if p.is_dir() and (p / "__init__.py").exists()}
    staged = {path.split("/")[1] for _, paths in STAGES for path in paths
              if path.startswith("export/") and path.endswith("/")}
    assert folders == staged, (folders, staged)


def _planted_tree(tmp_path):
    for folder in PACKAGES.values():
        shutil.copytree(ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize("where", ["top", "function", "lazy"])
def test_a_planted_backward_import_is_found(tmp_path, where):
    root = _planted_tree(tmp_path)
    assert backward_imports(root) == []
    target = root / "export" / "model" / "loading.py"
    line = {"top": "from tfdropblock.export.report.report import Report\n",
            "function": "def _later():\n    from ..report import table\n",
            "lazy": "def _later():\n    from tfdropblock.export import verify\n"}[where]
    target.write_text(target.read_text() + "\n\n" + line)
    imported = {"top": "tfdropblock.export.report.report",
                "function": "tfdropblock.export.report.table",
                "lazy": "tfdropblock.export.execution.verifier"}[where]
    assert backward_imports(root) == [
        ("tfdropblock.export.model.loading", imported, "model",
         {"lazy": "execution"}.get(where, "report"))]


def test_a_module_outside_the_stage_folders_is_found(tmp_path):
    root = _planted_tree(tmp_path)
    (root / "export" / "loose.py").write_text("")
    assert ("tfdropblock.export.loose", None, None, None) in backward_imports(root)


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


# -- docs/ARCHITECTURE.md against the same list ---------------------------------------------

DOC = ROOT / "docs" / "ARCHITECTURE.md"
# A stage in the doc: "1. **core** (`export/core/`): ..." -- its name and every path in the
# parentheses.
_DOC_STAGE = re.compile(r"^\d+\. \*\*([a-z_]+)\*\* \(((?:`[^`]+`(?:, )?)+)\)", re.MULTILINE)
SCREEN = 30  # lines: what "fits one screen" means for the add-a-format section


def doc_stages(text):
    return tuple((name, tuple(re.findall(r"`([^`]+)`", paths)))
                 for name, paths in _DOC_STAGE.findall(text))


def section(text, title):
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    return match.group(1).strip("\n") if match else None


def test_the_doc_lists_the_stages_in_order_with_their_paths():
    assert doc_stages(DOC.read_text()) == STAGES


def test_a_stage_the_code_lacks_or_the_doc_lacks_fails(tmp_path):
    text = DOC.read_text()
    first = next(_DOC_STAGE.finditer(text))
    assert doc_stages(text.replace(first.group(0), "", 1)) != STAGES
    extra = text.replace(first.group(0), first.group(0) + "\n9. **plugins** (`export/x/`)", 1)
    assert doc_stages(extra) != STAGES


def test_every_module_path_the_doc_names_exists():
    named = set(re.findall(r"`((?:export|tfdropblock|models|tests)/[\w/]+\.py)`",
                           DOC.read_text()))
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert named and not missing, f"docs/ARCHITECTURE.md names missing modules: {missing}"


def test_how_to_add_a_format_fits_one_screen():
    body = section(DOC.read_text(), "How to add a format")
    assert body is not None
    lines = body.splitlines()
    assert len(lines) <= SCREEN and max(map(len, lines)) <= 100, (len(lines), SCREEN)


def _must_implement(cls):
    """The methods of ``cls`` whose body raises NotImplementedError: what a subclass must
    provide."""
    import inspect
    import textwrap

    out = []
    for name, member in vars(cls).items():
        if callable(member) and not name.startswith("_"):
            source = textwrap.dedent(inspect.getsource(member))
            if "raise NotImplementedError" in source:
                out.append(name)
    return out


def test_how_to_add_a_format_names_what_the_code_asks():
    # The section is what the next format follows: the methods it says to implement are the
    # ones Format leaves unimplemented, every other name it gives exists where it says.
    from tfdropblock.export.formats import base, keras_exports, quantized
    from tfdropblock.export.run import registry

    body = section(DOC.read_text(), "How to add a format")
    implementing = body[body.index("implementing"):body.index("from those")]
    asked = set(re.findall(r"`(\w+)\(", implementing))
    assert asked == set(_must_implement(base.Format)), (asked, _must_implement(base.Format))
    optional = re.search(r"\(optionally (.*?)\)", body, re.S).group(1)
    for name in re.findall(r"`(\w+)`", optional):
        assert hasattr(base.Format, name), name
    assert hasattr(keras_exports, "KerasExporter") and hasattr(registry, "register_keras_exporter")
    assert hasattr(registry, "register") and hasattr(quantized, "register_quantizer")
    quantizer_section = section(DOC.read_text(), "How to add a quantized mode")
    listed = re.search(r"subclasses `Quantizer` \((.*?)\)", quantizer_section, re.S).group(1)
    required = [n for n in re.findall(r"`(\w+)`", listed.split("optionally")[0])]
    assert set(required) == set(_must_implement(quantized.Quantizer)), required
