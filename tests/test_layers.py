"""The house rules hold: the layers import one way (`.importlinter`, run by `lint-imports`), no
two taskscope modules import each other (directly or round a loop), and importing taskscope
loads neither Parsl nor Dask. The layers are described in docs/contributing.md."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import grimp

import taskscope

REPO = Path(__file__).resolve().parents[1]

#: the adapters that exist to import Parsl or Dask (the demo runs a Parsl workflow)
ADAPTERS = ("taskscope.parsl", "taskscope.demo", "taskscope.fleet.dask")


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint_imports), "--config", str(REPO / ".importlinter"), "--no-cache"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every group of modules that import each other round a loop (strongly connected
    components of more than one module), imports inside functions included."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycles():
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    assert import_cycles(grimp.build_graph("taskscope")) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for module in ("a", "a.one", "a.two", "a.three"):
        graph.add_module(module)
    graph.add_import(importer="a.one", imported="a.two")
    graph.add_import(importer="a.two", imported="a.one")
    graph.add_import(importer="a.three", imported="a.one")
    assert import_cycles(graph) == [["a.one", "a.two"]]


def test_importing_taskscope_loads_neither_parsl_nor_dask():
    modules = [info.name for info in pkgutil.walk_packages(taskscope.__path__, "taskscope.")
               if not info.name.startswith(ADAPTERS)]
    assert "taskscope.store" in modules and "taskscope.web.app" in modules
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'parsl', 'dask', 'distributed'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
