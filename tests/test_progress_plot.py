"""progress.png: loss and the validation metric of metrics.jsonl rows drawn to a PNG, atomically."""

import pytest

from volseg.training.progress_plot import draw_progress, plot_available


@pytest.mark.skipif(not plot_available(), reason="matplotlib is not installed")
def test_draws_a_png(tmp_path):
    records = [{"step": s, "loss": 1.0 / s} for s in range(1, 6)] + [{"step": 5, "val_dice": 0.7}]
    out = draw_progress(records, tmp_path / "progress.png", metric="val_dice", title="run")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["progress.png"]
