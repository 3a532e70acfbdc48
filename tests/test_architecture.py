"""The folders are the architecture: these checks keep them so.

The import graph is read from the source with :mod:`ast` (lazy imports inside functions
and ``TYPE_CHECKING`` blocks included: a lazy import is still a dependency), so the rules
hold for code that never runs in the suite too.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "coordinator", "worker", "shared")  # each may import those after it
MAX_MODULES = 12
DRIVERS = ("pymongo", "gridfs", "bson")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imported(tree: ast.AST, name: str, is_package: bool) -> Iterator[tuple[str, list[str]]]:
    """(module, names) for every import of a module, relative imports resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, [alias.name for alias in node.names]


def graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports. ``from pkg import mod`` depends on mod;
    ``from pkg import name`` on pkg (its ``__init__``)."""
    edges: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps = set()
        for base, names in imported(ast.parse(path.read_text()), name, path.name == "__init__.py"):
            subs = {f"{base}.{n}" for n in names} & set(mods)
            deps |= subs
            if len(subs) < len(names) or not names:
                deps.add(base)
        edges[name] = {d for d in deps if d in mods} - {name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected group found by depth-first search."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, path)
        path.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return found


def layer(module: str) -> int:
    return PACKAGES.index(module.split(".")[0])


def back_edges(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, deps in edges.items() for b in deps if layer(b) < layer(a))


def test_no_import_cycle_lazy_imports_included() -> None:
    assert cycles(graph(modules())) == []


def test_layers_bench_coordinator_worker_shared() -> None:
    assert back_edges(graph(modules())) == []


def test_only_the_store_imports_the_driver() -> None:
    offenders = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text())
        bases = {base for base, _ in imported(tree, name, path.name == "__init__.py")}
        if any(b.split(".")[0] in DRIVERS for b in bases) and not name.startswith("shared.store"):
            offenders.append(name)
    assert offenders == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_folder_over_twelve_modules(package: str) -> None:
    for folder in [ROOT / package, *(p for p in (ROOT / package).rglob("*") if p.is_dir())]:
        count = len([p for p in folder.glob("*.py") if p.name != "__init__.py"])
        assert count <= MAX_MODULES, f"{folder.relative_to(ROOT)} holds {count} modules"


def test_no_module_imports_another_modules_private_name() -> None:
    mods = modules()
    offenders = []
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in mods and node.module != name:
                private = [
                    a.name
                    for a in node.names
                    if a.name.startswith("_")
                    and not a.name.endswith("__")
                    and f"{node.module}.{a.name}" not in mods
                ]
                if private:
                    offenders.append(f"{name}: from {node.module} import {private}")
    assert offenders == []


# --- the checks can fail: each rule on a small made-up tree --------------------------------


def test_cycle_finder_sees_a_lazy_cycle() -> None:
    edges = {"shared.a": {"shared.b"}, "shared.b": {"shared.c"}, "shared.c": {"shared.a"}}
    assert cycles(edges) == [["shared.a", "shared.b", "shared.c", "shared.a"]]
    assert cycles({"shared.a": {"shared.b"}, "shared.b": set()}) == []


def test_back_edge_is_reported() -> None:
    edges = {"shared.x": {"worker.y"}, "worker.y": {"shared.z"}, "shared.z": set()}
    assert back_edges(edges) == [("shared.x", "worker.y")]


def test_graph_reads_lazy_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "shared"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from shared.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("from ..a import f\n")
    mods = {
        ".".join(p.relative_to(tmp_path).with_suffix("").parts).removesuffix(".__init__"): p
        for p in pkg.rglob("*.py")
    }
    edges = graph(mods)
    assert edges["shared.a"] == {"shared.sub.b"}
    assert edges["shared.sub.b"] == {"shared.sub.c"}
    assert edges["shared.sub.c"] == {"shared.a"}
    assert cycles(edges) == [["shared.a", "shared.sub.b", "shared.sub.c", "shared.a"]]


# --- docs/architecture.md stays true ----------------------------------------------------------


def doc_names(text: str) -> set[str]:
    """Fully qualified names the map cites: `shared.x.y`, `coordinator.x`, `worker.x.f`."""
    found = set()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", text):
        for token in re.findall(r"\b(?:shared|coordinator|worker)(?:\.\w+)+", span):
            found.add(token)
    return found


def resolves(name: str) -> bool:
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_architecture_doc_cites_only_names_that_exist() -> None:
    names = doc_names((ROOT / "docs" / "architecture.md").read_text())
    assert len(names) > 30, "the map names the functions on a trial's path"
    assert sorted(n for n in names if not resolves(n)) == []
    assert not resolves("shared.store.queue.no_such_function")


def test_architecture_doc_describes_every_package() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    packages = {module_name(p.parent) for p in ROOT.glob("*/**/__init__.py")}
    packages = {p for p in packages if p.split(".")[0] in PACKAGES}
    cited = set(re.findall(r"`([\w/]+)/`", text))
    missing = sorted(p for p in packages if not any(p.replace(".", "/").endswith(c) for c in cited))
    assert missing == []
