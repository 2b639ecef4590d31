"""The import graph of the three packages, read from the source: it has no circle, the core
imports neither torch nor fastapi at module level, and imports go one way (core <- baseline,
core <- server).

Every ``import`` and ``from ... import`` counts, at module level or inside a function (a lazy
import that dodges a circle at run time is still a circle in the design). Relative imports are
resolved against the importing module, and a name taken from a package's ``__init__`` counts as
an import of the module that defines it, so a package that re-exports its modules is no circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Import name -> source folder (the baseline and the server are installed under other names).
PACKAGES = {"c2seg_kit": ROOT / "c2seg_kit", "c2seg_baseline": ROOT / "baseline", "c2seg_server": ROOT / "server"}
CORE_FORBIDDEN = ("torch", "fastapi")


def _module_files() -> dict[str, Path]:
    """Every module of the three packages by its dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for top, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if "migrations" in parts:  # alembic's scripts, loaded by file path
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((top, *parts))] = path
    return found


MODULES = _module_files()
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), filename=str(path)) for name, path in MODULES.items()}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _base(module: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module if _is_package(module) else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _known(name: str) -> str | None:
    """The longest prefix of ``name`` that is one of our modules (None: outside the packages)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(tree: ast.AST, module_level_only: bool = False):
    """Import nodes of a module; with ``module_level_only``, none inside a function body."""
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if module_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child
            stack.append(child)


def _defining_module(package: str, name: str, seen: frozenset = frozenset()) -> str:
    """Where ``from package import name`` really comes from: a submodule of that name, or the
    module the package's ``__init__`` took the name from (followed through further packages)."""
    if f"{package}.{name}" in MODULES:
        return f"{package}.{name}"
    if package in seen or not _is_package(package):
        return package
    for node in _imports(TREES[package], module_level_only=True):
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            source = _known(_base(package, node))
            if source is None:
                return package
            original = next(a.name for a in node.names if (a.asname or a.name) == name)
            if _is_package(source) and source != package:
                return _defining_module(source, original, seen | {package})
            return source
    return package


def import_edges(module: str, module_level_only: bool = False) -> set[str]:
    """The modules of the three packages that ``module`` imports."""
    edges: set[str] = set()
    for node in _imports(TREES[module], module_level_only):
        if isinstance(node, ast.Import):
            targets = [_known(a.name) for a in node.names]
        else:
            base = _known(_base(module, node))
            targets = [] if base is None else [_defining_module(base, a.name) if _is_package(base) else base
                                               for a in node.names]
        edges.update(t for t in targets if t is not None and t != module)
    return edges


def external_imports(module: str, module_level_only: bool) -> set[str]:
    """Top-level names of the packages outside ours that ``module`` imports."""
    names: set[str] = set()
    for node in _imports(TREES[module], module_level_only):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_covers_the_three_packages():
    # A sanity check of the reader: the graph is read from real files and holds real edges.
    assert {"c2seg_kit", "c2seg_baseline", "c2seg_server"} <= set(MODULES)
    assert "c2seg_kit.classes" in import_edges("c2seg_kit.metrics")
    assert "c2seg_server.admin_db" in import_edges("c2seg_server.cli")


def test_find_cycle_names_the_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circle_anywhere():
    graph = {module: import_edges(module) for module in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.split(".")[0] == "c2seg_kit"))
def test_core_never_imports_torch_or_fastapi_at_module_level(module):
    heavy = external_imports(module, module_level_only=True) & set(CORE_FORBIDDEN)
    assert not heavy, f"{module} imports {', '.join(sorted(heavy))} at module level"


def test_imports_go_one_way():
    # core <- baseline, core <- server: the core names neither, and they do not name each other.
    allowed = {"c2seg_kit": {"c2seg_kit"}, "c2seg_baseline": {"c2seg_kit", "c2seg_baseline"},
               "c2seg_server": {"c2seg_kit", "c2seg_server"}}
    wrong = sorted(f"{module} -> {target}" for module in MODULES for target in import_edges(module)
                   if target.split(".")[0] not in allowed[module.split(".")[0]])
    assert not wrong, "imports against the direction core <- baseline, core <- server: " + "; ".join(wrong)


def test_no_two_modules_of_the_core_share_a_file_name():
    # Two scoring.py in one package read alike in tracebacks and imports: each name says what it does.
    names: dict[str, list[str]] = {}
    for module, path in MODULES.items():
        if module.split(".")[0] == "c2seg_kit" and path.name != "__init__.py":
            names.setdefault(path.name, []).append(module)
    assert {name: found for name, found in names.items() if len(found) > 1} == {}


def test_the_core_top_level_is_grouped_by_stage():
    # The folder tree tells the pipeline's story: readers, prepare, synth, submission, h5safe, client and
    # cli are subpackages; only the few shared tables and helpers stand beside them.
    top = sorted(p.name for p in (ROOT / "c2seg_kit").glob("*.py") if p.name not in {"__init__.py", "__main__.py"})
    assert len(top) <= 15, top
    for stage in ("io", "prepare", "synth", "submission", "h5safe", "client", "cli"):
        assert (ROOT / "c2seg_kit" / stage / "__init__.py").is_file(), stage


def test_no_test_module_imports_another():
    # Helpers shared by several test files live in support modules (tests/*_support.py and the like):
    # importing a test module runs its fixtures and parametrisations in another file's collection.
    test_modules = {p.stem for p in (ROOT / "tests").glob("test_*.py")}
    wrong = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            wrong += [f"{path.name} imports {n}" for n in names if n.split(".")[0] in test_modules]
    assert not wrong, "; ".join(wrong)


#: The server's lower layers (server/__init__.py describes them all): each imports nothing above it.
SERVER_SCORING = {"scoring", "workers", "public_units"}
SERVER_DATABASE = {"models", "db", "crud", "stored", "phases", "ladder", "public_units", "security", "config"}


@pytest.mark.parametrize("layer,allowed", [
    (SERVER_SCORING, SERVER_SCORING),
    (SERVER_DATABASE, SERVER_DATABASE),
], ids=["scoring", "database"])
def test_the_servers_lower_layers_import_nothing_above_them(layer, allowed):
    wrong = sorted(f"{m} -> {t[13:]}" for m in (f"c2seg_server.{n}" for n in layer) for t in import_edges(m)
                   if t.startswith("c2seg_server.") and t[13:] not in allowed)
    assert not wrong, "; ".join(wrong)


def test_routes_are_imported_by_the_app_alone_and_reach_the_upload_through_its_service():
    # A request goes down: routes -> services -> scoring and the database. No service imports a
    # route, and the upload route hands the file to submit_service rather than to the scoring
    # children, the admission's slots or the stored basis itself.
    routes = {m for m in MODULES if m.startswith("c2seg_server.routes_") or m == "c2seg_server.pages"}
    wrong = sorted(f"{m} -> {t}" for m in MODULES for t in import_edges(m) & routes
                   if m not in routes and m != "c2seg_server.main")
    assert not wrong, "; ".join(wrong)
    below = {f"c2seg_server.{n}" for n in ("workers", "scoring", "admission", "stored")}
    assert not import_edges("c2seg_server.routes_submissions") & below
    assert "c2seg_server.submit_service" in import_edges("c2seg_server.routes_submissions")
