"""Import a script of ``benchmarks/`` (not a package) as a module, for the tests of its functions."""

import importlib.util
from pathlib import Path


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py``, freshly executed."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
