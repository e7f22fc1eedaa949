"""The ``>>>`` examples in the docstrings of the library functions behind the commands (and of
the io helpers that show the storage conventions) run and stay true. predict's and export's
examples need a trained run and are skipped in their docstrings; predict's settings run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "volseg.io.prepare",             # volseg prepare
    "volseg.io.info",                # volseg info
    "volseg.data.synth",             # volseg synth
    "volseg.data.patchify",          # volseg patchify
    "volseg.training.trainer",       # volseg train
    "volseg.inference.stitch",       # volseg stitch
    "volseg.inference.settings",     # volseg predict (settings, --config)
    "volseg.inference.tta",          # volseg predict --tta / --tta-rotate
    "volseg.inference.ensemble_mean",  # volseg predict RUN1 RUN2 --ensemble-mean
    "volseg.data.patchify_request",  # volseg patchify (modes)
    "volseg.parallel",               # --scheduler/--workers/--part
    "volseg.postprocess.run",        # volseg postprocess
    "volseg.metrics.evaluate",       # volseg evaluate
    "volseg.models.export",          # volseg export
    "volseg.io.markers",
    "volseg.io.boxes",
    "volseg.metrics.intensity",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples write relative paths
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             report=True, verbose=False)
    examples = sum(len(t.examples) for t in doctest.DocTestFinder().find(module))
    assert examples > 0, f"{name} has no >>> examples"  # export's are all skipped: attempted 0
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see stdout)"
