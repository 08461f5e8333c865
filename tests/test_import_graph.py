"""The import graph of the package has no cycle: no two modules of facewarden import each
other, directly or through others (also not under TYPE_CHECKING or inside a function).
import-linter's contracts (pyproject.toml) check the layers and sibling packages; this test
checks every module against every other."""

from __future__ import annotations

import tomllib
from pathlib import Path

import grimp

import facewarden


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for a, b in (("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a"), ("p.c", "p.d")):
        graph.add_import(importer=a, imported=b)
    assert import_cycles(graph) == [["p.a", "p.b", "p.c"]]


def test_no_import_cycle_in_facewarden() -> None:
    graph = grimp.build_graph("facewarden", cache_dir=None)
    assert import_cycles(graph) == []


def test_cli_and_web_name_no_adapter_even_dynamically() -> None:
    """import-linter sees ``import`` statements only; a name in a string (``Lazy``,
    ``importlib.import_module``) would get an adapter into the CLI or the API past the
    contract "cli and web import no adapter directly". No module of either names one."""
    package = Path(facewarden.__file__).parent
    offenders = [
        str(path.relative_to(package))
        for layer in ("cli", "web")
        for path in sorted((package / layer).rglob("*.py"))
        if "facewarden.adapters" in path.read_text()
    ]
    assert offenders == []


def test_the_adapter_contract_is_enforced_for_cli_and_web() -> None:
    """The contract exists, names both interfaces and forbids direct imports (a contract
    loosened to warnings or to one layer would let the CLI build index filters again)."""
    config = tomllib.loads((Path(facewarden.__file__).parents[2] / "pyproject.toml").read_text())
    contracts = {c["name"]: c for c in config["tool"]["importlinter"]["contracts"]}
    contract = contracts["cli and web import no adapter directly (only through services)"]
    assert contract["type"] == "forbidden"
    assert set(contract["source_modules"]) == {"facewarden.cli", "facewarden.web"}
    assert contract["forbidden_modules"] == ["facewarden.adapters"]
    assert "ignore_imports" not in contract
    graph = grimp.build_graph("facewarden", cache_dir=None)
    direct = [
        (importer, imported)
        for importer in graph.modules
        if importer.startswith(("facewarden.cli", "facewarden.web"))
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported.startswith("facewarden.adapters")
    ]
    assert direct == []
