"""VolsegError: one line ``<path>: <message>``, kept across process boundaries (pickle)."""

import pickle

from volseg.errors import VolsegError


def test_one_line_with_the_path_and_pickles():
    err = VolsegError("--patch", "must be positive,\n   got -3")
    assert str(err) == "--patch: must be positive, got -3" and err.path == "--patch"
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is VolsegError and (back.path, back.message) == (err.path, err.message)
    assert str(VolsegError(None, "no path")) == "no path"
