"""The shape the settings redesign promised, checked on the code itself (AST), so it stays true.

* no library function outside ``volseg/cli`` takes more than 12 parameters; ``predict`` at most 8;
* no CLI command function is longer than 45 lines (options live in bundles and module-level types);
* the execution options are parsed at one boundary (``Execution.parse``), by one executor module.
"""

import ast
from pathlib import Path

import volseg

ROOT = Path(volseg.__file__).parent


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"))


def _params(fn: ast.FunctionDef) -> int:
    a = fn.args
    n = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) + bool(a.vararg) + bool(a.kwarg)
    return n - bool(a.args and a.args[0].arg in ("self", "cls"))


def test_no_library_function_takes_more_than_12_parameters():
    many = [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({_params(node)})"
            for path, tree in _modules() if "cli" not in path.relative_to(ROOT).parts
            for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and _params(node) > 12]
    assert not many, many


def test_predict_takes_at_most_8_parameters():
    tree = ast.parse((ROOT / "inference" / "predict.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "predict")
    assert _params(fn) <= 8


def test_cli_commands_are_at_most_45_lines():
    long = []
    for path, tree in _modules():
        if "cli" not in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and any(
                    isinstance(d, ast.Call) and getattr(d.func, "attr", "") == "command" for d in node.decorator_list):
                lines = node.end_lineno - min(d.lineno for d in node.decorator_list) + 1
                if lines > 45:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_execution_options_are_parsed_at_one_boundary():
    calls = [f"{path.relative_to(ROOT)}:{node.lineno}" for path, tree in _modules() for node in ast.walk(tree)
             if isinstance(node, ast.Call)
             and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("parse_scheduler", "parse_part")]
    assert calls and all(c.startswith("parallel.py:") for c in calls), calls
    pools = [f"{path.relative_to(ROOT)}" for path, tree in _modules()
             if any(isinstance(n, ast.Name) and n.id in ("ProcessPoolExecutor", "LocalCluster", "Client")
                    for n in ast.walk(tree))]
    assert set(pools) <= {"parallel.py"}, pools
