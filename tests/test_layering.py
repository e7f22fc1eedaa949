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
