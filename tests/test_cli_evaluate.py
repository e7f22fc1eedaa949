"""`volseg evaluate` through the CLI: table, JSON, preview, exit 2 with one error line."""

import json
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from cli_checks import one_error_line
from volseg.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    z, y, x = np.mgrid[:20, :24, :22]
    image = (np.sin(x / 3.0) + np.cos(y / 4.0) + z / 20.0).astype(np.float32)
    truth = (image > 0.8).astype(np.uint8)
    truth[:, :2] = 2
    paths = {"image": root / "image.npy", "truth": root / "truth.npy", "prob": root / "prob.npy",
             "bad": root / "bad.npy", "short": root / "short.npy", "clean": root / "clean.npy"}
    np.save(paths["image"], image)
    np.save(paths["truth"], truth)
    prob = np.zeros(image.shape, np.float32)
    prob[..., 1:] = image[..., :-1] > 0.8          # shifted by one voxel along x
    np.save(paths["prob"], prob)
    bad = truth.copy()
    bad[0, 5, 5] = 9
    np.save(paths["bad"], bad)
    np.save(paths["short"], truth[:-1])
    np.save(paths["clean"], image + 0.05)
    return paths


def test_json_has_metric_names_as_keys(volumes, tmp_path):
    result = runner.invoke(app, ["evaluate", str(volumes["prob"]), str(volumes["truth"]), "--json", "-",
                                 "--block", "8", "--quiet", "--scheduler", "synchronous"])
    assert result.exit_code == 0, result.stderr
    values = json.loads(result.stdout)
    assert list(values) == ["dice", "surface_dice", "voi", "voi_split", "voi_merge", "betti", "topology",
                            "topology_counts", "topology_f1", "score"]
    assert values["voi"] == pytest.approx(values["voi_split"] + values["voi_merge"], abs=1e-12)
    assert len(values["topology_f1"]) == 3
    assert set(values["betti"]) == {"pred", "truth"} and len(values["betti"]["pred"]) == 3
    assert set(values["topology_counts"]) == {"matched", "pred", "truth", "tiles"}
    assert values["topology_counts"]["tiles"] == [2, 2, 2]
    assert all(isinstance(values[k], float) for k in values if k not in ("betti", "topology_counts", "topology_f1"))
    assert values["surface_dice"] == 1.0  # a one-voxel shift at tolerance 2


def test_betti_matching_json_and_table(volumes):
    args = ["evaluate", str(volumes["prob"]), str(volumes["truth"]), "--metrics", "betti_matching,score",
            "--scheduler", "synchronous"]
    result = runner.invoke(app, args + ["--json", "-", "--quiet"])
    assert result.exit_code == 0, result.stderr
    values = json.loads(result.stdout)
    assert list(values) == ["betti_matching", "score"]
    bm = values["betti_matching"]
    assert set(bm) == {"matched", "pred", "truth", "f1", "topology", "score"}
    assert 0.0 <= bm["topology"] <= 1.0 and len(bm["matched"]) == 3
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and "betti_matching" in table.stdout and "matched" in table.stdout


def test_betti_matching_refuses_a_volume_over_320_cubed(tmp_path):
    big = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.uint8, shape=(330, 320, 320))
    del big
    result = runner.invoke(app, ["evaluate", str(tmp_path / "big.npy"), str(tmp_path / "big.npy"),
                                 "--metrics", "betti_matching", "--quiet"])
    one_error_line(result, "--metrics", "320^3", "'topology'")


def test_table_preview_and_intensity_defaults(volumes, tmp_path):
    png = tmp_path / "preview.png"
    result = runner.invoke(app, ["evaluate", str(volumes["prob"]), str(volumes["truth"]), "--image",
                                 str(volumes["image"]), "--preview", str(png), "--slice", "3,4,5",
                                 "--metrics", "dice,score"])
    assert result.exit_code == 0, result.stderr
    assert "dice" in result.stdout and "score" in result.stdout and png.stat().st_size > 0
    result = runner.invoke(app, ["evaluate", str(volumes["prob"]), str(volumes["truth"]), "--metrics",
                                 "voi,topology", "--block", "8", "--scheduler", "synchronous"])
    assert result.exit_code == 0, result.stderr
    for row in ("voi_split", "voi_merge", "topology_f1"):       # the per-dimension report
        assert row in result.stdout, result.stdout
    assert "b0 " in result.stdout and "b1 " in result.stdout and "b2 " in result.stdout
    result = runner.invoke(app, ["evaluate", str(volumes["clean"]), str(volumes["image"]), "--json",
                                 str(tmp_path / "i.json")])
    assert result.exit_code == 0, result.stderr
    assert set(json.loads((tmp_path / "i.json").read_text())) == {"psnr", "ssim"}


@pytest.mark.parametrize("args,needles", [
    (["prob", "short"], ["short.npy", "shape"]),
    (["prob", "bad"], ["bad.npy", "value 9", "0, 1 and 2"]),
    (["prob", "truth", "--metrics", "dice,hausdorff"], ["--metrics", "'hausdorff'"]),
    (["prob", "truth", "--tolerance", "-1"], ["--tolerance"]),
    (["prob", "truth", "--preview", "x.png", "--slice", "1,2"], ["--slice"]),
])
def test_bad_inputs_exit_2(volumes, args, needles):
    argv = ["evaluate"] + [str(volumes[a]) if a in volumes else a for a in args]
    one_error_line(runner.invoke(app, argv), *needles)


def test_real_subprocess(volumes):
    out = subprocess.run([sys.executable, "-m", "volseg", "evaluate", str(volumes["prob"]),
                          str(volumes["bad"]), "--metrics", "dice"], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr
    out = subprocess.run([sys.executable, "-m", "volseg", "evaluate", str(volumes["prob"]),
                          str(volumes["truth"]), "--metrics", "dice", "--json", "-"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert 0 < json.loads(out.stdout)["dice"] < 1
