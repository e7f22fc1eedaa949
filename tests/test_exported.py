"""Exported models: recognised by suffix, marked with the volseg document, loaded back and called
like the torch model (TorchScript: no onnxruntime needed)."""

import numpy as np
import torch

from volseg.models import build_model
from volseg.models.export import export_model
from volseg.models.exported import export_mark, is_exported, load_exported


def test_torchscript_round_trip(tmp_path):
    torch.manual_seed(0)
    cfg = {"type": "unet", "in_channels": 1, "out_ch": 1, "ch": 4, "depth": 2}
    model = build_model(cfg)
    (tmp_path / "run").mkdir()
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg, "state_dict": model.state_dict()},
               tmp_path / "run" / "model.pt")
    out = tmp_path / "m.ts"
    export_model(tmp_path / "run", out, check=False)
    assert is_exported(out) and not is_exported(tmp_path / "run") and not is_exported(tmp_path / "m.txt")
    assert export_mark(out)["kind"] == "unet"
    (tmp_path / "notes.ts").write_text("not a model")
    assert export_mark(tmp_path / "notes.ts") is None
    x = np.random.default_rng(0).normal(size=(1, 1, 8, 8, 8)).astype(np.float32)
    model.eval()
    with torch.no_grad():  # the runner calls models under inference mode
        got = load_exported(out)(torch.from_numpy(x))
        want = model(torch.from_numpy(x))
    np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=1e-5)
