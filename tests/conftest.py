"""Helpers several test modules share: small fake runs and a counter of live pieces.

* ``make_run(path, ...)``: a run directory holding a small, randomly initialised UNet3D.
* ``make_diffusion_run(path, **schedule)``: the same for a tiny diffusion model (4 timesteps).
* ``live_pieces``: counts objects alive at once (the memory probe of the fused/tiled passes).
* ``model_cache`` (autouse): ``VOLSEG_MODEL_CACHE``, where ``--runtime onnx`` keeps its exports.

The run factories are session-scoped fixtures returning plain functions, so module-scoped
fixtures can use them too.
"""

from __future__ import annotations

import threading

import pytest


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """ONNX exports of ``--runtime onnx`` go to one folder per test session, not the user cache."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("model-cache")
        mp.setenv("VOLSEG_MODEL_CACHE", str(folder))
        yield folder


def _save_run(path, cfg, seed):
    import torch

    from volseg.models import build_model

    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "volseg-run", "version": 1, "model_config": cfg,
                "state_dict": build_model(cfg).state_dict()}, path / "model.pt")
    return path


@pytest.fixture(scope="session")
def make_run():
    """``make_run(path, *, out_ch=1, ch=4, depth=2, seed=0, norm_mean=0.0, norm_std=1.0)``."""
    def make(path, *, out_ch=1, ch=4, depth=2, seed=0, norm_mean=0.0, norm_std=1.0):
        cfg = {"type": "unet", "in_channels": 1, "out_ch": out_ch, "ch": ch, "depth": depth,
               "norm_mean": norm_mean, "norm_std": norm_std}
        return _save_run(path, cfg, seed)
    return make


@pytest.fixture(scope="session")
def make_diffusion_run():
    """``make_diffusion_run(path, **schedule)``: timesteps 0/333/666/999, extra schedule keys."""
    def make(path, **schedule):
        cfg = {"type": "diffusion", "in_channels": 2, "out_ch": 1, "ch": 8, "ch_mult": [1, 2],
               "num_res_blocks": 1, "attn": False, "target_mean": 2.0, "target_std": 3.0,
               "schedule": {"timesteps": [0, 333, 666, 999], **schedule}}
        return _save_run(path, cfg, 0)
    return make


class LivePieces:
    """Objects made by :meth:`piece` are counted while alive; ``peak`` is the most at once.

    :meth:`group` is a fake group function for the inference engine: it records the group and
    returns one live piece per wanted chunk; :meth:`final` says a chunk has all its pieces.
    """

    def __init__(self, plan=None):
        self.plan, self.calls, self.live, self.peak = plan, [], 0, 0
        self._lock = threading.Lock()
        counter = self

        class Piece:
            def __init__(self):
                with counter._lock:
                    counter.live += 1
                    counter.peak = max(counter.peak, counter.live)

            def __del__(self):
                with counter._lock:
                    counter.live -= 1

        self.piece = Piece

    def group(self, b, wanted):
        self.calls.append(tuple(b))
        return {"stats": {}, **{tuple(c): self.piece() for c in wanted}}

    def final(self, c, pieces):
        return len(pieces) == len(self.plan.groups_for(c))


@pytest.fixture
def live_pieces():
    """``live_pieces(plan)`` -> a fresh :class:`LivePieces` for ``plan``."""
    return LivePieces
