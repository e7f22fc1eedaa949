"""``volseg synth brain``: a multi-contrast head phantom whose contrasts are not a monotone map of
each other, with nested BraTS tumour labels, seeded per case, readable by ome-zarr-py and volseg."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import spearmanr
from typer.testing import CliRunner

from volseg.cli import app
from volseg.data.brain import CONTRASTS, TISSUES, head_mask, synth_brain
from volseg.errors import VolsegError

runner = CliRunner()


@pytest.fixture(scope="module")
def case():
    return synth_brain(48, seed=3)


def test_arrays_are_typed_and_in_range(case):
    for name in CONTRASTS:
        assert case[name].dtype == np.float32 and case[name].shape == (48, 48, 48)
        assert 0.0 <= float(case[name].min()) and float(case[name].max()) < 1.6
    assert case["tumour"].dtype == np.uint8 and set(np.unique(case["tumour"])) == {0, 1, 2, 3}
    for k in range(len(TISSUES)):
        assert (case["tissue"] == k).any(), TISSUES[k]


def test_contrasts_are_not_a_monotone_map_of_each_other(case):
    tissue = case["tissue"]
    means = {name: np.array([case[name][tissue == k].mean() for k in range(1, len(TISSUES))])
             for name in CONTRASTS}
    csf, white, oedema = (TISSUES.index(n) - 1 for n in ("csf", "white", "oedema"))
    assert means["t1"][csf] < means["t1"][white] and means["t2"][csf] > means["t2"][white]
    assert means["flair"][oedema] == means["flair"].max()          # oedema brightest in FLAIR
    assert means["flair"][csf] < means["flair"][white]              # CSF suppressed
    for a, b in (("t1", "t2"), ("t1", "flair"), ("t2", "flair")):
        order = np.argsort(means[a])
        steps = np.diff(means[b][order])
        assert (steps > 0.02).any() and (steps < -0.02).any(), (a, b)  # neither rising nor falling
    head = head_mask(tissue)
    rho = spearmanr(case["t1"][head], case["t2"][head]).statistic
    assert abs(rho) < 0.6


def test_tumour_labels_are_nested(case):
    labels = case["tumour"]
    core, tumour_core, whole = labels == 1, np.isin(labels, (1, 3)), labels > 0
    ball = ndimage.generate_binary_structure(3, 1)
    assert core.any() and (ndimage.binary_dilation(core, ball) <= tumour_core).all()
    assert (ndimage.binary_dilation(tumour_core, ball) <= whole).all()
    brain = np.isin(case["tissue"], [TISSUES.index(n) for n in ("grey", "white", "oedema", "enhancing",
                                                                 "necrosis")])
    assert (whole <= brain).all()


def test_bias_field_and_rician_noise(case):
    white = case["tissue"] == TISSUES.index("white")
    background = case["tissue"] == 0
    assert 0.02 < float(case["t1"][white].std()) < 0.2                # texture + bias + noise
    assert float(case["t1"][background].min()) >= 0.0                 # magnitude: never negative
    assert 0.02 < float(case["t1"][background].mean()) < 0.05         # Rician floor ~ sigma sqrt(pi/2)


def test_deterministic_by_seed_and_case():
    a, b = synth_brain(24, seed=1, case=2), synth_brain(24, seed=1, case=2)
    for name in ("t1", "t2", "flair", "tumour"):
        assert np.array_equal(a[name], b[name])
    assert not np.array_equal(a["tissue"], synth_brain(24, seed=1, case=3)["tissue"])
    assert not np.array_equal(a["tissue"], synth_brain(24, seed=2, case=2)["tissue"])


def _digest(path):
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_cli_writes_cases_readable_by_ome_zarr_and_volseg(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from volseg.io import find_labels, open_volume

    out = tmp_path / "brain.zarr"
    r = runner.invoke(app, ["synth", "brain", "-o", str(out), "--cases", "2", "--shape", "24x32x32",
                            "--seed", "4", "--json", str(tmp_path / "s.json"), "--quiet"])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["cases"] == [str(out / "case_000"), str(out / "case_001")]
    assert summary["contrasts"] == {"t1": ".", "t2": "target", "flair": "flair"}
    expected = synth_brain((24, 32, 32), seed=4, case=1)
    case = out / "case_001"
    for name, sub in summary["contrasts"].items():
        assert np.array_equal(np.asarray(open_volume(case / sub)), expected[name])
    assert find_labels(case) == case / "labels" / "tumour"
    assert np.array_equal(np.asarray(open_volume(case / "labels" / "tumour")), expected["tumour"])
    nodes = list(Reader(parse_url(str(case)))())
    shapes = {str(n.zarr).split(" ")[0].rsplit("/", 1)[-1]: [d.shape for d in n.data] for n in nodes}
    assert shapes["case_001"] == [(24, 32, 32)] and shapes["tumour"] == [(24, 32, 32)]
    # the same command again gives the same bytes; without --overwrite it is refused
    again = tmp_path / "again.zarr"
    runner.invoke(app, ["synth", "brain", "-o", str(again), "--cases", "2", "--shape", "24x32x32",
                        "--seed", "4", "--quiet"])
    assert _digest(again / "case_001" / "target") == _digest(out / "case_001" / "target")
    before = _digest(out)
    r = runner.invoke(app, ["synth", "brain", "-o", str(out), "--quiet"])
    assert r.exit_code == 2 and _digest(out) == before


@pytest.mark.parametrize("args,needle", [
    (["--cases", "0"], "--cases"),
    (["--shape", "8"], "--shape"),
    (["--shape", "big"], "--shape"),
])
def test_bad_options_exit_2_with_one_line(tmp_path, args, needle):
    out = tmp_path / "b.zarr"
    r = runner.invoke(app, ["synth", "brain", "-o", str(out), *args])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.stderr
    assert "Traceback" not in r.output and not out.exists()


def test_library_refuses_bad_cases(tmp_path):
    from volseg.data.brain import write_brain

    with pytest.raises(VolsegError, match="--cases"):
        write_brain(tmp_path / "b.zarr", cases=0)
    assert not (tmp_path / "b.zarr").exists()
