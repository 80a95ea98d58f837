"""The package's shape: every module imports on its own in a fresh interpreter, there is no import cycle (lazy
imports inside functions included) and no module is longer than 350 lines."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"spc_fast": "spc_fast", "kernels": "spc_fast.kernels", "bench": "spc_fast.bench",
           "training": "spc_fast.training", "export": "spc_fast.export"}
MAX_LINES = 350


def _modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its body (top level or inside functions), with the packages
    whose ``__init__`` that import runs; a package's ``__init__`` has edges to the children it imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # importing a module runs its packages' __init__ too: those are edges as well (the root's is empty)
            for module in [target, *_packages_of(target)]:
                own_ancestor = module == name or name.startswith(module + ".")
                if module and module != "spc_fast" and not own_ancestor:
                    found.add(module)
    return found


def _packages_of(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_modules_are_short():
    lengths = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules().values()}
    assert {path: n for path, n in lengths.items() if n > MAX_LINES} == {}


def _dependency_order(graph: dict[str, set[str]]) -> list[str]:
    order, seen = [], set()

    def visit(v: str) -> None:
        if v not in seen:
            seen.add(v)
            for w in sorted(graph[v]):
                visit(w)
            order.append(v)

    for v in sorted(graph):
        visit(v)
    return order


def test_every_module_imports_in_dependency_order():
    """A fresh interpreter imports each module after the modules it depends on: a module that only imports after
    some unrelated module was loaded first, or not at all, fails here."""
    modules = _modules()
    order = _dependency_order({name: _imports(name, path, modules) for name, path in modules.items()})
    order = [name for name in order if not name.endswith("__main__")]  # runs the command line when imported
    script = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", script, *order], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
