"""Completion of block-wise outputs: what info shows, what readers refuse, set_complete."""

import json

import pytest

from volseg.errors import VolsegError
from volseg.io.completion import check_complete, completion, describe_completion, set_complete
from volseg.io.markers import BlockMarkers


def _output(path, total, prefix="c"):
    path.mkdir()
    (path / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
        "volseg": {"complete": False, "blocks_total": total, "blocks_unit": "chunks", "marker_prefix": prefix}}}))
    BlockMarkers(path).create()
    return path


def test_unfinished_then_complete(tmp_path):
    out = _output(tmp_path / "o.zarr", 3)
    BlockMarkers(out).mark((0, 0, 0))
    assert describe_completion(out) == "1 of 3 chunks written"
    with pytest.raises(VolsegError, match=r"o.zarr: 1 of 3 chunks written; finish it with the same command"):
        check_complete(None, tmp_path / "absent", out)
    set_complete(out, note="x")
    info = json.loads((out / "zarr.json").read_text())["attributes"]["volseg"]
    assert info["complete"] is True and info["note"] == "x" and info["blocks_total"] == 3
    assert completion(out) == {"complete": True, "done": 3, "total": 3, "unit": "chunks"}
    check_complete(out)
    plain = tmp_path / "plain.zarr"
    plain.mkdir()
    assert completion(plain) is None and describe_completion(plain) is None  # not block-wise
