"""atomic_dir: built under <name>.tmp-<pid>, renamed into place on success, nothing left on failure."""

import pytest

from volseg.errors import VolsegError
from volseg.io.atomic import atomic_dir, check_output, is_empty_dir


def test_success_replaces_and_failure_leaves_the_old_folder(tmp_path):
    out = tmp_path / "sub" / "out"
    with atomic_dir(out) as tmp:
        assert tmp.name.startswith("out.tmp-") and is_empty_dir(tmp)
        (tmp / "a").write_text("1")
    assert (out / "a").read_text() == "1"
    with pytest.raises(VolsegError, match="out: exists; pass --overwrite to replace it"):
        check_output(out)
    with pytest.raises(RuntimeError), atomic_dir(out, overwrite=True) as tmp:
        (tmp / "b").write_text("half")
        raise RuntimeError("killed half-way")
    assert sorted(p.name for p in out.iterdir()) == ["a"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no temporary sibling left
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b"] and sorted(p.name for p in out.parent.iterdir()) == ["out"]
