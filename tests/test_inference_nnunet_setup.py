"""An nnU-Net folder's checks before anything is written (:mod:`volseg.inference.nnunet_setup`).

Bad folders, options, channels and spacings through the real CLI (one ``error:`` line, exit 2,
nothing written, inputs unchanged); the settings file, ``--ignore-spacing`` and a crop that
nnU-Net pads past the volume's faces. Folders are made by nnU-Net's trainer (tests/nnunet_folder.py).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="nnunetv2 (the oracle) is in the dev extra: "
                                       "pip install -e '.[dev]' torch==2.13.0")

from cli_checks import one_error_line, tree  # noqa: E402
from nnunet_folder import dataset_for, make_folder, plans_for, rewrite  # noqa: E402
from test_inference_nnunet_pass import _one_command, cli, ok, read, write  # noqa: E402,F401
from test_nnunet_oracle import reference, tiles  # noqa: E402


# ------------------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def bad(tmp_path_factory, make_run):
    """A CT folder, variants of it, a 2-channel folder, volumes and a volseg run."""
    root = tmp_path_factory.mktemp("bad")
    folder = make_folder(root / "m", plans_for("CTNormalization", patch=(16, 16, 16)), dataset_for(("fibre",)))
    no_plans = shutil.copytree(folder, root / "noplans" / folder.name)
    (no_plans / "plans.json").unlink()
    mednext = shutil.copytree(folder, root / "mednext" / folder.name)
    rewrite(mednext / "fold_0" / "checkpoint_final.pth", trainer_name="nnUNetTrainerMedNeXtNoSuch")
    rewrite(mednext / "fold_1" / "checkpoint_final.pth", trainer_name="nnUNetTrainerMedNeXtNoSuch")
    custom = shutil.copytree(folder, root / "custom" / folder.name)  # a trainer volseg does not know,
    for fold in ("fold_0", "fold_1"):                                  # whose network is not the plans'
        import torch

        weights = torch.load(custom / fold / "checkpoint_final.pth", weights_only=False)["network_weights"]
        weights.pop(sorted(weights)[-1])
        rewrite(custom / fold / "checkpoint_final.pth", trainer_name="MyLabTrainerOwnNet", network_weights=weights)
    two = make_folder(root / "two", plans_for("CTNormalization", patch=(16, 16, 16), channels=2),
                      dataset_for(("fibre",), channels=2))
    rng = np.random.default_rng(0)
    data = np.zeros((40, 40, 40), np.float32)
    data[5:30, 5:30, 5:30] = rng.normal(size=(25, 25, 25))
    return {"folder": folder, "noplans": no_plans, "mednext": mednext, "custom": custom, "two": two,
            "vol": write(root / "vol.zarr", data), "coarse": write(root / "coarse.zarr", data, spacing=(2.0, 1.0, 1.0)),
            "run": make_run(root / "run")}


BAD = [  # (arguments with {names} from the fixture, what the error line holds)
    (["{noplans}", "{vol}"], ["plans.json", "missing"]),
    (["{folder}", "{vol}", "--folds", "0,7"], ["fold_7", "fold 7", "0, 1"]),
    (["{mednext}", "{vol}"], ["nnUNetTrainerMedNeXtNoSuch", "ONNX"]),
    (["{custom}", "{vol}"], ["MyLabTrainerOwnNet", "1 missing"]),
    (["{two}", "{vol}"], ["1 channel", "names 2"]),
    (["{folder}", "{coarse}"], ["2x1x1", "1x1x1", "--ignore-spacing"]),
    (["{folder}", "{vol}", "--label", "nosuch"], ["--label", "nosuch", "fibre"]),
    (["{folder}", "{vol}", "--amp"], ["--amp"]),
    (["{folder}", "{vol}", "--patch", "32"], ["--patch", "16x16x16"]),
    (["{folder}", "{vol}", "--batch-size", "2"], ["--batch-size", "one tile"]),
    (["{folder}", "{vol}", "--blend", "hann"], ["--blend", "nnunet"]),
    (["{folder}", "{vol}", "--channel", "1"], ["--channel", "--label"]),
    (["{folder}", "{vol}", "--folds", "zero"], ["--folds", "zero"]),
    (["{folder}", "{vol}", "--threshold", "1.5"], ["--threshold", "1.5"]),
    (["{folder}", "{vol}", "--label", "argmax", "--threshold", "0.5"], ["--threshold", "argmax"]),
    (["{run}", "{vol}", "--stitch", "--folds", "0"], ["--folds", "nnU-Net"]),
    (["{run}", "{vol}", "--stitch", "--label", "fibre"], ["--label", "nnU-Net"]),
    (["{run}", "{vol}", "--stitch", "--checkpoint", "best"], ["--checkpoint", "nnU-Net"]),
    (["{run}", "{vol}", "--stitch", "--trust-checkpoint"], ["--trust-checkpoint", "nnU-Net"]),
    (["{run}", "{vol}", "--stitch", "--ignore-spacing"], ["--ignore-spacing", "nnU-Net"]),
    (["{run}", "{vol}", "--stitch", "--blend", "nnunet"], ["--blend", "nnU-Net"]),
    (["{folder}", "{vol}", "--mask", "{vol}"], ["--mask", "--roi"]),
    (["{folder}", "{vol}", "--tta-rotate", "15"], ["--tta-rotate", "--tta"]),
    (["{folder}", "{vol}", "--roi", "0:50,:,:"], ["--roi", "50"]),
]


@pytest.mark.parametrize("args,needles", BAD, ids=[" ".join(a[2:]) or a[0].strip("{}") for a, _ in BAD])
def test_bad_input_is_one_error_line_and_writes_nothing(bad, tmp_path, args, needles):
    args = [a.format(**{k: str(v) for k, v in bad.items()}) for a in args]
    before = {k: tree(v) for k, v in bad.items()}
    result = cli("predict", *args, "-o", tmp_path / "out.zarr")
    one_error_line(result, *needles)
    assert not (tmp_path / "out.zarr").exists() and list(tmp_path.iterdir()) == []
    assert {k: tree(v) for k, v in bad.items()} == before


def test_settings_file_repeats_the_prediction(bad, tmp_path):
    from volseg.inference.settings import PredictSettings, read_config

    ok("predict", bad["folder"], bad["vol"], "-o", tmp_path / "a.zarr", "--label", "argmax", "--folds", "1",
       "--chunks", 20)
    record = tmp_path / "a.zarr" / "volseg-predict.yml"
    values = read_config(record)
    assert values["label"] == "argmax" and values["folds"] == [1] and values["blend"] == "nnunet"
    assert "checkpoint" not in values and "checkpoint" not in PredictSettings().to_dict()
    ok("predict", bad["folder"], bad["vol"], "-o", tmp_path / "b.zarr", "--config", record)
    assert tree(tmp_path / "a.zarr" / "0") == tree(tmp_path / "b.zarr" / "0")


def test_crop_smaller_than_the_patch_at_the_volume_faces(bad, tmp_path):
    """A 10x7x12 nonzero box touching the volume's first z face and last x face: nnU-Net pads the
    crop to 16^3 around it, so tiles start below 0 and end past the volume."""
    from volseg.models.nnunet import NnunetModel

    rng = np.random.default_rng(3)
    data = np.zeros((1, 40, 40, 40), np.float32)
    data[0, 0:10, 15:22, 28:40] = rng.normal(size=(10, 7, 12)) * 2
    vol = write(tmp_path / "corner.zarr", data[0])
    ok("predict", bad["folder"], vol, "-o", tmp_path / "p.zarr", "--chunks", 8, "--label", "fibre")
    ok("predict", bad["folder"], vol, "-o", tmp_path / "l.zarr", "--chunks", 8, "--label", "argmax")
    model = NnunetModel(bad["folder"], tta=False)
    probs, labels, _ = reference(model, data, tiles(model, data))
    assert np.abs(read(tmp_path / "p.zarr") - probs[1]).max() < 1e-7
    np.testing.assert_array_equal(read(tmp_path / "l.zarr"), labels)


def test_ignore_spacing_runs_and_a_plain_zarr_warns(bad, tmp_path):
    import zarr

    ok("predict", bad["folder"], bad["coarse"], "-o", tmp_path / "a.zarr", "--ignore-spacing")
    plain = zarr.create_array(str(tmp_path / "plain.zarr"), shape=(40, 40, 40), chunks=(20, 20, 20), dtype="f4")
    plain[:] = read(bad["vol"])
    result = cli("predict", bad["folder"], tmp_path / "plain.zarr", "-o", tmp_path / "b.zarr", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert "records no voxel spacing" in result.stderr
    np.testing.assert_array_equal(read(tmp_path / "a.zarr"), read(tmp_path / "b.zarr"))


def test_roi_equals_the_full_prediction_inside_the_box_and_is_0_outside(bad, tmp_path):
    """--roi on an nnU-Net folder: the whole volume's crop box and grid, only the box's chunks."""
    import zarr

    ok("predict", bad["folder"], bad["vol"], "-o", tmp_path / "full.zarr", "--chunks", 8, "--label", "argmax")
    ok("predict", bad["folder"], bad["vol"], "-o", tmp_path / "roi.zarr", "--chunks", 8, "--label", "argmax",
       "--roi", "3:21,10:29,-15:", "--json", tmp_path / "roi.json")
    full, roi = read(tmp_path / "full.zarr"), read(tmp_path / "roi.zarr")
    box = (slice(3, 21), slice(10, 29), slice(25, 40))
    assert roi.shape == full.shape and full[box].any()
    np.testing.assert_array_equal(roi[box], full[box])
    outside = np.ones(full.shape, bool)
    outside[box] = False
    assert not roi[outside].any()
    summary = json.loads((tmp_path / "roi.json").read_text())
    assert summary["chunks_total"] == summary["chunks_written"] == 3 * 3 * 2  # z 0-2, y 1-3, x 3-4 only
    record = zarr.open_group(str(tmp_path / "roi.zarr"), mode="r").attrs["volseg"]["settings"]
    assert record["roi"] == [[3, 10, 25], [21, 29, 40]]
