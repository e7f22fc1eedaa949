"""Architecture rules from SPEC section 6, checked on the real import graph."""

import subprocess
import sys
import time

import pytest


def _imports_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("module,forbidden", [
    ("volseg.geometry", {"torch", "zarr", "dask", "volseg.io"}),
    ("volseg.metrics", {"torch", "volseg.models", "volseg.cli"}),
    ("volseg.io", {"torch", "volseg.models", "volseg.cli"}),
    ("volseg.cli", {"torch", "dask", "zarr", "skimage", "scipy"}),
])
def test_module_does_not_import(module, forbidden):
    loaded = _imports_after(module)
    assert not (forbidden & loaded), f"{module} imports {sorted(forbidden & loaded)}"


def test_models_know_no_storage():
    loaded = _imports_after("volseg.models")
    assert not {"zarr", "volseg.io", "volseg.cli"} & loaded


def test_help_is_fast():
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "volseg", "--help"], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout
    assert elapsed < 3.0, f"volseg --help took {elapsed:.2f}s"


def _import_graph() -> dict[str, set[str]]:
    """volseg module -> volseg modules it imports (top-level and lazy imports alike), from the AST."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "volseg"
    modules = {}
    for file in root.rglob("*.py"):
        parts = file.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = file
    graph: dict[str, set[str]] = {}
    for name, file in modules.items():
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(file.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                subs = [f"{base}.{a.name}" for a in node.names]
                # `from pkg import submodule` depends on the submodule only; other names on pkg
                targets = subs + ([base] if any(t not in modules for t in subs) else [])
            for t in targets:
                while t and t not in modules:  # `from volseg.io import x` -> volseg.io
                    t = t.rpartition(".")[0]
                if t and t != name and t != "volseg":
                    edges.add(t)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
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
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles_inside_volseg():
    """Every import inside volseg, lazy ones included, points one way: no module imports one that
    (directly or through others) imports it back. A package's __init__ re-exporting its modules
    counts as importing them."""
    graph = _import_graph()
    assert "volseg.inference.predict" in graph and graph["volseg.inference.predict"]
    cycles = _cycles(graph)
    assert not cycles, f"import cycles: {cycles}"


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("module", ["volseg.io.markers", "volseg.io.resume", "volseg.io.remote_output",
                                    "volseg.io.completion", "volseg.io.boxes"])
def test_resume_and_box_code_in_io_imports_only_io_and_errors(module):
    """The resumable-output code (markers, resume, remote outputs, completion) and the box reader
    sit at the bottom: any command may use them, and they know nothing above storage."""
    edges = _import_graph()[module]
    assert edges <= {"volseg.errors"} | {m for m in edges if m.startswith("volseg.io")}, sorted(edges)
