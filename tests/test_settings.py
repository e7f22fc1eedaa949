"""volseg.inference.settings: predict settings parsed once; --config files; the recorded settings."""

import dataclasses

import pytest
import yaml
from hypothesis import given, settings as hsettings, strategies as st

from volseg.errors import VolsegError
from volseg.inference.settings import (DiffusionSettings, OutputOptions, PredictSettings, from_sources,
                                       predict_options, read_config, settings_text)


def test_defaults_are_the_cli_defaults():
    s = PredictSettings.parse()
    assert s == PredictSettings()
    assert (s.patch, s.overlap, s.batch_size, s.blend, s.chunks, s.tile) == (None, 0.5, None, "gaussian",
                                                                               (128, 128, 128), (1024, 1024))
    assert s.diffusion == DiffusionSettings() and OutputOptions.parse() == OutputOptions()


def test_text_values_are_parsed_as_the_cli_gives_them():
    s = PredictSettings.parse(patch="16x32x32", overlap="0.25", batch_size="2", chunks="64x128x128", tile="8x24",
                              skip_value="0", nan_value="0", diffusion={"samples": "3", "eta": "0.5"})
    assert s.patch == (16, 32, 32) and s.overlap == 0.25 and s.batch_size == 2
    assert s.chunks == (64, 128, 128) and s.tile == (8, 24) and s.skip_value == 0.0 and s.nan_value == 0.0
    assert s.diffusion.samples == 3 and s.diffusion.eta == 0.5
    assert PredictSettings.parse(tile="none").tile is None and PredictSettings.parse(tile=0).tile is None


@pytest.mark.parametrize("options,needle", [
    ({"overlap": 1.0}, "--overlap"), ({"patch": "0"}, "--patch"), ({"batch_size": 0}, "--batch-size"),
    ({"blend": "bilinear"}, "--blend"), ({"chunks": "0"}, "--chunks"), ({"nan_value": "nan"}, "--nan-value"),
    ({"skip_value": "x"}, "--skip-value"), ({"sigma_scale": 0}, "--sigma-scale"), ({"patchsize": 3}, "patchsize"),
    ({"diffusion": {"samples": 0}}, "--samples"), ({"diffusion": {"sampling_steps": 0}}, "--sampling-steps"),
])
def test_bad_values_name_the_option(options, needle):
    with pytest.raises(VolsegError) as err:
        PredictSettings.parse(**options)
    assert needle in str(err.value)


@pytest.mark.parametrize("options,needle", [({"dtype": "int8"}, "--dtype"), ({"threshold": "high"}, "--threshold"),
                                            ({"channel": -1}, "--channel")])
def test_bad_output_options_name_the_option(options, needle):
    with pytest.raises(VolsegError, match=needle):
        OutputOptions.parse(**options)


def test_settings_are_frozen_and_replace_gives_a_copy():
    s = PredictSettings.parse(patch=16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.patch = (8, 8, 8)
    assert s.replace(overlap=0.0).overlap == 0.0 and s.overlap == 0.5


def test_fingerprint_keys_and_order_are_those_of_earlier_outputs():
    s = PredictSettings.parse(patch=16, chunks=32)
    fp = s.fingerprint(model_sha256="abc", volume="/v.zarr", volume_stamp={"entries": 3}, volume_shape=(4, 5, 6),
                       stride=(8, 8, 8), kind="unet")
    assert list(fp) == ["model_sha256", "volume", "volume_stamp", "volume_shape", "patch", "overlap", "stride",
                        "tta", "amp", "skip_value", "chunks", "blend", "pad", "kind"]
    assert fp["blend"] == {"mode": "gaussian", "sigma_scale": 0.125} and fp["patch"] == [16, 16, 16]
    more = s.replace(nan_value=0.0).fingerprint(model_sha256="abc", volume="/v", volume_stamp=None,
                                                volume_shape=(4, 5, 6), stride=(8, 8, 8), kind="unet",
                                                conditions=(("flair", {"entries": 1}),))
    assert list(more)[-3:] == ["nan_value", "condition", "condition_stamps"]
    assert more["condition"] == ["flair"] and more["condition_stamps"] == [{"entries": 1}]


def test_config_file_then_flags_override(tmp_path):
    cfg = tmp_path / "s.yml"
    cfg.write_text("patch: [16, 16, 16]\noverlap: 0.25\nthreshold: 0.5\nsamples: 2\n")
    s, out = from_sources({"overlap": 0.75}, config=cfg)
    assert s.patch == (16, 16, 16) and s.overlap == 0.75 and out.threshold == 0.5 and s.diffusion.samples == 2
    nested = tmp_path / "n.yml"
    nested.write_text("predict:\n  batch-size: 2\n")
    assert from_sources({}, config=nested)[0].batch_size == 2


@pytest.mark.parametrize("text,needle", [
    ("- 1\n- 2\n", "mapping"), ("patch: [16\n", "YAML"), ("patches: 3\n", "unknown predict setting(s) patches"),
])
def test_bad_config_files_name_the_file(tmp_path, text, needle):
    cfg = tmp_path / "bad.yml"
    cfg.write_text(text)
    with pytest.raises(VolsegError) as err:
        read_config(cfg)
    assert str(cfg) in str(err.value) and needle in str(err.value)
    with pytest.raises(VolsegError, match="no such settings file"):
        read_config(tmp_path / "missing.yml")


@hsettings(max_examples=40, deadline=None)
@given(patch=st.tuples(*[st.integers(1, 256)] * 3), overlap=st.floats(0, 0.95), batch=st.integers(1, 64),
       tta=st.booleans(), stitch=st.booleans(), tile=st.one_of(st.none(), st.tuples(st.integers(1, 4096),
                                                                                    st.integers(1, 4096))),
       samples=st.integers(1, 8), threshold=st.one_of(st.none(), st.floats(0.01, 0.99)))
def test_recorded_text_reads_back_to_the_same_settings(patch, overlap, batch, tta, stitch, tile, samples, threshold):
    s = PredictSettings.parse(patch=patch, overlap=overlap, batch_size=batch, tta=tta, stitch=stitch, tile=tile,
                              diffusion={"samples": samples})
    out = OutputOptions.parse(threshold=threshold)
    text = settings_text(s, out, run="runs/unet", volume="scroll.zarr")
    assert isinstance(yaml.safe_load(text), dict)
    again = from_sources(read_config_text(text))
    assert again == (s, out)


def read_config_text(text):
    data = yaml.safe_load(text)
    return {k: v for k, v in data.items()}


def test_predict_options_splits_loose_keywords():
    s, out, ex = predict_options(patch=32, stitch=True, dtype="float16", channel=1, workers=1, part="2/3",
                                 overwrite=True, samples=2)
    assert s.patch == (32, 32, 32) and s.stitch and s.diffusion.samples == 2
    assert (out.dtype, out.channel) == ("float16", 1)
    assert (ex.workers, ex.part, ex.overwrite) == (1, (1, 3), True)


def test_nnunet_settings_parse_and_stay_out_of_volseg_records():
    """The nnU-Net keys (--folds, --checkpoint, --label, --trust-checkpoint, --ignore-spacing)
    parse once, and at their defaults leave to_dict (volseg-predict.yml) and the fingerprint of
    volseg runs exactly as before."""
    from volseg.errors import VolsegError
    from volseg.inference.settings import NNUNET_DEFAULTS, PredictSettings

    s = PredictSettings.parse(folds="0,1,all", checkpoint="BEST", label="fibre", trust_checkpoint=True,
                              spacing="ignore", blend="nnunet")
    assert (s.folds, s.checkpoint, s.label, s.spacing, s.blend) == ((0, 1, "all"), "best", "fibre", "ignore", "nnunet")
    assert s.nnunet_options() == {"--folds": (0, 1, "all"), "--checkpoint": "best", "--label": "fibre",
                                  "--trust-checkpoint": True, "--ignore-spacing": "ignore"}
    assert s.to_dict()["folds"] == [0, 1, "all"]
    plain = PredictSettings.parse(patch=32)
    assert not set(NNUNET_DEFAULTS) & set(plain.to_dict()) and plain.nnunet_options() == {}
    facts = dict(model_sha256="x", volume="v", volume_stamp="s", volume_shape=(8, 8, 8), stride=(16,) * 3, kind="unet")
    assert plain.fingerprint(**facts) == PredictSettings.parse(patch=32, label=None).fingerprint(**facts)
    assert not set(NNUNET_DEFAULTS) & set(plain.fingerprint(**facts))
    for bad, option in (({"folds": "0,x"}, "--folds"), ({"folds": "1,1"}, "--folds"),
                        ({"checkpoint": "last"}, "--checkpoint"), ({"spacing": "resample"}, "--ignore-spacing"),
                        ({"label": " "}, "--label"), ({"blend": "nnU"}, "--blend")):
        with pytest.raises(VolsegError) as info:
            PredictSettings.parse(**bad)
        assert info.value.path == option
