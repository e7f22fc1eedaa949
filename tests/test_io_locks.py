"""The writer lock of an output (OUT.lock, fcntl) and stale temporary folders of dead processes."""

import subprocess
import sys


from volseg.io.locks import lock_path, output_lock, remove_stale_temps


def test_a_second_writer_is_refused_and_stale_temps_go(tmp_path, capsys):
    out = tmp_path / "o.zarr"
    assert lock_path(out) == tmp_path / "o.zarr.lock"
    with output_lock(out):
        code = ("import sys; from volseg.io.locks import output_lock\n"
                "from volseg.errors import VolsegError\n"
                f"try:\n    output_lock({str(out)!r}).__enter__()\nexcept VolsegError as e:\n    print(e)")
        other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert "is writing it" in other.stdout and str(out) in other.stdout
    with output_lock(out):  # free again once released
        pass
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"o.zarr.tmp-{dead.pid}").mkdir()
    (tmp_path / "o.zarr.tmp-1").mkdir()  # pid 1 is alive: kept
    removed = remove_stale_temps(out)
    assert [p.name for p in removed] == [f"o.zarr.tmp-{dead.pid}"] and (tmp_path / "o.zarr.tmp-1").is_dir()
    assert "removed 1 stale temporary folder(s)" in capsys.readouterr().err
