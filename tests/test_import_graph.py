"""The import graph of ``confman/``: no cycles, and the layers point one way.

Every module under ``confman/`` is parsed with ``ast`` (nothing is imported) and every
``import``/``from ... import`` node anywhere in it counts: at module level, under
``if TYPE_CHECKING:``, inside functions. A cycle that only a type checker or a late call
walks is still a cycle for a reader, and the next refactoring tends to make it a real one.

Relative imports are resolved against the importing module. ``from package import name``
is an edge to ``package.name`` when that is a module, otherwise to ``package`` itself. The
implicit import of a parent package (``import a.b`` runs ``a/__init__.py``) is not an edge,
as in other import-graph tools: otherwise every package whose ``__init__`` re-exports its
contents would be one big cycle.

Run as a script (``.venv/bin/python tests/test_import_graph.py``) to print the
package-level graph (raft, sim, node, api, client, verify, cli, dev*), any cycles and the
largest modules::

    .venv/bin/python tests/test_import_graph.py            # package graph, cycles, sizes
    .venv/bin/python tests/test_import_graph.py --modules  # every module edge as well
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "confman"
SOURCE = ROOT / PACKAGE


@dataclass(frozen=True, slots=True)
class Edge:
    """One import statement of ``source`` that reaches ``target`` (both dotted module names)."""

    source: str
    target: str
    line: int
    #: "module", "type-only" (under ``if TYPE_CHECKING:``) or "function".
    kind: str

    def describe(self) -> str:
        where = "" if self.kind == "module" else f", {self.kind}"
        return f"{self.source} -> {self.target} (line {self.line}{where})"


def module_files(source: Path = SOURCE) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package."""
    modules: dict[str, Path] = {}
    for path in sorted(source.rglob("*.py")):
        parts = list(path.relative_to(source.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, str]]:
    """Every import node of ``tree`` with where it sits (see ``Edge.kind``)."""
    found: list[tuple[ast.Import | ast.ImportFrom, str]] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            place(child, kind)

    def place(node: ast.AST, kind: str) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, kind))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            visit(node, "function")
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            inner = "type-only" if kind == "module" else kind
            for stmt in node.body:
                place(stmt, inner)
            for stmt in node.orelse:
                place(stmt, kind)
        else:
            visit(node, kind)

    visit(tree, "module")
    return found


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_edges(modules: dict[str, Path] | None = None) -> list[Edge]:
    """Every edge between modules of the package, one per imported name's module."""
    modules = module_files() if modules is None else modules
    edges: set[Edge] = set()
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, kind in _imports(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".")
                    drop = node.level - 1 if is_package else node.level
                    if drop:
                        base = base[:-drop]
                    full = ".".join([*base, node.module] if node.module else base)
                else:
                    full = node.module or ""
                for alias in node.names:
                    sub = f"{full}.{alias.name}"
                    targets.append(sub if sub in modules else full)
            for target in targets:
                if target != PACKAGE and not target.startswith(PACKAGE + "."):
                    continue
                owner = _owner(target, modules)
                if owner is not None and owner != name:
                    edges.add(Edge(name, owner, node.lineno, kind))
    return sorted(edges, key=lambda e: (e.source, e.target, e.line))


def _graph(edges: list[Edge]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        graph[edge.source].add(edge.target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components of more than one node (each one a knot of cycles), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})

    def connect(start: str) -> None:
        # Iterative, so that a long chain cannot exhaust Python's recursion limit.
        nonlocal counter
        work: list[tuple[str, list[str]]] = [(start, sorted(graph.get(start, ())))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, pending = work[-1]
            if pending:
                nxt = pending.pop(0)
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, sorted(graph.get(nxt, ()))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in nodes:
        if node not in index:
            connect(node)
    return sorted(found)


def shortest_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One shortest cycle through the first node of ``component``, as a closed path."""
    members = set(component)
    start = component[0]
    previous: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph.get(node, ())):
                if nxt not in members:
                    continue
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if nxt not in seen:
                    seen.add(nxt)
                    previous[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {component}")  # pragma: no cover


def describe_cycles(edges: list[Edge]) -> list[str]:
    """One paragraph per knot of cycles: a shortest cycle, then every edge inside the knot."""
    graph = _graph(edges)
    paragraphs: list[str] = []
    for component in strongly_connected(graph):
        members = set(component)
        cycle = " -> ".join(shortest_cycle(graph, component))
        inside = [e for e in edges if e.source in members and e.target in members]
        lines = [f"cycle: {cycle}", f"  modules: {', '.join(component)}"]
        lines += [f"  {edge.describe()}" for edge in inside]
        paragraphs.append("\n".join(lines))
    return paragraphs


def layer(module: str) -> str:
    """The package-level node of ``module``: raft, sim, node, api, client, verify, cli, ..."""
    parts = module.split(".")
    if len(parts) == 1:
        return PACKAGE
    return parts[1]


def layer_edges(edges: list[Edge]) -> dict[tuple[str, str], int]:
    """(importing layer, imported layer) -> how many module edges, layers apart only."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for edge in edges:
        pair = (layer(edge.source), layer(edge.target))
        if pair[0] != pair[1]:
            counts[pair] += 1
    return dict(sorted(counts.items()))


#: (importing layer, layers it must not import, why).
LAYERING: list[tuple[str, frozenset[str], str]] = [
    (
        "raft",
        frozenset(),  # filled in below: everything but raft itself
        "the Raft core imports nothing of confman outside confman.raft",
    ),
    (
        "client",
        frozenset(),  # filled in below: everything but client and the bare package
        "the client imports nothing of the server",
    ),
    ("node", frozenset({"api"}), "the node does not import the HTTP API"),
    ("api", frozenset({"cli"}), "the HTTP API does not import the command line"),
]


def layering_violations(edges: list[Edge]) -> list[str]:
    everything = {layer(m) for m in module_files()}
    found: list[str] = []
    for source, forbidden, why in LAYERING:
        # ``confman/__init__.py`` holds only ``__version__``: the client may read it.
        allowed = {source, PACKAGE} if source == "client" else {source}
        banned = forbidden or (everything - allowed)
        for edge in edges:
            if layer(edge.source) == source and layer(edge.target) in banned:
                found.append(f"{why}: {edge.describe()}")
    return found


def test_parser_counts_every_kind_of_import(tmp_path: Path) -> None:
    """The graph sees module-level, relative, type-only and function-level imports."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import b\n")
    (pkg / "sub" / "a.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from .b import thing\n"
        "if TYPE_CHECKING:\n"
        "    from confman.c import C\n"
        "def f():\n"
        "    import confman.sub.b\n"
    )
    (pkg / "sub" / "b.py").write_text("from ..c import C\n")
    (pkg / "c.py").write_text("def g():\n    from .sub import a\n")
    edges = import_edges(module_files(pkg))
    seen = {(e.source, e.target, e.kind) for e in edges}
    assert seen == {
        ("confman.sub", "confman.sub.b", "module"),
        ("confman.sub.a", "confman.sub.b", "module"),
        ("confman.sub.a", "confman.c", "type-only"),
        ("confman.sub.a", "confman.sub.b", "function"),
        ("confman.sub.b", "confman.c", "module"),
        ("confman.c", "confman.sub.a", "function"),
    }
    assert strongly_connected(_graph(edges)) == [["confman.c", "confman.sub.a", "confman.sub.b"]]


def test_no_import_cycles() -> None:
    """No cycle among the modules of confman/, counting type-only and late imports."""
    cycles = describe_cycles(import_edges())
    assert not cycles, "import cycles in confman/:\n" + "\n".join(cycles)


def test_layers_point_one_way() -> None:
    """raft alone; the client apart from the server; node below api; api below cli."""
    violations = layering_violations(import_edges())
    assert not violations, "layering broken:\n" + "\n".join(violations)


def main(argv: list[str]) -> int:
    edges = import_edges()
    modules = module_files()
    print(f"confman/: {len(modules)} modules, {len(edges)} import edges")
    print("\npackage-level graph (importer -> imported: module edges)")
    by_source: dict[str, list[str]] = defaultdict(list)
    for (source, target), count in layer_edges(edges).items():
        by_source[source].append(f"{target} ({count})")
    for source in sorted({layer(m) for m in modules}):
        print(f"  {source:12} -> {', '.join(by_source.get(source, [])) or '(nothing)'}")
    if "--modules" in argv:
        print("\nmodule edges")
        for edge in edges:
            print(f"  {edge.describe()}")
    cycles = describe_cycles(edges)
    print(f"\nimport cycles: {len(cycles)}")
    for paragraph in cycles:
        print(paragraph)
    violations = layering_violations(edges)
    print(f"\nlayering violations: {len(violations)}")
    for line in violations:
        print(f"  {line}")
    sizes = sorted(
        (
            (len(path.read_text(encoding="utf-8").splitlines()), name)
            for name, path in modules.items()
        ),
        reverse=True,
    )
    print("\nlargest modules (lines)")
    for lines, name in sizes[:10]:
        print(f"  {lines:5d}  {name}")
    return 1 if cycles or violations else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
