"""RunStage: a new run is built in RUN.new and handed over with its first good checkpoint; a run
that fails before leaves the previous run byte for byte and no work folder."""

from volseg.training.run_stage import RunStage, work_path


def test_hand_over_and_abandon(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(b"old weights")
    (run / "notes.txt").write_text("mine")
    failed = RunStage(run, resume=False)
    failed.start()
    assert failed.dir == work_path(run) == tmp_path / "run.new"
    (failed.dir / "model.pt").write_bytes(b"diverged")
    failed.abandon()
    assert not work_path(run).exists() and (run / "model.pt").read_bytes() == b"old weights"
    good = RunStage(run, resume=False)
    good.start()
    (good.dir / "model.pt").write_bytes(b"new weights")
    assert good.checkpoint_saved({"model": {"type": "unet"}}) is True
    assert good.dir == run and not work_path(run).exists()
    assert (run / "model.pt").read_bytes() == b"new weights" and (run / "config.yml").is_file()
    assert (run / "notes.txt").read_text() == "mine"  # other files are left alone
