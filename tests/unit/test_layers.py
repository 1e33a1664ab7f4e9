"""vdcos's packages form layers with no cycles (DESIGN.md, principle 14): an import may only run
to a package of the same layer or a lower one, and no two packages may import each other, even
through others. Read from the source with ast: nothing is imported."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "vdcos"

# Top first. A newcomer's package lands in a layer here, or this test fails until it does.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli", "dashboard"),
    ("apiserver",),
    ("scheduler", "controllers", "planner"),
    ("migration", "lifecycle", "vswitch", "storagepool", "nodeagent", "host", "images"),
    ("projects", "metrics", "events"),
    ("state", "model", "errors", "v1", "process", "reconcile", "security", "logs"),
)
LAYER_OF = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}

Edge = tuple[str, str, str]  # (importer, imported, "file:line")


def package_of(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def edges(root: Path = ROOT) -> list[Edge]:
    out: list[Edge] = []
    for path in sorted(root.rglob("*.py")):
        src = package_of(path, root)
        if src == "__init__":
            continue
        rel = path.relative_to(root).with_suffix("").parts
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolved against the importing module's package
                    base = list(rel[:-1])[: len(rel) - node.level]
                    names = [".".join(["vdcos", *base, *([node.module] if node.module else [])])]
                elif node.module:
                    names = [node.module]
            for name in names:
                parts = name.split(".")
                if len(parts) >= 2 and parts[0] == "vdcos" and parts[1] != src:
                    out.append((src, parts[1], f"{path.relative_to(root.parent)}:{node.lineno}"))
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_package_has_a_layer() -> None:
    packages = {package_of(p) for p in ROOT.rglob("*.py")} - {"__init__"}
    assert sorted(packages - set(LAYER_OF)) == []


def test_no_import_runs_up_a_layer() -> None:
    upward = sorted(f"{a} -> {b} ({where})" for a, b, where in edges()
                    if a in LAYER_OF and b in LAYER_OF and LAYER_OF[b] < LAYER_OF[a])
    assert upward == []


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b, _ in edges():
        graph[a].add(b)
    assert cycles(graph) == []


@pytest.mark.parametrize("graph,expected", [
    ({"a": {"b"}, "b": {"a"}}, [["a", "b"]]),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"b"}, "b": {"c"}}, []),
], ids=["pair", "ring of three", "chain"])
def test_cycles_are_found(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert cycles(graph) == expected


def test_an_upward_import_is_seen(tmp_path: Path) -> None:
    """The reader itself: a model module that imports the scheduler is an edge model -> scheduler."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "x.py").write_text("from vdcos.scheduler.core import schedule\nfrom . import y\n")
    got = [(a, b) for a, b, _ in edges(tmp_path)]
    assert got == [("model", "scheduler")]
