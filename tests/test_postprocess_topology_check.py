"""volseg.postprocess.topology_check: where a repaired mask still holds tunnels or cavities, chunk by chunk."""

import numpy as np
from typer.testing import CliRunner

from cli_checks import one_error_line, tree
from volseg.cli import app
from volseg.io import write_volume
from volseg.postprocess.topology_check import block_topology

runner = CliRunner()


def test_a_block_is_listed_only_with_tunnels_or_cavities():
    ring = np.zeros((5, 7, 7), bool)
    ring[2, 1:6, 1:6] = True
    ring[2, 3, 3] = False                                    # a square ring: one tunnel
    assert block_topology(ring, (10, 20, 30)) == {"start": [10, 20, 30], "stop": [15, 27, 37], "euler": 0,
                                                  "b0": 1, "b1": 1, "b2": 0}
    cube = np.zeros((6, 6, 6), bool)
    cube[1:5, 1:5, 1:5] = True
    assert block_topology(cube, (0, 0, 0)) is None
    cube[2, 2, 2] = False                                    # a cavity
    assert block_topology(cube, (0, 0, 0))["b2"] == 1


def test_topology_report_lists_the_blocks_with_tunnels_and_cavities(tmp_path):
    import json

    vol = np.zeros((16, 16, 24), np.uint8)
    vol[4, 1:7, 1:7] = 1
    vol[4, 3, 4] = 0                                          # a tunnel in chunk (0, 0, 0)
    vol[9:14, 9:14, 17:22] = 1
    vol[11, 11, 19] = 0                                       # a cavity in chunk (1, 1, 2)
    vol[2:6, 10:14, 10:14] = 1                                # a plain cube: not listed
    write_volume(tmp_path / "v.zarr", vol, chunks=8)
    result = runner.invoke(app, ["postprocess", str(tmp_path / "v.zarr"), "-o", str(tmp_path / "o.zarr"),
                                 "--min-size", "0", "--fill-holes", "0", "--open", "0", "--close", "0",
                                 "--chunks", "8", "--topology-report",
                                 str(tmp_path / "t.json"), "--scheduler", "synchronous", "--json", "-", "--quiet"])
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["block"] == [8, 8, 8] and report["blocks_checked"] == 12
    assert report["blocks"] == [
        {"start": [0, 0, 0], "stop": [8, 8, 8], "euler": 0, "b0": 1, "b1": 1, "b2": 0},
        {"start": [8, 8, 16], "stop": [16, 16, 24], "euler": 2, "b0": 1, "b1": 0, "b2": 1}]
    summary = json.loads(result.stdout)["topology_report"]
    assert summary == {"path": str(tmp_path / "t.json"), "blocks_with_tunnels": 1, "blocks_with_cavities": 1,
                       "tunnels": 1, "cavities": 1}
    # plugging repairs the tunnel; the report says so
    result = runner.invoke(app, ["postprocess", str(tmp_path / "v.zarr"), "-o", str(tmp_path / "p.zarr"),
                                 "--min-size", "0", "--fill-holes", "0", "--open", "0", "--close", "0",
                                 "--plug-holes", "--chunks", "8",
                                 "--topology-report", str(tmp_path / "p.json"), "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert [b["start"] for b in json.loads((tmp_path / "p.json").read_text())["blocks"]] == [[8, 8, 16]]


def test_topology_report_onto_the_input_or_output_is_refused(tmp_path):
    vol = np.zeros((16, 16, 16), np.uint8)
    vol[4:12, 4:12, 6:8] = 1
    write_volume(tmp_path / "v.zarr", vol, chunks=8)
    before = tree(tmp_path / "v.zarr")
    for target in (tmp_path / "v.zarr", tmp_path / "o.zarr", tmp_path / "v.zarr" / "t.json"):
        one_error_line(runner.invoke(app, ["postprocess", str(tmp_path / "v.zarr"), "-o", str(tmp_path / "o.zarr"),
                                           "--topology-report", str(target), "--quiet"]), "--topology-report")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["v.zarr"]
    assert tree(tmp_path / "v.zarr") == before
